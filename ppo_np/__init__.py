"""ppo-np: Proximal Policy Optimization in NumPy and Numba, with every gradient written by hand."""

__version__ = "0.1.0"
__all__ = ["PPO", "PPOConfig", "evaluate"]


def __getattr__(name):
    # The agent pulls in gymnasium and Numba: import it only when asked for, so that `import ppo_np`
    # (and the CLI's parsing of its arguments) stays quick.
    if name == "PPO":
        from ppo_np.ppo import PPO

        return PPO
    if name == "evaluate":
        from ppo_np.evaluation import evaluate

        return evaluate
    if name == "PPOConfig":
        from ppo_np.config import PPOConfig

        return PPOConfig
    raise AttributeError(f"module 'ppo_np' has no attribute {name!r}")
