"""The JAX comparison: a PureJaxRL-style PPO on cartpole-zoo, beside ppo-np's compiled backend, on one core.

PureJaxRL's approach compiles everything with XLA into one program: the environment (CartPole's
equations, written in JAX here), the policy's sampling, GAE and every update's epochs, the whole run one
``lax.scan`` over updates. This script is that approach written for the comparison: cartpole-zoo's
configuration as ``bench_train.py`` gives it (8 envs x 32 steps, one 256-row minibatch, 20 epochs,
gamma 0.98, lambda 0.8, lr 1e-3 and clip 0.2 both annealed linearly, no entropy bonus, c_v 0.5,
global-norm clip 0.5, advantages normalised, 64-64 tanh actor and critic with orthogonal init, Adam
eps 1e-5), 100k steps. Like PureJaxRL it ends an episode's bootstrap at truncation as at termination.

Both sides run in one process pinned to one core (``os.sched_setaffinity``), XLA with one thread, ppo-np
on its numba backend with SciPy's BLAS; per seed, each side's process CPU time of training alone (JAX:
the compiled program's run, its compile time reported apart; ppo-np: ``bench_train.run_ppo_np``'s
learn_cpu_s), and the return: ppo-np's over ``bench_train``'s 20 deterministic evaluation episodes, JAX's
the mean of the training episodes that end in its last ``LAST_UPDATES`` updates. JAX is an optional comparison, never a dependency of ppo-np:

    python -m venv .venv-jax && . .venv-jax/bin/activate
    pip install jax jaxlib && pip install -e '.[fast]'
    python benchmarks/bench_jax.py --seeds 3

Prints one JSON object. Benchmarks are scripts, never tests.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, before XLA sizes its pools
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

from _common import machine_info  # noqa: E402

try:
    import jax
    import jax.numpy as jnp
except ImportError:  # --help still runs; main() says what to install
    jax = jnp = None

from bench_train import COMMON, CONFIGS, ppo_np_config, run_ppo_np  # noqa: E402

ZOO = CONFIGS["cartpole-zoo"]
SPEC = {**ZOO, **COMMON}                      # ZOO with what bench_train gives both sides
OBS_DIM, N_ACTIONS, MAX_EPISODE_STEPS = 4, 2, 500
#: JAX's return is the mean over the episodes that end in the last this many updates (about 60 of 500 steps)
LAST_UPDATES = 25

# --- CartPole-v1, gymnasium 1.x's equations (Euler), batched by vmap --------------------------------

GRAVITY, MASS_CART, MASS_POLE, HALF_LENGTH, FORCE, DT = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS, POLE_MOMENT = MASS_CART + MASS_POLE, MASS_POLE * HALF_LENGTH
X_LIMIT, THETA_LIMIT = 2.4, 12 * 2 * math.pi / 360


def env_reset(key):
    """(state, steps): the state uniform in [-0.05, 0.05]^4."""
    return jax.random.uniform(key, (OBS_DIM,), minval=-0.05, maxval=0.05), 0


def env_step(key, state, steps, action):
    """One step with same-step autoreset: (next state or a reset one, its step count, reward 1, done)."""
    x, x_dot, theta, theta_dot = state
    force = jnp.where(action == 1, FORCE, -FORCE)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    temp = (force + POLE_MOMENT * theta_dot ** 2 * sin) / TOTAL_MASS
    theta_acc = (GRAVITY * sin - cos * temp) / (HALF_LENGTH * (4.0 / 3.0 - MASS_POLE * cos ** 2 / TOTAL_MASS))
    x_acc = temp - POLE_MOMENT * theta_acc * cos / TOTAL_MASS
    state = jnp.stack([x + DT * x_dot, x_dot + DT * x_acc, theta + DT * theta_dot, theta_dot + DT * theta_acc])
    steps = steps + 1
    done = (jnp.abs(state[0]) > X_LIMIT) | (jnp.abs(state[2]) > THETA_LIMIT) | (steps >= MAX_EPISODE_STEPS)
    reset_state, _ = env_reset(key)
    return jnp.where(done, reset_state, state), jnp.where(done, 0, steps), 1.0, done


# --- the networks and the update ----------------------------------------------------------------------

def mlp_init(key, sizes, out_gain):
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        gain = out_gain if i == len(sizes) - 2 else jnp.sqrt(2.0)
        layers.append((jax.nn.initializers.orthogonal(gain)(k, (n_in, n_out)), jnp.zeros(n_out)))
    return layers


def mlp(layers, x):
    for W, b in layers[:-1]:
        x = jnp.tanh(x @ W + b)
    W, b = layers[-1]
    return x @ W + b


def ppo_loss(params, batch, clip_eps):
    obs, actions, logp_old, advantages, returns = batch
    log_pi = jax.nn.log_softmax(mlp(params["actor"], obs))
    logp = jnp.take_along_axis(log_pi, actions[:, None], axis=1)[:, 0]
    ratio = jnp.exp(logp - logp_old)
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * adv).mean()
    values = mlp(params["critic"], obs)[:, 0]
    return policy_loss + SPEC["vf_coef"] * 0.5 * ((values - returns) ** 2).mean()


def adam_step(params, grads, m, v, t, lr, eps=1e-5, beta1=0.9, beta2=0.999):
    m = jax.tree.map(lambda m_, g: beta1 * m_ + (1 - beta1) * g, m, grads)
    v = jax.tree.map(lambda v_, g: beta2 * v_ + (1 - beta2) * g * g, v, grads)
    step = lr * jnp.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    params = jax.tree.map(lambda p, m_, v_: p - step * m_ / (jnp.sqrt(v_) + eps), params, m, v)
    return params, m, v


def make_train(num_updates: int, update_epochs: int):
    """The whole run as one function of a PRNG key: rollout, GAE and ``update_epochs`` epochs per update."""
    N, T = SPEC["num_envs"], SPEC["num_steps"]
    gamma, lam, max_norm = SPEC["gamma"], SPEC["gae_lambda"], SPEC["max_grad_norm"]
    grad_fn = jax.grad(ppo_loss)

    def rollout_step(carry, _):
        params, states, steps, obs, key, ep_return = carry
        key, act_key, env_key = jax.random.split(key, 3)
        logits = mlp(params["actor"], obs)
        actions = jax.random.categorical(act_key, logits)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), actions[:, None], axis=1)[:, 0]
        values = mlp(params["critic"], obs)[:, 0]
        states, steps, rewards, dones = jax.vmap(env_step)(jax.random.split(env_key, N), states, steps, actions)
        ep_return = ep_return + rewards
        ended = jnp.where(dones, ep_return, 0.0)                       # the returns of the episodes that end
        ep_return = jnp.where(dones, 0.0, ep_return)
        return (params, states, steps, states, key, ep_return), (obs, actions, logp, values, rewards, dones, ended)

    def gae(values, rewards, dones, last_value):
        def back(carry, step):
            advantage, next_value = carry
            value, reward, done = step
            delta = reward + gamma * next_value * (1 - done) - value
            advantage = delta + gamma * lam * (1 - done) * advantage
            return (advantage, value), advantage
        _, advantages = jax.lax.scan(back, (jnp.zeros(N), last_value), (values, rewards, dones), reverse=True)
        return advantages

    def update(carry, u):
        params, m, v, t, states, steps, obs, key, ep_return, finished = carry
        frac = 1.0 - u / num_updates
        (params, states, steps, obs, key, ep_return), rollout = jax.lax.scan(
            rollout_step, (params, states, steps, obs, key, ep_return), None, T)
        r_obs, actions, logp, values, rewards, dones, ended = rollout
        last = u >= num_updates - LAST_UPDATES                   # (sum, count) of returns in the last updates
        finished = (finished[0] + jnp.where(last, ended.sum(), 0.0), finished[1] + jnp.where(last, dones.sum(), 0))
        advantages = gae(values, rewards, dones.astype(jnp.float32), mlp(params["critic"], obs)[:, 0])
        batch = (r_obs.reshape(N * T, OBS_DIM), actions.reshape(-1), logp.reshape(-1), advantages.reshape(-1),
                 (advantages + values).reshape(-1))

        def epoch(carry, _):
            params, m, v, t = carry
            grads = grad_fn(params, batch, SPEC["clip_coef"] * frac)
            norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(grads)))
            grads = jax.tree.map(lambda g: g * jnp.minimum(1.0, max_norm / (norm + 1e-6)), grads)
            params, m, v = adam_step(params, grads, m, v, t + 1, SPEC["learning_rate"] * frac)
            return (params, m, v, t + 1), None

        (params, m, v, t), _ = jax.lax.scan(epoch, (params, m, v, t), None, update_epochs)
        return (params, m, v, t, states, steps, obs, key, ep_return, finished), None

    def train(key):
        key, actor_key, critic_key, reset_key = jax.random.split(key, 4)
        sizes = [OBS_DIM, *SPEC["hidden_sizes"]]
        params = {"actor": mlp_init(actor_key, [*sizes, N_ACTIONS], 0.01), "critic": mlp_init(critic_key, [*sizes, 1], 1.0)}
        zeros = jax.tree.map(jnp.zeros_like, params)
        states, steps = jax.vmap(env_reset)(jax.random.split(reset_key, N))
        carry = (params, zeros, zeros, 0, states, steps, states, key, jnp.zeros(N), (0.0, 0))
        (params, *_, finished), _ = jax.lax.scan(update, carry, jnp.arange(num_updates, dtype=jnp.float32))
        return finished

    return train


def timed(fn, *args):
    """(result, wall seconds, process CPU seconds) of fn(*args), its arrays computed."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. K-1 per side")
    args = parser.parse_args()
    if jax is None:
        sys.exit("bench_jax needs JAX beside ppo-np: pip install jax jaxlib")
    batch = SPEC["num_envs"] * SPEC["num_steps"]
    num_updates = -(-SPEC["total_steps"] // batch)
    runs = {"jax": [], "ppo_np": []}
    programs, compile_s = {}, {}
    for name, epochs in (("train", SPEC["update_epochs"]), ("rollout_only", 0)):
        start = time.perf_counter()
        programs[name] = jax.jit(make_train(num_updates, epochs)).lower(jax.random.PRNGKey(0)).compile()
        compile_s[name] = round(time.perf_counter() - start, 3)

    from ppo_np import PPO  # imported after JAX pinned the core: both sides share it
    envs = {"vectorization": "auto", "env_backend": "numba"}
    PPO(SPEC["env_id"], ppo_np_config(ZOO, 0, envs)).learn(batch).close()  # compiled or loaded from the cache
    for seed in range(args.seeds):
        (returns, episodes), wall, cpu = timed(programs["train"], jax.random.PRNGKey(seed))
        _, rollout_wall, _ = timed(programs["rollout_only"], jax.random.PRNGKey(seed))
        runs["jax"].append({"seed": seed, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                            "rollout_s": round(rollout_wall, 3),
                            "mean_return_last_updates": round(float(returns) / max(int(episodes), 1), 1)})
        row, agent = run_ppo_np(ZOO, seed, envs, curve=False)
        runs["ppo_np"].append({**row, "rollout_s": round(agent.phase_times.get("rollout", 0.0), 3)})
    report = machine_info(extra=("jax", "jaxlib"))
    report.update(config="cartpole-zoo", steps=num_updates * batch, compile_s=compile_s, runs=runs)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
