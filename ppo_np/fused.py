r"""The minibatch step of the update loop, fused: ``losses.ppo_loss`` in about thirty calls.

``losses.ppo_loss`` composes the pure functions of ``layers``, ``distributions`` and ``losses``, one
NumPy call per term; it is the specification, and the one the gradient checks differentiate. On a
64-row minibatch of 64-64 networks it makes about a hundred NumPy calls of a few microseconds each,
five times what its matrix products cost. ``FusedLoss`` computes the same loss, gradients and
diagnostics with

* the matrix products through BLAS into buffers allocated once (``np.matmul(..., out=)``):
  a_l = h_{l-1} W_l, dW_l = h_{l-1}^T g_l, dh_{l-1} = g_l W_l^T, and no dx for the observations;
* everything between them in three Numba kernels: ``bias_activation_kernel``
  (h_l = f(a_l + b_l) in place), ``activation_backward_kernel`` (g_l = dh_l * f'(a_l) in place,
  db_l = 1^T g_l), and one head kernel per network that adds the output bias, evaluates
  log pi, H, KL, the ratio, the surrogate and the value loss sample by sample, and writes
  dL/dz (or dL/dmu and dL/dl) and dL/dV with their output biases' gradients;
* the gradients of each network in one flat vector (``actor_flat_grad``, ``critic_flat_grad``)
  whose views are named like the parameters, so clipping is one dot product per network and Adam
  one kernel call (``Adam.step_views``).

The formulas are those of ``losses.py`` and ``distributions.py`` (their docstrings derive them);
statistics are accumulated in float64. ``tests/test_fused.py`` checks every output against
``ppo_loss`` for both distributions, both surrogates, both value losses, every activation, a
temperature tau != 1 and both dtypes.
"""
from __future__ import annotations

import math

import numpy as np

from ppo_np.jit import jit
from ppo_np.layers import TANH_FLOAT32, tanh_rational
from ppo_np.losses import STAT_KEYS, LossCoefs, Minibatch
from ppo_np.mlp import ACTIVATION_CODES, MLP

LOG_2PI = math.log(2.0 * math.pi)
# the order in which the head kernels write their sums into ``stats``
_SUMS = ("objective", "kl", "entropy", "k1", "k3", "clipped", "value_loss")


class _Workspace:
    """One MLP's weights and the buffers of its forward and backward passes, for up to max_rows rows."""

    def __init__(self, mlp: MLP, max_rows: int, flat_grad: np.ndarray):
        L = mlp.n_layers
        self.weights = [mlp.params[f"W{l}"] for l in range(L)]
        self.code = ACTIVATION_CODES[mlp.activation_name]
        self.rational_tanh = mlp.dtype == np.float32
        self.outputs = [np.empty((max_rows, n), mlp.dtype) for n in mlp.sizes[1:]]  # h_1 .. h_{L-1}, a_L
        self.upstream = [np.empty((max_rows, n), mlp.dtype) for n in mlp.sizes[1:-1]]  # dh_1 .. dh_{L-1}
        self.grads = {}
        offset = 0
        for name, p in mlp.params.items():
            self.grads[name] = flat_grad[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        self.dW = [self.grads[f"W{l}"] for l in range(L)]
        self.db = [self.grads[f"b{l}"] for l in range(L)]
        self.biases = [mlp.params[f"b{l}"] for l in range(L)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """h_l = f(h_{l-1} W_l + b_l) for the hidden layers; returns a_L = h_{L-1} W_L *without* b_L."""
        B, h = x.shape[0], x
        for l, W in enumerate(self.weights):
            out = self.outputs[l][:B]
            np.matmul(h, W, out=out)
            if l < len(self.weights) - 1:
                bias_activation_kernel(out, self.biases[l], self.code, self.rational_tanh, TANH_FLOAT32)
            h = out
        return h

    def backward(self, x: np.ndarray, g: np.ndarray) -> None:
        """dW_l, and db_l below the top, from g_L = dL/da_L (db_L is the head kernel's)."""
        B = x.shape[0]
        for l in reversed(range(len(self.weights))):
            below = x if l == 0 else self.outputs[l - 1][:B]
            np.matmul(below.T, g, out=self.dW[l])                       # dW_l = h_{l-1}^T g_l
            if l > 0:
                dh = self.upstream[l - 1][:B]
                np.matmul(g, self.weights[l].T, out=dh)                 # dh_{l-1} = g_l W_l^T
                activation_backward_kernel(dh, below, self.db[l - 1], self.code)
                g = dh


class FusedLoss:
    """``ppo_loss(actor, critic, mb, coefs)`` for one actor-critic pair, in buffers allocated once.

    Args:
        actor: a ``policy.Actor``; critic: a ``policy.Critic`` (their parameters are read at every call).
        max_rows: the largest minibatch it will see.
    Calling it with a ``Minibatch`` of B <= max_rows rows and a ``LossCoefs`` returns
    ``(loss, stats)`` like ``ppo_loss`` (stats keyed by ``STAT_KEYS``) and leaves dL/dtheta in
    ``actor_grads`` and dL/dphi in ``critic_grads`` (dicts of views of ``actor_flat_grad`` and
    ``critic_flat_grad``), valid until the next call. ``normalize_advantages=True`` first replaces
    A by (A - mean(A)) / (std(A) + 1e-8) over the minibatch (``losses.normalize_advantages``).
    Checked against ``ppo_loss`` by ``tests/test_fused.py``.
    """

    def __init__(self, actor, critic, max_rows: int):
        if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self.actor, self.critic, self.max_rows = actor, critic, int(max_rows)
        dtype = actor.dtype
        self.actor_flat_grad = np.zeros(sum(p.size for p in actor.params.values()), dtype)
        self.critic_flat_grad = np.zeros(sum(p.size for p in critic.params.values()), dtype)
        self._actor = _Workspace(actor.mlp, max_rows, self.actor_flat_grad)
        self._critic = _Workspace(critic.mlp, max_rows, self.critic_flat_grad)
        self.actor_grads = dict(self._actor.grads)
        if not actor.discrete:
            n = actor.params["log_std"].size
            self.actor_grads["log_std"] = self.actor_flat_grad[-n:]
        self.critic_grads = self._critic.grads
        # the same gradients as 1-D views in parameter order, for ``Adam.step_views``
        self.actor_grad_views = tuple(self.actor_grads[k].reshape(-1) for k in actor.params)
        self.critic_grad_views = tuple(self.critic_grads[k].reshape(-1) for k in critic.params)
        self._dout = np.empty((max_rows, actor.act_dim), dtype)
        self._dvalues = np.empty((max_rows, 1), dtype)
        self._stats = np.zeros(len(_SUMS) + 1)
        self._no_old = np.zeros((1, actor.act_dim), dtype)   # stands for a missing dist_old

    def __call__(self, mb: Minibatch, coefs: LossCoefs, normalize_advantages: bool = False) -> tuple[float, dict]:
        if not isinstance(coefs, LossCoefs):
            raise ValueError(f"coefs must be a LossCoefs, got {type(coefs).__name__}")
        B = mb.obs.shape[0]
        if not 1 <= B <= self.max_rows:
            raise ValueError(f"a minibatch of {B} rows; this FusedLoss takes 1 to {self.max_rows}")
        penalty = coefs.surrogate == "penalty"
        has_old = mb.dist_old is not None
        if penalty and not has_old:
            raise ValueError("the 'penalty' surrogate needs mb.dist_old (the old policy's logits or means)")
        dtype = self.actor.dtype
        obs = np.ascontiguousarray(mb.obs, dtype=dtype)
        if obs.shape != (B, self.actor.obs_dim):
            raise ValueError(f"observations must have shape ({B}, {self.actor.obs_dim}), got {obs.shape}")
        vectors = [np.ascontiguousarray(v, dtype=dtype) for v in (mb.logp_old, mb.advantages, mb.returns,
                                                                   mb.values_old)]
        for name, v in zip(("logp_old", "advantages", "returns", "values_old"), vectors):
            if v.shape != (B,):
                raise ValueError(f"{name} must have shape ({B},), got {v.shape}")
        logp_old, adv, returns, values_old = vectors
        dist_old = np.ascontiguousarray(mb.dist_old, dtype=dtype) if has_old else self._no_old

        out = self._actor.forward(obs)                                       # logits or means, before b_L
        values = self._critic.forward(obs)                                   # (B, 1) before b_L
        dout, dvalues, stats = self._dout[:B], self._dvalues[:B], self._stats
        db_actor, db_critic = self._actor.db[-1], self._critic.db[-1]
        if self.actor.discrete:
            actions = np.ascontiguousarray(mb.actions, dtype=np.int64)
            if actions.shape != (B,) or (B and (actions.min() < 0 or actions.max() >= self.actor.act_dim)):
                raise ValueError(f"actions must be {B} integers in [0, {self.actor.act_dim})")
            categorical_head_kernel(out, self._actor.biases[-1], actions, logp_old, adv, dist_old, has_old,
                                    coefs.temperature, penalty, coefs.clip_eps, coefs.beta, coefs.ent_coef,
                                    normalize_advantages, dout, db_actor, stats)
        else:
            actions = np.ascontiguousarray(mb.actions, dtype=dtype)
            if actions.shape != out.shape:
                raise ValueError(f"actions must have shape {out.shape}, got {actions.shape}")
            log_std = self.actor.params["log_std"]
            log_std_old = log_std if mb.log_std_old is None else np.ascontiguousarray(mb.log_std_old, dtype=dtype)
            if has_old and mb.log_std_old is None:
                raise ValueError("a Gaussian minibatch needs log_std_old (D,) along with dist_old")
            gaussian_head_kernel(out, self._actor.biases[-1], log_std, actions, logp_old, adv, dist_old,
                                 log_std_old, has_old, coefs.temperature, penalty, coefs.clip_eps, coefs.beta,
                                 coefs.ent_coef, normalize_advantages, dout, db_actor,
                                 self.actor_grads["log_std"], stats)
        vf_clip = -1.0 if coefs.vf_clip is None else coefs.vf_clip
        value_head_kernel(values, self._critic.biases[-1], returns, values_old, coefs.vf_coef, vf_clip, dvalues,
                          db_critic, stats)
        self._actor.backward(obs, dout)
        self._critic.backward(obs, dvalues)

        sums = dict(zip(_SUMS, stats[:len(_SUMS)] / B))
        policy_loss = -sums["objective"] + (coefs.beta * sums["kl"] if penalty else 0.0)
        loss = policy_loss + coefs.vf_coef * sums["value_loss"] - coefs.ent_coef * sums["entropy"]
        result = {"policy_loss": policy_loss, "value_loss": sums["value_loss"], "entropy": sums["entropy"],
                  "approx_kl_k1": sums["k1"], "approx_kl_k3": sums["k3"],
                  "exact_kl": sums["kl"] if has_old else math.nan, "clip_frac": sums["clipped"],
                  "explained_variance": float(stats[len(_SUMS)])}
        return float(loss), {key: float(result[key]) for key in STAT_KEYS}


# --- kernels ---------------------------------------------------------------------------------------

@jit
def bias_activation_kernel(a, b, activation_code, rational_tanh, tanh_coeffs):
    """h = f(a + b) in place, row by row: 0 identity, 1 tanh (``tanh_rational`` if ``rational_tanh``), 2 ReLU.

    The reference is ``layers.linear_forward``'s "+ b" followed by the activation's forward.
    Shapes: a (B, n) C-contiguous, b (n,).
    """
    B, n = a.shape
    for r in range(B):
        for j in range(n):
            v = a[r, j] + b[j]
            if activation_code == 1:
                v = tanh_rational(v, tanh_coeffs) if rational_tanh else np.tanh(v)
            elif activation_code == 2:
                v = v if v > 0 else v * 0       # max(v, 0) that keeps x * 1[x > 0]'s -0.0 and NaN
            a[r, j] = v


@jit
def activation_backward_kernel(dh, h, db, activation_code):
    r"""g = dh * f'(a) in place, with f'(a) read off h = f(a), and db = 1^T g.

    .. math:: \tanh: f' = 1 - h^2,\qquad \mathrm{ReLU}: f' = 1[h > 0],\qquad \mathrm{identity}: f' = 1

    The reference is the activation's backward followed by ``layers.linear_backward``'s bias
    gradient. Shapes: dh, h (B, n), db (n,) (overwritten).
    """
    B, n = dh.shape
    for j in range(n):
        db[j] = 0
    for r in range(B):
        for j in range(n):
            g = dh[r, j]
            if activation_code == 1:
                g = g * (1 - h[r, j] * h[r, j])
            elif activation_code == 2:
                g = g if h[r, j] > 0 else g * 0
            dh[r, j] = g
            db[j] += g


@jit
def _advantage_scale(adv, normalize):
    """(mean, divisor) with A_t = (adv_t - mean) / divisor: (mean, std + 1e-8) as in
    ``losses.normalize_advantages``, or (0, 1)."""
    B = adv.shape[0]
    if not normalize:
        return 0.0, 1.0
    mean = 0.0
    for t in range(B):
        mean += adv[t]
    mean /= B
    var = 0.0
    for t in range(B):
        var += (adv[t] - mean) ** 2
    return mean, math.sqrt(var / B) + 1e-8


@jit
def _surrogate(logp, logp_old, A, B, penalty, clip_eps, stats):
    """Sample t of L^CLIP (or of -r A for the penalty): adds its sums to ``stats``, returns dL/dlogp_t.

    See ``losses.clipped_surrogate`` and ``losses.kl_penalty_surrogate``.
    """
    d = logp - logp_old                                       # log r_t
    r = math.exp(d)
    if penalty:
        stats[0] += r * A
        dlogp = -r * A / B
    else:
        stats[0] += min(r * A, min(max(r, 1.0 - clip_eps), 1.0 + clip_eps) * A)
        flat = (A > 0 and r > 1.0 + clip_eps) or (A < 0 and r < 1.0 - clip_eps)
        dlogp = 0.0 if flat else -r * A / B
    stats[3] -= d                                             # k1: logp_old - logp
    stats[4] += math.expm1(d) - d                             # k3: (r - 1) - log r
    if abs(r - 1.0) > clip_eps:                               # clip_frac
        stats[5] += 1.0
    return dlogp


@jit
def categorical_head_kernel(a_out, b_out, actions, logp_old, adv, logits_old, has_old, tau, penalty, clip_eps,
                            beta, ent_coef, normalize, dz, db_out, stats):
    r"""The actor's side of ``ppo_loss`` for pi = softmax(z / tau), z = a_out + b_out, row by row.

    log pi, H and KL(pi_old || pi) from one log-softmax (``Categorical.policy_terms``), the surrogate,
    then ``Categorical.policy_terms_backward``:

    .. math:: \tau\,dz_j = dlogp\,(1[j=a] - \pi_j) - dH\,\pi_j(\log\pi_j + H) + dkl\,(\pi_j - p^{old}_j)

    with dlogp from the surrogate, dH = -c_e / B and dkl = beta / B (penalty only). Writes z into
    a_out, dL/dz into dz (B, K), db_out = 1^T dz, and the sums of ``_SUMS`` (policy side) into stats.
    """
    B, K = a_out.shape
    adv_mean, adv_div = _advantage_scale(adv, normalize)
    stats[:] = 0.0
    db_out[:] = 0
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    log_pi = np.empty(K)
    log_old = np.empty(K)
    for t in range(B):
        m = -np.inf
        for k in range(K):
            a_out[t, k] += b_out[k]
            m = max(m, a_out[t, k] / tau)
        total = 0.0
        for k in range(K):
            total += math.exp(a_out[t, k] / tau - m)
        lse = m + math.log(total)
        H = 0.0
        for k in range(K):
            log_pi[k] = a_out[t, k] / tau - lse
            H -= math.exp(log_pi[k]) * log_pi[k]
        kl = 0.0
        if has_old:
            m_old = -np.inf
            for k in range(K):
                m_old = max(m_old, logits_old[t, k] / tau)
            total = 0.0
            for k in range(K):
                total += math.exp(logits_old[t, k] / tau - m_old)
            lse_old = m_old + math.log(total)
            for k in range(K):
                log_old[k] = logits_old[t, k] / tau - lse_old
                kl += math.exp(log_old[k]) * (log_old[k] - log_pi[k])
        A = (adv[t] - adv_mean) / adv_div
        dlogp = _surrogate(log_pi[actions[t]], logp_old[t], A, B, penalty, clip_eps, stats)
        stats[1] += kl
        stats[2] += H
        coef = -dlogp - dH * H + dkl
        for k in range(K):
            pi_k = math.exp(log_pi[k])
            g = pi_k * (coef - dH * log_pi[k])
            if k == actions[t]:
                g += dlogp
            if penalty:
                g -= dkl * math.exp(log_old[k])
            dz[t, k] = g / tau
            db_out[k] += dz[t, k]


@jit
def gaussian_head_kernel(a_out, b_out, log_std, actions, logp_old, adv, mean_old, log_std_old, has_old, tau, penalty,
                         clip_eps, beta, ent_coef, normalize, dmean, db_out, dlog_std, stats):
    r"""The actor's side of ``ppo_loss`` for N(mu, sigma^2), mu = a_out + b_out, sigma = tau exp(l), row by row.

    ``DiagGaussian.policy_terms`` and ``policy_terms_backward``, w = (a - mu) / sigma:

    .. math:: d\mu = dlogp\,\frac{w}{\sigma} + dkl\,\frac{\mu - \mu^{old}}{\sigma^2},\qquad
              dl = \sum_t \Big[dlogp\,(w^2 - 1) + dH + dkl\,\Big(1 - \frac{\sigma_{old}^2 +
              (\mu^{old} - \mu)^2}{\sigma^2}\Big)\Big]

    Writes mu into a_out, dL/dmu into dmean (B, D), db_out = 1^T dmean, dL/dl into dlog_std (D,),
    and the sums of ``_SUMS`` (policy side) into stats.
    """
    B, D = a_out.shape
    adv_mean, adv_div = _advantage_scale(adv, normalize)
    stats[:] = 0.0
    db_out[:] = 0
    dlog_std[:] = 0
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    log_tau = math.log(tau)
    sum_log_sigma = 0.0
    for d in range(D):
        sum_log_sigma += log_std[d] + log_tau
    H = sum_log_sigma + 0.5 * D * (1.0 + LOG_2PI)
    for t in range(B):
        sq = 0.0
        kl = 0.0
        for d in range(D):
            a_out[t, d] += b_out[d]
            sigma = math.exp(log_std[d] + log_tau)
            w = (actions[t, d] - a_out[t, d]) / sigma
            sq += w * w
            if has_old:
                diff = (a_out[t, d] - mean_old[t, d]) / sigma
                kl += log_std[d] - log_std_old[d] + 0.5 * (math.exp(2.0 * (log_std_old[d] - log_std[d])) + diff * diff) - 0.5
        logp = -0.5 * sq - sum_log_sigma - 0.5 * D * LOG_2PI
        A = (adv[t] - adv_mean) / adv_div
        dlogp = _surrogate(logp, logp_old[t], A, B, penalty, clip_eps, stats)
        stats[1] += kl
        stats[2] += H
        for d in range(D):
            sigma = math.exp(log_std[d] + log_tau)
            w = (actions[t, d] - a_out[t, d]) / sigma
            g = dlogp * w / sigma
            dl = dlogp * (w * w - 1.0) + dH
            if penalty:
                diff = a_out[t, d] - mean_old[t, d]
                g += dkl * diff / (sigma * sigma)
                dl += dkl * (1.0 - math.exp(2.0 * (log_std_old[d] - log_std[d])) - diff * diff / (sigma * sigma))
            dmean[t, d] = g
            db_out[d] += g
            dlog_std[d] += dl


@jit
def value_head_kernel(a_out, b_out, returns, values_old, vf_coef, vf_clip, dvalues, db_out, stats):
    r"""The critic's side of ``ppo_loss``: V = a_out + b_out, L^V (clipped if vf_clip > 0), c_v dL^V/dV.

    ``losses.value_loss`` / ``losses.clipped_value_loss``:

    .. math:: \frac{\partial L^V}{\partial V_t} = \frac{V_t - R_t}{B}\;
              1[|V_t - V^{old}_t| \le \epsilon_v \vee (V_t - R_t)^2 \ge (V^{clip}_t - R_t)^2]

    Also ``losses.explained_variance`` of (V, R) (NaN when Var[R] is zero up to rounding). Writes V
    into a_out (B, 1), dvalues (B, 1), db_out (1,), stats[6] = sum of the value loss terms and
    stats[7] = the explained variance.
    """
    B = a_out.shape[0]
    loss = 0.0
    db = 0.0
    mean_r = 0.0
    mean_e = 0.0
    for t in range(B):
        v = a_out[t, 0] + b_out[0]
        a_out[t, 0] = v
        err = v - returns[t]
        use_unclipped = True
        err_clipped = err
        if vf_clip > 0:
            delta = v - values_old[t]
            err_clipped = values_old[t] + min(max(delta, -vf_clip), vf_clip) - returns[t]
            use_unclipped = abs(delta) <= vf_clip or err * err >= err_clipped * err_clipped
        loss += 0.5 * (err * err if use_unclipped else err_clipped * err_clipped)
        dvalues[t, 0] = vf_coef * err / B if use_unclipped else 0.0
        db += dvalues[t, 0]
        mean_r += np.float64(returns[t])
        mean_e += np.float64(returns[t]) - np.float64(v)
    db_out[0] = db
    stats[6] = loss
    mean_r /= B
    mean_e /= B
    var_r = 0.0
    var_e = 0.0
    sq_r = 0.0
    for t in range(B):
        r = np.float64(returns[t])
        var_r += (r - mean_r) ** 2
        var_e += (r - np.float64(a_out[t, 0]) - mean_e) ** 2
        sq_r += r * r
    stats[7] = np.nan if var_r <= 1e-24 * sq_r else 1.0 - var_e / var_r
