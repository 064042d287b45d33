"""ppo-np: Proximal Policy Optimization in NumPy and Numba, with every gradient written by hand."""

__version__ = "0.1.0"
__all__ = ["PPO", "PPOConfig", "evaluate"]


def __getattr__(name):
    # The agent pulls in gymnasium and Numba; import it only when asked for, so that the math
    # modules (and `ppo-np gradcheck`) load without them.
    if name in ("PPO", "evaluate"):
        from ppo_np import ppo

        return getattr(ppo, name)
    if name == "PPOConfig":
        from ppo_np.config import PPOConfig

        return PPOConfig
    raise AttributeError(f"module 'ppo_np' has no attribute {name!r}")
