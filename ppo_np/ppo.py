r"""The PPO agent: collect a rollout, estimate advantages, then K epochs of shuffled minibatch updates.

One iteration ("update") in paper order (Schulman et al. 2017, Algorithm 1):

1. run pi_old = pi_theta for T steps in each of N environments (``rollout.Collector``), storing
   log pi_old(a_t|s_t) of the tempered policy that acted and the old distribution parameters;
2. advantages A_t by GAE(gamma, lambda) and value targets (TD(lambda) returns A_t + V(s_t), or
   rewards-to-go), by the Numba kernels in ``advantages.py``;
3. for each of K epochs, a fresh seeded permutation of the valid samples, cut into minibatches (a
   single minibatch that holds them all is not shuffled: that would only reorder its sums); per
   minibatch: L = L_pi + c_v L_V - c_e H and its gradient (``losses.ppo_loss``, computed by its fused
   twin ``fused.FusedLoss``), one global-norm clip (as the scale of the Adam passes), one Adam step
   for the actor and one for the critic; stop the epochs early when approx KL > target_kl.
   With ``algo="trpo"`` step 3 is instead one KL-constrained natural-gradient step of the actor on the
   whole batch (``trpo.trpo_step``: Fisher-vector products, conjugate gradient, line search), then the
   same epochs of shuffled minibatches for the critic alone, with Adam on the value loss (the actor's
   Adam state is unused and stays as it is);
4. controllers: PPO-penalty's beta from the exact mean KL(pi_old || pi_new) over the whole batch,
   measured between action distributions after the update; the auto entropy coefficient steps
   once per minibatch.

``learn(total_steps)`` trains until ``total_steps`` environment steps have been taken in total, so a
resumed agent finishes the same run. Every schedule of one iteration (temperature, learning rate,
clip range, entropy coefficient) reads the same progress p = min(1, steps taken before its rollout /
H), so the first update runs at the schedules' start values and the last one still learns. H, the
schedules' horizon, is the total of the first ``learn`` call and is saved with the agent: resuming never
moves a schedule, and a run extended past H continues at the schedules' final values, unless
``learn(..., reschedule=True)`` stretches them over the new total (H = the new total).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from ppo_np import agent_state, checkpoint, fused, gradients, rundir, trpo
from ppo_np.advantages import gae, rewards_to_go
from ppo_np.config import RESUMABLE_FIELDS, PPOConfig
from ppo_np.envs import EnvSource
from ppo_np.fused import FusedLoss
from ppo_np.fused_update import FusedUpdate
from ppo_np.heads import head_for
from ppo_np.jit import cached_since_edited
from ppo_np.losses import LossCoefs, Minibatch, explained_variance
from ppo_np.minibatches import MinibatchGatherer, epoch_minibatches
from ppo_np.normalize import ObsNormalizer, RewardScaler
from ppo_np.observations import flat_dim, flatten_observations
from ppo_np.optim import Adam, clip_grad_norm, clip_scales, squared_norm
from ppo_np.policy import Actor, Critic
from ppo_np.ratios import importance_ratios
from ppo_np.rollout import Collector, CompiledCollector, RolloutBuffer
from ppo_np.rundir import CHECKPOINT_NAME
from ppo_np.schedules import AdaptiveBeta, EntropyCoefficient, schedule
from ppo_np.surrogate import normalize_advantages
from ppo_np.timing import PhaseTimer

# the stream of the agent's seed that predict's generator draws from (training's come from the seed itself)
PREDICT_STREAM = 1
# TRPO's columns of the metrics, for an update that took no TRPO step
NO_TRPO_STEP = {"max_kl": math.nan, "step_size": math.nan, "line_search_backtracks": math.nan, "cg_residual": math.nan}


def _annealed(start: float, final: Optional[float], progress: float) -> float:
    """``start`` annealed linearly to ``final`` at ``progress`` in [0, 1]; ``start`` throughout when final is None."""
    return start if final is None else schedule("linear", start, final, progress)


class NonFiniteError(FloatingPointError):
    """A NaN or inf reached the update; raised before any weight is touched."""


class PPO:
    """Proximal Policy Optimization on gymnasium environments.

    Args:
        env: a registered gymnasium id (or ``"module:EnvId"``), a zero-argument factory, a
            ``gymnasium.Env`` or a ``gymnasium.vector.VectorEnv`` (``envs.EnvSource``); observations of
            any space ``observations.py`` flattens, actions of any space a policy head serves
            (``heads.HEADS``: Discrete, a 1-D Box, MultiBinary, MultiDiscrete).
        config: hyperparameters; ``None`` takes ``PPOConfig.for_env(env)``, the preset of its id or the
            generic defaults.
        run_dir: where ``config.json``, ``metrics.csv`` and ``checkpoint.npz`` go; ``None`` writes nothing.
            A directory that already holds a run is refused unless ``overwrite`` (``PPO.load(path,
            run_dir=...)`` resumes one); so are "" and the current directory. ``learn`` holds the
            directory's lock (``rundir.RunLock``): a second writer is refused, naming the holder.
        env_kwargs: keyword arguments of the environment, with an id.
        wrappers: callables ``env -> env`` applied in order to every environment.
    """

    def __init__(self, env, config: Optional[PPOConfig] = None, run_dir: str | os.PathLike | None = None, *,
                 env_kwargs: Optional[dict] = None, wrappers: Sequence[Callable] = (), overwrite: bool = False):
        self.env_source = EnvSource.of(env, env_kwargs, wrappers)  # validates the env and its spaces, once
        self.env_id = self.env_source.name
        self.envs = None
        self.head = head_for(self.env_source.action_space)
        self.config = config if config is not None else PPOConfig.for_env(self.env_source)
        cfg = self.config
        self.obs_dim = flat_dim(self.env_source.observation_space)

        rng = np.random.default_rng(cfg.seed)
        self.actor = Actor(self.obs_dim, self.head, cfg.hidden_sizes, cfg.activation,
                           rng=rng, dtype=cfg.dtype, log_std_init=cfg.log_std_init)
        self.critic = Critic(self.obs_dim, cfg.hidden_sizes, cfg.activation, rng=rng, dtype=cfg.dtype)
        self.actor_opt = Adam(self.actor.params, lr=cfg.learning_rate, eps=cfg.adam_eps)
        self.critic_opt = Adam(self.critic.params, lr=cfg.learning_rate, eps=cfg.adam_eps)
        self.action_rng = np.random.default_rng(rng.integers(2**63))  # training's actions, and only those
        # predict's stochastic actions: a generator of their own, so that predicting never moves training
        self.predict_rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, PREDICT_STREAM]))
        self.obs_norm = ObsNormalizer((self.obs_dim,), cfg.obs_clip, cfg.normalize_obs)
        self.reward_scaler = RewardScaler(cfg.num_envs, cfg.gamma, cfg.reward_clip, cfg.normalize_reward)
        kl_max, kl_min = cfg.kl_bounds
        self.beta = AdaptiveBeta(cfg.beta_init, kl_min, kl_max, cfg.beta_factor)
        self.ent_coef = EntropyCoefficient(cfg.ent_schedule, cfg.ent_coef, cfg.ent_coef_final,
                                           self._target_entropy(), cfg.ent_coef_lr)
        self.global_step = 0
        self.update_count = 0
        self.total_steps = 0
        self.schedule_horizon = 0  # H of the schedules: the first learn's total, or a rescheduled one
        self.config_changes: list[dict] = []  # {"update", "field", "old", "new"} of every change_config
        self.recent_returns: list[float] = []
        # wall seconds per phase of learn(), accumulated: env_step, inference, storage (the rollout's
        # Collector), or rollout (the CompiledCollector's, all three in one call); advantages; minibatch_fwd_bwd (gather + loss + gradients), optimizer (clip + Adam);
        # policy_step (TRPO's actor step)
        self.phase_times: dict[str, float] = {}
        self.timer = PhaseTimer(self.phase_times)
        self._fused_loss: Optional[FusedLoss] = None  # the minibatch step's buffers, made at the first update
        self._fused_update: Optional[FusedUpdate] = None  # the compiled update loop's, likewise
        self._gradient_monitor: Optional[gradients.GradientMonitor] = None  # with log_gradients, made beside them
        self._tensorboard: Optional[rundir.TensorBoardLog] = None  # with tensorboard, open during learn
        self.run_dir = rundir.check_new_run_dir(run_dir, overwrite) if run_dir is not None else None
        self._run_lock: Optional[rundir.RunLock] = None
        self._check_tensorboard(cfg)
        self.env_source.check_backend(cfg.env_backend)

    def _check_tensorboard(self, config: PPOConfig) -> None:
        """TensorBoard events are written by tensorboardX: refused at once when it is missing (``learn``
        refuses them without a run directory)."""
        if config.tensorboard and self.run_dir is not None:
            rundir.tensorboard_writer_class()

    def _target_entropy(self) -> float:
        cfg = self.config
        if cfg.target_entropy is not None:
            return cfg.target_entropy
        return self.head.target_entropy()

    # --- acting ---------------------------------------------------------------------------------

    def predict(self, obs, deterministic: bool = True, raw: bool = False) -> np.ndarray:
        """Actions for one raw observation of the environment's observation space, or for a batch of them.

        One observation has the space's own form (a Box's shape, an integer for Discrete, a dict for a
        Dict); a batch adds a leading axis N to every part, and gets N actions back. Observation
        statistics are used frozen. The actions are the ones the environment takes (a Box's clipped to
        its bounds); ``raw`` gives the policy's own samples (a Gaussian's unclipped). Stochastic actions
        come from the agent's prediction generator (``predict_rng``), never training's: predicting
        changes no trained weight. A ValueError for observations of the wrong form, or holding NaN or inf.
        """
        batch, single = flatten_observations(self.env_source.observation_space, obs)
        actions = self.act(batch, deterministic, self.predict_rng)
        if not raw:
            actions = self.head.env_actions(actions)
        return actions[0] if single else actions

    def act(self, flat_obs: np.ndarray, deterministic: bool, rng: np.random.Generator) -> np.ndarray:
        """Actions (as the head stores them) for a batch of flattened raw observations (N, obs_dim)."""
        if flat_obs.ndim != 2 or flat_obs.shape[1] != self.obs_dim:
            raise ValueError(f"expected flattened observations of shape (N, {self.obs_dim}), got {flat_obs.shape}")
        if not np.all(np.isfinite(flat_obs)):
            rows = np.flatnonzero(~np.isfinite(flat_obs).all(axis=1))
            raise ValueError(f"observations must be finite; row(s) {rows[:5].tolist()} hold NaN or inf")
        batch = self.obs_norm(flat_obs, update=False)
        return self.actor.act(batch, rng, temperature=self._temperature(self._progress()),
                              deterministic=deterministic)[0]

    def _progress(self) -> float:
        return self._progress_at(self.global_step)

    def _progress_at(self, step: int) -> float:
        """The schedules' progress at ``step``: min(1, step / H), 0 before the first ``learn``."""
        return min(1.0, step / self.schedule_horizon) if self.schedule_horizon else 0.0

    def _temperature(self, progress: float) -> float:
        return _annealed(self.config.temperature, self.config.temperature_final, progress)

    def _trpo_radius(self, progress: float) -> float:
        """TRPO's delta at ``progress``: ``trpo_max_kl``, annealed to ``trpo_max_kl_final`` when it is set."""
        return _annealed(self.config.trpo_max_kl, self.config.trpo_max_kl_final, progress)

    # --- training -------------------------------------------------------------------------------

    def learn(self, total_steps: int, callback: Optional[Callable[["PPO", dict], Optional[bool]]] = None,
              progress_bar: bool = False, reschedule: bool = False) -> "PPO":
        """Train until ``total_steps`` environment steps in total (counting those of earlier calls).

        ``callback(agent, metrics)`` runs after every update with that update's metrics row; returning
        False stops training. With a run directory, a checkpoint is written every
        ``checkpoint_every`` updates, at the end, and when anything (Ctrl-C, an environment's error)
        stops training, except a ``NonFiniteError``: then the last good checkpoint is kept as it is.
        The schedules run over the horizon of the first call (module docstring); ``reschedule`` sets it
        to ``total_steps``, which moves every schedule to its value at global_step / total_steps.
        """
        if not (isinstance(total_steps, (int, np.integer)) and total_steps >= 1):
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        if total_steps <= self.global_step:
            warnings.warn(f"learn({total_steps}) trains nothing: the agent has taken {self.global_step} steps "
                          f"already, and total_steps counts every step, those of earlier calls included; "
                          f"to train N more, call learn(agent.global_step + N)", stacklevel=2)
            return self
        if self.config.tensorboard and self.run_dir is None:
            raise ValueError("tensorboard=True writes into the run directory, and this agent has none: give it a "
                             "run_dir, or change_config(tensorboard=False)")
        locked_here = self.hold_run_dir()  # before the first file is touched: one writer per run directory
        try:
            return self._learn(int(total_steps), callback, progress_bar, reschedule)
        finally:
            if locked_here:
                self.release_run_dir()

    def _learn(self, total_steps: int, callback, progress_bar: bool, reschedule: bool) -> "PPO":
        cfg = self.config
        self.total_steps = total_steps
        if reschedule or not self.schedule_horizon:
            self.schedule_horizon = total_steps
        if self.envs is None:
            self.envs = self.env_source.make_vector(cfg.num_envs, cfg.vectorization, backend=cfg.env_backend)
            # a fresh episode seed per (seed, update): a resumed run restarts its episodes reproducibly
            env_seed = int(np.random.SeedSequence([cfg.seed, self.update_count]).generate_state(1)[0])
            collector = CompiledCollector if cfg.env_backend == "numba" else Collector  # the same numbers either way
            self.collector = collector(self.envs, env_seed, self.obs_norm, self.reward_scaler, self.phase_times)
        buf = RolloutBuffer.allocate(cfg.num_steps, cfg.num_envs, self.obs_dim, self.head, self.actor.dtype)
        self._prepare_run_dir()
        if progress_bar and not cached_since_edited(fused):
            print("ppo-np: compiling the numba kernels, once: the first run after an install takes longer before its "
                  "first update", file=sys.stderr)
        bar = None  # made after the first update, which may compile kernels: its ETA is that of the updates to come
        start, start_step = time.perf_counter(), self.global_step
        # One BLAS thread: at these matrix sizes threads cost more than they give (on busy cores many
        # times more), and a fixed summation order keeps runs bit-reproducible. The limit reaches the
        # libraries loaded now: SciPy's BLAS, which FusedLoss's compiled passes call, is loaded first.
        fused.numba_can_call_blas()
        blas = threadpool_limits(limits=1, user_api="blas")
        try:
            if self.run_dir is not None and cfg.tensorboard:  # in the try: closed by its finally
                self._tensorboard = rundir.TensorBoardLog(self.run_dir, self.global_step, self.update_count,
                                                          self._gradient_columns())
            while self.global_step < self.total_steps:
                progress = self._progress()  # one progress for every schedule of this iteration
                temperature = self._temperature(progress)  # the tau that acts is the tau of logp_old
                self.collector.collect(self.actor, self.critic, buf, self.action_rng, temperature)
                episodes = self.collector.drain_episodes()
                snapshot = agent_state.learner_state(self)
                try:
                    row = self._update(buf, episodes, temperature, progress)
                    wall = time.perf_counter() - start
                    row.update(wall_s=wall, steps_per_s=(row["step"] - start_step) / wall)
                    # The row is written before the update counts: a stop in between leaves a row past the
                    # checkpoint, which the next learn drops (rundir.start) as the update is done again.
                    self._log(row)
                except BaseException:  # a NaN at minibatch k, Ctrl-C: undo minibatches 1..k-1, never keep half an update
                    agent_state.load_learner_state(self, snapshot)
                    raise
                # The update counts: one statement, so that a stop (Ctrl-C, ray.cancel) lands before it or after
                self.global_step, self.update_count, self.recent_returns = (
                    row["step"], row["update"], (self.recent_returns + [r for r, _ in episodes])[-100:])
                if progress_bar:
                    if bar is None:
                        bar = _progress_bar(self.total_steps, self.global_step)
                    else:
                        bar.update(cfg.batch_size)
                    bar.set_postfix(update=self.update_count, ret=f"{self.mean_recent_return():.1f}")
                if self.run_dir is not None and self.update_count % cfg.checkpoint_every == 0:
                    self._checkpoint()
                if callback is not None and callback(self, row) is False:
                    break
        except NonFiniteError:
            raise  # keep the last good checkpoint: this state may already hold the bad numbers
        except BaseException:  # Ctrl-C, an environment that raised, anything: save the work, then stop
            if self.run_dir is not None:
                self._checkpoint()
            raise
        finally:
            blas.restore_original_limits()
            if bar is not None:
                bar.close()
            if self._tensorboard is not None:
                self._tensorboard.close()
                self._tensorboard = None
        if self.run_dir is not None:
            self._checkpoint()
        return self

    def change_config(self, **changes) -> None:
        """Change fields that may change during a run (``RESUMABLE_FIELDS``), each recorded with the update
        after which it changed (``config_changes``, saved with the agent and in config.json). Any other
        field is refused: the run would no longer be the one its checkpoint describes. A new ``ent_coef``
        is the start of its schedule from the next update on (refused for the auto-tuned one)."""
        refused = sorted(set(changes) - set(RESUMABLE_FIELDS))
        if refused:
            raise ValueError(f"{', '.join(refused)} cannot change during a run; the fields that can: "
                             f"{', '.join(RESUMABLE_FIELDS)}")
        config = self.config.replace(**changes)  # validated
        self._check_tensorboard(config)
        if "ent_coef" in changes and config.ent_schedule == "auto" and changes["ent_coef"] != self.config.ent_coef:
            raise ValueError("ent_coef is only the starting point of the auto-tuned entropy coefficient, which "
                             "the run has moved on from; it cannot change during a run")
        self.ent_coef.start = config.ent_coef  # a schedule's start: its next value follows (no-op for auto)
        for field, new in changes.items():
            old = getattr(self.config, field)
            if new != old:
                self.config_changes.append({"update": self.update_count, "field": field, "old": old, "new": new})
        self.config = config

    def hold_run_dir(self, lock: Optional[rundir.RunLock] = None) -> bool:
        """Take the run directory's lock (``rundir.RunLock``) if not held; True if taken now. A
        ``rundir.RunDirectoryInUse`` (a ValueError) names the process that holds it. ``learn`` takes it
        for its duration; a caller that takes it first keeps it until ``release_run_dir`` or ``close``.
        ``lock``: the directory's lock, already held by the caller, handed to the agent."""
        if lock is not None:
            if self.run_dir is None or not lock.held or lock.path.parent.resolve() != self.run_dir.resolve():
                raise ValueError(f"the lock handed over is not a held lock of the run directory {self.run_dir}")
            self._run_lock = lock
            return True
        if self.run_dir is None or (self._run_lock is not None and self._run_lock.held):
            return False
        self._run_lock = self._run_lock or rundir.RunLock(self.run_dir)
        self._run_lock.acquire()
        return True

    def release_run_dir(self) -> None:
        if self._run_lock is not None:
            self._run_lock.release()

    def mean_recent_return(self, last: int = 20) -> float:
        """Mean return of the last ``last`` finished training episodes (NaN before the first)."""
        recent = self.recent_returns[-last:]
        return float(np.mean(recent)) if recent else math.nan

    def advantages(self, buf: RolloutBuffer) -> tuple[np.ndarray, np.ndarray]:
        """(A, value targets) of a rollout, (T, N) each: GAE(gamma, lambda), and A + V or rewards-to-go."""
        cfg = self.config
        next_values = buf.next_values()
        adv, returns = gae(buf.rewards, buf.values, next_values, buf.terminated, buf.truncated, cfg.gamma,
                           cfg.gae_lambda)
        if cfg.value_target == "rewards_to_go":
            returns = rewards_to_go(buf.rewards, next_values, buf.terminated, buf.truncated, cfg.gamma)
        return adv, returns

    def _update(self, buf: RolloutBuffer, episodes: list, temperature: float, progress: float) -> dict:
        """Steps 2-3 on a collected rollout, and the metrics row of the update it will be once ``learn``
        counts it (``episodes``: those that ended in the rollout). The caller undoes it if it is stopped."""
        cfg = self.config
        step = self.global_step + cfg.batch_size
        with self.timer("advantages"):
            adv, returns = self.advantages(buf)
        self._check_finite(observations=buf.obs, rewards=buf.rewards, values=buf.values)

        B = cfg.batch_size
        flat = Minibatch(obs=buf.obs.reshape(B, -1), actions=buf.actions.reshape(B, *buf.actions.shape[2:]),
                         logp_old=buf.logp.reshape(B), advantages=adv.reshape(B), returns=returns.reshape(B),
                         values_old=buf.values.reshape(B), dist_old=buf.dist_out.reshape(B, -1))
        valid = np.flatnonzero(buf.valid.reshape(B))
        lr = schedule(cfg.lr_schedule, cfg.learning_rate, 0.0, progress)
        self.actor_opt.lr = self.critic_opt.lr = max(lr, 1e-12)  # Adam needs lr > 0; 1e-12 is "stopped"
        clip_range = schedule(cfg.clip_schedule, cfg.clip_coef, 0.0, progress)

        if cfg.algo == "trpo":
            row, epochs_run = self._trpo_update(flat, valid, temperature, progress)
        else:
            row, epochs_run = self._ppo_update(flat, valid, progress)
        if cfg.algo == "penalty":
            self.beta.update(row["exact_kl"])
        row.update(update=self.update_count + 1, step=step, epochs_run=epochs_run, learning_rate=lr,
                   clip_range=math.nan if cfg.algo == "trpo" else clip_range, ent_coef=self.ent_coef.value,
                   beta=self.beta.beta, temperature=temperature,
                   explained_variance=explained_variance(buf.values[buf.valid], returns[buf.valid]),
                   episode_return=float(np.mean([r for r, _ in episodes])) if episodes else math.nan,
                   episode_length=float(np.mean([n for _, n in episodes])) if episodes else math.nan)
        if self._gradient_monitor is not None:
            row.update(self._gradient_monitor.row())
        return row

    def _ppo_update(self, flat: Minibatch, valid: np.ndarray, progress: float) -> tuple[dict, int]:
        """Step 3 for PPO: K epochs of shuffled minibatches; per minibatch L and its gradient, the global-norm
        clip, one Adam step per network; the epochs stop early once approx KL > target_kl. Then the exact KL
        over the batch. The loop below is the reference; with the loss pass compiled,
        ``fused_update.FusedUpdate`` runs it (and the KL) in one call.

        Returns the metrics averaged over the minibatches with the exact KL, and the epochs run.
        """
        cfg = self.config
        self.ent_coef.at(progress)           # a schedule's value for this update; the tuner moves it in observe
        if valid.size == 0:  # every row a reset step (possible only for T = 1): nothing to learn from
            return {**NO_TRPO_STEP, "exact_kl": math.nan}, 0
        loss_and_grads = self._loss()
        actor_grad, critic_grad = loss_and_grads.actor_flat_grad, loss_and_grads.critic_flat_grad
        if cfg.log_gradients and self._gradient_monitor is None:
            self._gradient_monitor = gradients.GradientMonitor(actor_grad, self.actor.params, critic_grad,
                                                               self.critic.params)
        monitor = self._gradient_monitor
        if monitor is not None:
            monitor.reset()
        coefs = self.loss_coefs(progress)
        # The loop compiled whole where it can be: an entropy coefficient tuned after every minibatch, or a
        # per-minibatch gradient log, needs Python between minibatches (and is the reference it is tested to)
        if loss_and_grads.compiled and monitor is None and self.ent_coef.kind != "auto":
            if self._fused_update is None or self._fused_update.loss is not loss_and_grads:
                self._fused_update = FusedUpdate(loss_and_grads, (self.actor_opt, self.critic_opt))
            with self.timer("minibatch_fwd_bwd"):  # the optimizer's passes too: one compiled call makes both
                sums, n_minibatches, epochs_run, exact_kl, stopped = self._fused_update(
                    flat, valid, coefs,
                    (cfg.minibatch_size, cfg.update_epochs, cfg.seed, self.update_count, cfg.norm_adv, cfg.target_kl),
                    (cfg.max_grad_norm, cfg.clip_grad == "joint"))
            if stopped is not None:
                self._check_finite(loss=np.array(stopped[0]), gradient_norm=np.array(stopped[1]))
            return {**_means(sums, n_minibatches), **NO_TRPO_STEP, "exact_kl": exact_kl}, epochs_run
        sums, n_minibatches, epochs_run = self._python_epochs(flat, valid, coefs, monitor)
        exact_kl = loss_and_grads.mean_kl(flat, valid, coefs.temperature)
        return {**_means(sums, n_minibatches), **NO_TRPO_STEP, "exact_kl": exact_kl}, epochs_run

    def _python_epochs(self, flat: Minibatch, valid: np.ndarray, coefs: LossCoefs, monitor) -> tuple[dict, int, int]:
        """``_ppo_update``'s epochs as Python: the statistics' sums, the minibatches run, the epochs run."""
        cfg = self.config
        loss_and_grads = self._loss()
        actor_grad, critic_grad = loss_and_grads.actor_flat_grad, loss_and_grads.critic_flat_grad
        gather = _minibatch_gatherer(flat, cfg.minibatch_size)
        with self.timer("minibatch_fwd_bwd"):
            # One minibatch holding every valid sample: shuffling it would only reorder the sums of its
            # mean, so it is gathered once, in order, serves every epoch, and no shuffle is drawn.
            whole_batch = gather(valid) if valid.size <= cfg.minibatch_size else None
        epochs = (([valid] for _ in range(cfg.update_epochs)) if whole_batch is not None else
                  epoch_minibatches(valid, cfg.minibatch_size, cfg.seed, self.update_count, cfg.update_epochs))
        sums: dict[str, float] = {}
        n_minibatches = epochs_run = 0
        for minibatches in epochs:
            epochs_run += 1
            for rows in minibatches:
                if coefs.ent_coef != self.ent_coef.value:  # the auto tuner moved it; LossCoefs validates: only then
                    coefs = dataclasses.replace(coefs, ent_coef=self.ent_coef.value)
                with self.timer("minibatch_fwd_bwd"):
                    mb = whole_batch if whole_batch is not None else gather(rows)
                    loss, stats = loss_and_grads(mb, coefs, normalize_advantages=cfg.norm_adv)
                with self.timer("optimizer"):
                    grad_norm, actor_scale, critic_scale = self._clip_scales(actor_grad, critic_grad)
                    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                        self._check_finite(loss=np.array(loss), gradient_norm=np.array(grad_norm))
                    self.actor_opt.step_flat(actor_grad, actor_scale)      # the clip is the scale of each Adam pass
                    self.critic_opt.step_flat(critic_grad, critic_scale)
                if monitor is not None:
                    monitor.observe(actor_scale, critic_scale, stats["outside_share"])
                self.ent_coef.observe(stats["entropy"])
                for key, value in (*stats.items(), ("grad_norm", grad_norm)):
                    sums[key] = sums.get(key, 0.0) + value
                n_minibatches += 1
                if cfg.target_kl is not None and stats["approx_kl_k3"] > cfg.target_kl:
                    return sums, n_minibatches, epochs_run
        return sums, n_minibatches, epochs_run

    def last_update_progress(self) -> float:
        """The schedules' progress, min(1, steps before its rollout / H), at which the last update ran;
        0 before the first."""
        return self._progress_at(max(self.global_step - self.config.batch_size, 0))

    def loss_coefs(self, progress: Optional[float] = None) -> LossCoefs:
        """The coefficients of the loss at ``progress``: the clip range's schedule, beta, the entropy
        coefficient as it stands, c_v, the value clip, tau's schedule. The default is the progress of the
        last update (0 before the first): at the end of a run whose clip range anneals to 0, the range its
        last update used, not the 0 of the end. For TRPO, PPO-penalty's surrogate with beta = 0: the mean
        of r A, whose KL is a constraint and not a term of the loss."""
        cfg = self.config
        progress = self.last_update_progress() if progress is None else progress
        return LossCoefs(surrogate="clip" if cfg.algo == "clip" else "penalty",
                         clip_eps=max(schedule(cfg.clip_schedule, cfg.clip_coef, 0.0, progress), 1e-8),
                         beta=0.0 if cfg.algo == "trpo" else self.beta.beta, vf_coef=cfg.vf_coef,
                         vf_clip=cfg.vf_clip, ent_coef=self.ent_coef.value, temperature=self._temperature(progress))

    # --- the gradient lab -----------------------------------------------------------------------------

    def collect_batch(self, num_steps: Optional[int] = None, num_envs: Optional[int] = None,
                      seed: int = 0) -> Minibatch:
        """A batch of the current policy on the agent's environment, as an update sees it, leaving the agent
        as it is (``gradients.collect_batch``)."""
        return gradients.collect_batch(self, num_steps, num_envs, seed)

    def gradients(self, batch: Minibatch, dtype: str = "float64",
                  coefs: Optional[LossCoefs] = None) -> gradients.LossTerms:
        """The loss's gradient for every named parameter on ``batch``, split into its terms (surrogate inside
        and outside the clip range, KL penalty, entropy, value), the networks cast to ``dtype``
        (``gradients.agent_gradients``)."""
        return gradients.agent_gradients(self, batch, dtype, coefs)

    def _clip_scales(self, actor_grad: np.ndarray, critic_grad: np.ndarray) -> tuple[float, float, float]:
        """The gradient norm and the factors min(1, max_norm / norm) that clip each network's gradient:
        one global norm over both networks (``clip_grad="joint"``) or one per network (``"separate"``,
        reporting the norm of both together): ``optim.clip_scales``."""
        return clip_scales(squared_norm(actor_grad), squared_norm(critic_grad), self.config.max_grad_norm,
                           self.config.clip_grad == "joint")

    def _trpo_update(self, flat: Minibatch, valid: np.ndarray, temperature: float,
                     progress: float) -> tuple[dict, int]:
        """Step 3 for TRPO: one constrained natural-gradient step of the actor on the whole batch
        (``trpo.trpo_step``), then the critic's Adam epochs on the value loss alone, minibatched like PPO.

        Returns the metrics (policy terms at the new parameters, value loss averaged over the critic's
        minibatches) and the epochs run.
        """
        cfg = self.config
        if valid.size == 0:  # every row a reset step (possible only for T = 1): nothing to learn from
            return {**NO_TRPO_STEP, "exact_kl": math.nan}, 0
        with self.timer("policy_step"):
            batch = _minibatch_gatherer(flat, valid.size)(valid)
            if cfg.norm_adv:  # over the whole batch: the policy step uses every sample at once
                batch = batch._replace(advantages=normalize_advantages(batch.advantages))
            self._check_finite(advantages=batch.advantages)
            max_kl = self._trpo_radius(progress)
            step = trpo.trpo_step(self.actor, batch, temperature, max_kl=max_kl, cg_iters=cfg.cg_iters,
                                  cg_tol=cfg.cg_tol, damping=cfg.cg_damping, line_search_steps=cfg.line_search_steps,
                                  line_search_decay=cfg.line_search_decay)
            dist_new = self.actor.forward(batch.obs)[0]
            logp_new = self.head.log_prob(dist_new, batch.actions, temperature)
            _, _, k1, k3 = importance_ratios(logp_new, batch.logp_old, max(cfg.clip_coef, 1e-8))
            row = {"policy_loss": -step.surrogate_new,
                   "entropy": float(np.mean(self.head.entropy(dist_new, temperature))),
                   "approx_kl_k1": k1, "approx_kl_k3": k3, "clip_frac": math.nan, "grad_norm": step.grad_norm,
                   "exact_kl": float(np.mean(self.head.kl(batch.dist_old, dist_new, temperature))),
                   "max_kl": max_kl, "step_size": step.step_norm, "line_search_backtracks": step.backtracks,
                   "cg_residual": step.cg_residual}

        value_losses = []
        gather = _minibatch_gatherer(flat, cfg.minibatch_size)  # its own buffers: `batch` stays intact
        for minibatches in epoch_minibatches(valid, cfg.minibatch_size, cfg.seed, self.update_count,
                                             cfg.update_epochs):
            for rows in minibatches:
                with self.timer("minibatch_fwd_bwd"):
                    loss, grads = trpo.value_gradients(self.critic, gather(rows), cfg.vf_clip)
                with self.timer("optimizer"):
                    grad_norm = clip_grad_norm(grads, max_norm=cfg.max_grad_norm)
                    self._check_finite(value_loss=np.array(loss), gradient_norm=np.array(grad_norm))
                    self.critic_opt.step(grads)
                value_losses.append(loss)
        row["value_loss"] = float(np.mean(value_losses))
        return row, cfg.update_epochs

    def _loss(self) -> FusedLoss:
        """The fused loss and its buffers, made at the first update."""
        if self._fused_loss is None:
            self._fused_loss = FusedLoss(self.actor, self.critic, self.config.minibatch_size)
        return self._fused_loss

    def _check_finite(self, **quantities: np.ndarray) -> None:
        """During an update: NonFiniteError names the update under way and the step its rollout reached."""
        for name, value in quantities.items():
            if not np.all(np.isfinite(value)):
                raise NonFiniteError(f"non-finite {name.replace('_', ' ')} at update {self.update_count + 1}, "
                                     f"step {self.global_step + self.config.batch_size}; weights were not changed "
                                     "by this update")

    # --- run directory, metrics, checkpoints ------------------------------------------------------

    def _prepare_run_dir(self) -> None:
        if self.run_dir is not None:
            rundir.start(self.run_dir, self.env_id, self.env_source.recipe, self.total_steps, self.config,
                         self.update_count, self._gradient_columns(), self.config_changes)

    def _gradient_columns(self) -> Optional[list[str]]:
        """The per-parameter columns of gradients.csv, None without ``log_gradients``."""
        if not self.config.log_gradients:
            return None
        return [f"actor/{k}" for k in self.actor.params] + [f"critic/{k}" for k in self.critic.params]

    def _log(self, row: dict) -> None:
        if self.run_dir is not None:
            rundir.append_metrics(self.run_dir, row)
            if self.config.log_gradients:
                rundir.append_gradients(self.run_dir, row, self._gradient_columns())
        if self._tensorboard is not None:
            self._tensorboard.write(row)

    def _checkpoint(self) -> None:
        """The checkpoint in the run directory, and the TensorBoard events up to it on disk."""
        self.save(self.run_dir / CHECKPOINT_NAME)
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything a resumed run needs, as plain arrays (``agent_state.checkpoint_state``)."""
        return agent_state.checkpoint_state(self)

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint (atomically) that ``PPO.load`` restores exactly."""
        return checkpoint.save(path, self.state_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike, run_dir: str | os.PathLike | None = None, *, env=None,
             env_kwargs: Optional[dict] = None, wrappers: Sequence[Callable] = ()) -> "PPO":
        """An agent restored from a checkpoint: weights, optimisers, normalisers, controllers, counters, RNG.

        The environment is rebuilt from the checkpoint's recipe (an id, its kwargs, wrappers by name);
        an environment that names cannot rebuild (an instance, a factory, a vector env, a lambda wrapper)
        is passed again as ``env`` (with ``env_kwargs`` and ``wrappers``, as to ``PPO``), and must have
        the saved spaces. Every refusal is a ``CheckpointError`` that names the file and what is wrong.
        """
        arrays = checkpoint.load(path)  # damaged, foreign or too new: its errors name the file already
        try:
            env_id = str(checkpoint.take(arrays, "env_id", np.array("")))
            config = PPOConfig.from_json(str(checkpoint.take(arrays, "config", np.array(""))))
            if env is None and (env_kwargs is not None or wrappers):
                raise ValueError("env_kwargs and wrappers describe the env passed as env=...; without it the "
                                 "checkpoint's own recipe rebuilds the environment")
            source = EnvSource.of(env, env_kwargs, wrappers) if env is not None else _saved_source(arrays, env_id)
            agent = cls(source, config, run_dir=run_dir, overwrite=True)  # resuming: the run's own directory
            agent_state.load_checkpoint_state(agent, arrays)  # the spaces too: a different env is refused
        except ValueError as exc:  # CheckpointError included: a well-formed file that does not fit
            raise checkpoint.CheckpointError(f"{path}: {exc}") from None
        return agent

    def close(self) -> None:
        """Close the environments and release the run directory's lock."""
        self.release_run_dir()
        if self.envs is not None:
            self.envs.close()
            self.envs = None


def _saved_source(arrays: dict, env_id: str) -> EnvSource:
    """The environment a checkpoint's recipe rebuilds (a checkpoint of an older version names only its id)."""
    recipe = (str(checkpoint.take(arrays, "env/recipe", np.array(""))) if "env/recipe" in arrays
              else json.dumps({"id": env_id}))
    if not recipe:
        raise ValueError(f"the run was trained on {env_id}, which the checkpoint cannot rebuild from names; pass "
                         "the environment again: PPO.load(path, env=...)")
    try:
        return EnvSource.from_recipe(json.loads(recipe))
    except json.JSONDecodeError as exc:
        raise checkpoint.CheckpointError(f"env/recipe is not valid JSON ({exc})") from None


def _means(sums: dict[str, float], n: int) -> dict[str, float]:
    return {key: value / n for key, value in sums.items()}


def _minibatch_gatherer(flat: Minibatch, max_rows: int):
    """idx -> the Minibatch of rows ``idx`` of every field, in buffers allocated once.

    A returned Minibatch is valid until the next call of the same gatherer.
    """
    gather = MinibatchGatherer(list(flat), max_rows)
    return lambda idx: Minibatch(*gather(idx))


def _progress_bar(total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True)
