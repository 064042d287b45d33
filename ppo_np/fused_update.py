"""One PPO update's epochs x minibatches as one compiled call: ``PPO._ppo_update``'s loop, fused.

``PPO._ppo_update`` runs step 3 of the algorithm as readable Python, one minibatch at a time: gather the
rows, ``fused.FusedLoss`` (L and its gradient), the global-norm clip (``optim.clip_scales``), one Adam
pass per network (``optim.adam_update_kernel``), the running sums of the statistics, and the early stop
once approx KL > target_kl; then the exact KL of the whole batch (``FusedLoss.mean_kl``).
``update_epochs_kernel`` makes the same calls in the same order inside one compiled function
(``FusedUpdate`` lays out its arguments, once per update), so that Python runs once per update rather
than about ten times per minibatch (on cartpole-zoo's 20 epochs of one 256-row minibatch, that Python
was a tenth of the update's time; the batch KL in Python, through NumPy, took 220 us an update).

It serves the common case: the loss pass compiled (``FusedLoss.compiled``: SciPy installed, networks
with hidden layers), the entropy coefficient scheduled rather than tuned after every minibatch, and no
per-minibatch gradient log; anything else takes the Python loop. The Python loop is its reference:
``tests/test_fused_update.py`` holds the two to the same weights, optimiser states and statistics, bit
for bit.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ppo_np.fused import (COMPILED_KL_SUM, COMPILED_LOSS_PASS, INPUT_KERNEL_MAX_ROWS, FusedLoss, kernel_value_clip,
                          kl_coefs, loss_statistics)
from ppo_np.jit import jit
from ppo_np.losses import STAT_KEYS, LossCoefs, Minibatch
from ppo_np.minibatches import epoch_order, gather_minibatch_kernel
from ppo_np.optim import Adam, adam_update_kernel, clip_scales, squared_norm
from ppo_np.params import aligned_empty

#: the update's statistics, in the order the kernel sums them: the loss's, then the gradient norm
UPDATE_STAT_KEYS = (*STAT_KEYS, "grad_norm")


class FusedUpdate:
    """Step 3 of a PPO update compiled whole, for one ``FusedLoss`` (``loss.compiled`` must hold) and the
    two networks' Adams; its minibatch buffers are made at the first call and reused.

    Calling it with (batch, valid, coefs, schedule, clip) runs the epochs on ``batch``'s rows ``valid``:
    schedule = (minibatch_size, epochs, run_seed, update, normalize_advantages, target_kl or None), whose
    epochs are shuffled as ``minibatches.epoch_minibatches`` shuffles them (``epoch_order``; not at all
    when one minibatch holds every row, as in ``PPO._ppo_update``); clip = (max_norm, joint). It returns
    (the sums of ``UPDATE_STAT_KEYS`` over the minibatches run, the minibatches run, the epochs run, the
    exact KL after them as ``FusedLoss.mean_kl`` gives it, and the non-finite (loss, gradient norm) that
    stopped it before its step, or None), and moves the optimisers' step counts by the minibatches run.
    """

    def __init__(self, loss: FusedLoss, optimisers: tuple[Adam, Adam]):
        if not loss.compiled:
            raise ValueError("FusedUpdate runs the compiled loss pass: this FusedLoss runs it as Python")
        self.loss, self.optimisers = loss, optimisers
        self._buffers: Optional[tuple] = None

    def __call__(self, batch: Minibatch, valid: np.ndarray, coefs: LossCoefs, schedule: tuple,
                 clip: tuple) -> tuple[dict, int, int, float, Optional[tuple]]:
        minibatch_size, epochs, run_seed, update, normalize, target_kl = schedule
        loss, actor = self.loss, self.loss.actor
        dtype, n = actor.dtype, valid.size
        cast = lambda x: np.ascontiguousarray(x, dtype=dtype)  # noqa: E731  (as FusedLoss casts each minibatch)
        actions = np.ascontiguousarray(batch.actions, dtype=actor.head.action_dtype(dtype))
        sources = (cast(batch.obs), actions, cast(batch.logp_old), cast(batch.advantages), cast(batch.returns),
                   cast(batch.values_old), cast(batch.dist_old))
        policy_key = actor.head.loss_key(actor.head_params, loss.actor_grads, actions[valid], n)
        if n <= minibatch_size:       # one minibatch of every row: gathered once, in order, no shuffle drawn
            order = np.tile(valid.astype(np.int64), (epochs, 1))
        else:
            order = np.stack([epoch_order(valid, run_seed, update, e) for e in range(epochs)])
        buffers = self._minibatch_buffers(sources)
        pairs = tuple((src, buf) if src.ndim == 2 else (src[:, None], buf[:, None])
                      for src, buf in zip(sources, buffers))
        steps = epochs * -(-n // minibatch_size)
        grads = (loss.actor_flat_grad, loss.critic_flat_grad)
        adam_args = tuple((*opt.flat_runs(grad), opt.bias_corrections(opt.t + 1, steps),
                           (opt.lr, opt.beta1, opt.beta2, opt.eps)) for opt, grad in zip(self.optimisers, grads))
        value_coefs = (coefs.vf_coef, kernel_value_clip(coefs))
        loss_args = (*loss.workspaces, loss.small_inputs, policy_key, loss.kernel_coefs(coefs, normalize), value_coefs,
                     kl_coefs(coefs.temperature))
        sums = np.zeros(len(UPDATE_STAT_KEYS))
        done, epochs_run, last_loss, last_norm, exact_kl = update_epochs_kernel(
            (order, valid.astype(np.int64)), minibatch_size, (pairs, buffers), loss_args, grads, adam_args, clip,
            math.inf if target_kl is None else target_kl, sums)
        for opt in self.optimisers:
            opt.t += done
        stopped = None if math.isfinite(last_loss) and math.isfinite(last_norm) else (last_loss, last_norm)
        return dict(zip(UPDATE_STAT_KEYS, sums)), done, epochs_run, exact_kl, stopped

    def _minibatch_buffers(self, sources: tuple) -> tuple:
        """Buffers of ``loss.max_rows`` rows shaped like ``sources``' rows, made again only if those change."""
        if self._buffers is None or any(b.dtype != s.dtype or b.shape[1:] != s.shape[1:]
                                        for b, s in zip(self._buffers, sources)):
            self._buffers = tuple(aligned_empty((self.loss.max_rows, *s.shape[1:]), s.dtype) for s in sources)
        return self._buffers


@jit
def update_epochs_kernel(rows, minibatch_size, gathering, loss_args, grads, adam_args, clip, target_kl, sums):
    """``PPO._ppo_update``'s loop (``update_epochs``), then ``FusedLoss.mean_kl`` of the batch's rows.

    rows = (order: per epoch, a row of the batch's rows in its shuffled order; valid: the rows in order);
    gathering = (``gather_minibatch_kernel``'s pairs, the buffers: obs, actions, logp_old, advantages,
    returns, values_old, dist_old); loss_args = (actor's, critic's ``_Workspace.args``, their small-input
    flags, the head's loss key, ``KernelCoefs``, (c_v, the value clip or -1), ``fused.kl_coefs``);
    grads = the two flat gradients; adam_args = per network (parameter runs, gradient runs, (m, v) runs,
    (bias1, bias2) per step, (lr, beta1, beta2, eps)); clip = (max_norm, joint). Returns (minibatches run,
    epochs run, the last minibatch's loss and gradient norm: not both finite only when they stopped the
    update, and then the exact KL is NaN).
    """
    order, valid = rows
    done, epochs_run, loss, norm = update_epochs(order, minibatch_size, gathering, loss_args, grads, adam_args, clip,
                                                 target_kl, sums)
    if not (np.isfinite(loss) and np.isfinite(norm)):
        return done, epochs_run, loss, norm, np.nan
    pairs, buffers = gathering
    obs_rows, actions, logp_old, advantages, _, _, dist_old = buffers
    actor, small_input, policy_key, tau_only = loss_args[0], loss_args[2], loss_args[3], loss_args[6]
    n = valid.shape[0]
    total = 0.0
    for start in range(0, n, minibatch_size):
        B = min(minibatch_size, n - start)
        if n > minibatch_size:  # one minibatch of every row is still gathered, in order
            gather_minibatch_kernel(pairs, valid[start:start + B], pairs[0][0].shape[0])
        total += COMPILED_KL_SUM(obs_rows[:B], actor, policy_key,
                                 (actions[:B], logp_old[:B], advantages[:B], dist_old[:B], True), tau_only,
                                 small_input[0] and B <= INPUT_KERNEL_MAX_ROWS)
    return done, epochs_run, loss, norm, total / n


@jit
def update_epochs(order, minibatch_size, gathering, loss_args, grads, adam_args, clip, target_kl, sums):
    """``PPO._ppo_update``'s epochs: for each epoch (a row of ``order``), for each minibatch of
    ``minibatch_size`` of its rows (the last one shorter): gather it, the loss pass compiled,
    ``loss_statistics``, ``clip_scales`` over both flat gradients, one ``adam_update_kernel`` pass per
    network with its clip as the scale, the statistics and the norm into ``sums``; stop after a minibatch
    whose approx KL (k3) exceeds ``target_kl``, or before the step of one whose loss or gradient norm is
    not finite. Arguments as ``update_epochs_kernel``'s; returns (minibatches run, epochs run, the last
    minibatch's loss and gradient norm).
    """
    pairs, buffers = gathering
    obs_rows, actions, logp_old, advantages, returns, values_old, dist_old = buffers
    actor, critic, small_input, policy_key, coefs, value_coefs, _ = loss_args
    vf_coef, vf_clip = value_coefs
    max_norm, joint = clip
    epochs, n = order.shape
    n_sources = pairs[0][0].shape[0]
    done = 0
    loss = norm = 0.0
    for epoch in range(epochs):
        for start in range(0, n, minibatch_size):
            rows = order[epoch, start:min(start + minibatch_size, n)]
            B = rows.shape[0]
            if epoch == 0 or n > minibatch_size:  # one minibatch of every row stays gathered
                gather_minibatch_kernel(pairs, rows, n_sources)
            small_rows = B <= INPUT_KERNEL_MAX_ROWS
            input_kernels = (small_input[0] and small_rows, small_input[1] and small_rows)
            policy, value = COMPILED_LOSS_PASS(obs_rows[:B], actor, critic, policy_key,
                                               (actions[:B], logp_old[:B], advantages[:B], dist_old[:B], True), coefs,
                                               (returns[:B], values_old[:B], vf_coef, vf_clip), input_kernels)
            stats = loss_statistics(policy, value, B, coefs, vf_coef, True)
            loss = stats[0]
            norm, actor_scale, critic_scale = clip_scales(squared_norm(grads[0]), squared_norm(grads[1]), max_norm,
                                                          joint)
            if not (np.isfinite(loss) and np.isfinite(norm)):
                return done, epoch + 1, loss, norm
            adam_step(adam_args[0], actor_scale, done)
            adam_step(adam_args[1], critic_scale, done)
            for k in range(1, len(stats)):
                sums[k - 1] += stats[k]
            sums[len(stats) - 1] += norm
            done += 1
            if stats[5] > target_kl:                    # approx_kl_k3
                return done, epoch + 1, loss, norm
    return done, epochs, loss, norm


@jit
def adam_step(args, scale, k):
    """Step k of an update's Adam passes (``adam_args`` of one network), the gradient scaled by ``scale``."""
    params, grads, moments, (bias1, bias2), (lr, beta1, beta2, eps) = args
    adam_update_kernel(params, grads, moments, (scale, lr, beta1, beta2, eps, bias1[k], bias2[k]))
