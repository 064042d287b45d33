r"""The minibatch step of the update loop, fused: ``losses.ppo_loss`` in about twenty calls.

``losses.ppo_loss`` composes the pure functions of ``layers``, ``distributions`` and ``losses``, one
NumPy call per term; it is the specification, and the one the gradient checks differentiate. On a
64-row minibatch of 64-64 networks it makes about a hundred NumPy calls of a few microseconds each,
several times what its matrix products cost. ``FusedLoss`` computes the same loss, gradients and
diagnostics with

* the hidden layers' matrix products through BLAS into buffers allocated once
  (``np.matmul(..., out=)``): a_l = h_{l-1} W_l, dW_l = h_{l-1}^T g_l, dh_{l-1} = g_l W_l^T, and no
  dx for the observations; a first layer of small fan-in in loops instead (``input_layer_kernel``,
  ``input_backward_kernel``), where a BLAS call costs more than its arithmetic;
* between them, ``bias_activation_kernel`` (h_l = f(a_l + b_l) in place) and
  ``activation_backward_kernel`` (g_l = dh_l * f'(a_l) in place, db_l = 1^T g_l);
* one head kernel per network (``categorical_head_kernel`` or ``gaussian_head_kernel``, and
  ``value_head_kernel``) from z = h W_L: the output bias, log pi, H, KL, the ratio, the surrogate or
  the value loss sample by sample, their gradient dL/dz (and dL/dl), and the output layer's
  backward (``output_backward``: dW_L, db_L and dL/dh of the last hidden layer);
* the gradients of each network in one flat vector (``actor_flat_grad``, ``critic_flat_grad``)
  whose views are named like the parameters, so clipping is one dot product per network and Adam
  one pass (``Adam.step_flat`` over parameters packed by ``params.pack``).

The formulas are those of ``losses.py`` and ``distributions.py`` (their docstrings derive them);
statistics are accumulated in float64. ``ppo-np gradcheck`` (rows fused-*) checks its gradients against
central differences in float64, and ``tests/test_fused.py`` checks every output against
``ppo_loss`` for both distributions, both surrogates, both value losses, every activation, a
temperature tau != 1, both dtypes and both first-layer paths.
"""
from __future__ import annotations

import math

import numpy as np

from ppo_np.jit import jit
from ppo_np.layers import TANH_FLOAT32, tanh_rational
from ppo_np.losses import LossCoefs, Minibatch
from ppo_np.mlp import ACTIVATION_CODES, MLP
from ppo_np.params import aligned_empty, aligned_zeros, num_params, views_of

LOG_2PI = math.log(2.0 * math.pi)
#: a first layer with at most this many inputs runs in ``input_layer_kernel`` / ``input_backward_kernel``
#: (measured at fan-in 4, B = 64, 64 units: ~1 us of arithmetic against ~4 us per BLAS call); wider
#: ones go through BLAS like every other layer
INPUT_KERNEL_MAX_FAN_IN = 16
# what the head kernels write into ``stats``: sums over the minibatch of min(r A, clip(r) A) (or r A),
# KL, H, logp_old - logp, (r - 1) - log r, 1[|r - 1| > eps] and the value loss terms, then the
# explained variance
_SUMS = ("objective", "kl", "entropy", "k1", "k3", "clipped", "value_loss", "explained_variance")


class _Workspace:
    """One MLP's weights and the buffers of its forward and backward passes, for up to max_rows rows.

    The output layer's product z = h W_L is a BLAS call; its bias, its backward and everything between
    are the head kernel's (``output_backward``: an outer product of fan-in 1 or 2 costs NumPy 8 us, the
    loop 2 us). The first layer, when its fan-in is at most
    ``INPUT_KERNEL_MAX_FAN_IN``, runs in ``input_layer_kernel`` / ``input_backward_kernel``; every
    other product is a BLAS call into a fixed buffer.
    """

    def __init__(self, mlp: MLP, max_rows: int, grads: dict):
        L = mlp.n_layers
        self.weights = [mlp.params[f"W{l}"] for l in range(L)]
        self.biases = [mlp.params[f"b{l}"] for l in range(L)]
        self.code = ACTIVATION_CODES[mlp.activation_name]
        self.rational_tanh = mlp.dtype == np.float32
        self.small_input = mlp.sizes[0] <= INPUT_KERNEL_MAX_FAN_IN
        # each on a cache line (``params.aligned_empty``): the kernels' vector loops run along their rows
        self.hidden = [aligned_empty((max_rows, n), mlp.dtype) for n in mlp.sizes[1:-1]]    # h_0 .. h_{L-2}
        self.upstream = [aligned_empty((max_rows, n), mlp.dtype) for n in mlp.sizes[1:-1]]  # dL/dh_0 .. dL/dh_{L-2}
        self.output = aligned_empty((max_rows, mlp.sizes[-1]), mlp.dtype)                 # z = h W_L, then dL/dz
        self._no_hidden = np.empty((max_rows, 0), mlp.dtype)
        self.dW = [grads[f"W{l}"] for l in range(L)]               # where the gradients go
        self.db = [grads[f"b{l}"] for l in range(L)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """h_l = f(h_{l-1} W_l + b_l) for the hidden layers; returns the last one (x without hidden layers)."""
        B, h = x.shape[0], x
        for l, out in enumerate(self.hidden):
            out = out[:B]
            if l == 0 and self.small_input:
                input_layer_kernel(h, self.weights[0], self.biases[0], out, self.code, self.rational_tanh,
                                   TANH_FLOAT32)
            else:
                np.matmul(h, self.weights[l], out=out)
                bias_activation_kernel(out, self.biases[l], self.code, self.rational_tanh, TANH_FLOAT32)
            h = out
        return h

    def output_layer(self, h: np.ndarray) -> tuple:
        """z = h W_L (BLAS, without b_L), and what the head kernel needs besides: (z, h, W_L, b_L, dW_L,
        db_L, dL/dh of the last hidden layer ((B, 0) without hidden layers))."""
        B = h.shape[0]
        z = self.output[:B]
        np.matmul(h, self.weights[-1], out=z)
        dh = self.upstream[-1][:B] if self.upstream else self._no_hidden[:B]
        return z, h, self.weights[-1], self.biases[-1], self.dW[-1], self.db[-1], dh

    def backward(self, x: np.ndarray) -> None:
        """dW_l and db_l of the hidden layers, from the dL/dh of the last one that the head kernel wrote."""
        B = x.shape[0]
        for l in reversed(range(len(self.hidden))):
            dh, h = self.upstream[l][:B], self.hidden[l][:B]
            below = x if l == 0 else self.hidden[l - 1][:B]
            if l == 0 and self.small_input:
                input_backward_kernel(dh, h, below, self.dW[0], self.db[0], self.code)
            else:
                activation_backward_kernel(dh, h, self.db[l], self.code)     # g_l = dh_l * f'(a_l), db_l
                np.matmul(below.T, dh, out=self.dW[l])                       # dW_l = h_{l-1}^T g_l
            if l > 0:
                np.matmul(dh, self.weights[l].T, out=self.upstream[l - 1][:B])   # dh_{l-1} = g_l W_l^T


class FusedLoss:
    """``ppo_loss(actor, critic, mb, coefs)`` for one actor-critic pair, in buffers allocated once.

    Args:
        actor: a ``policy.Actor``; critic: a ``policy.Critic`` (their parameters are read at every call).
        max_rows: the largest minibatch it will see.
    Calling it with a ``Minibatch`` of B <= max_rows rows and a ``LossCoefs`` returns
    ``(loss, stats)`` like ``ppo_loss`` (stats keyed by ``losses.STAT_KEYS``) and leaves dL/dtheta in
    ``actor_grads`` and dL/dphi in ``critic_grads`` (dicts of views of ``actor_flat_grad`` and
    ``critic_flat_grad``), valid until the next call. ``normalize_advantages=True`` first replaces
    A by (A - mean(A)) / (std(A) + 1e-8) over the minibatch (``losses.normalize_advantages``).
    Checked against ``ppo_loss`` by ``tests/test_fused.py``, and against central differences in float64
    by ``tests/test_losses.py::test_ppo_loss_gradients`` (the ``fused`` cases) and ``ppo-np gradcheck``.
    """

    def __init__(self, actor, critic, max_rows: int):
        if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self.actor, self.critic, self.max_rows = actor, critic, int(max_rows)
        dtype = actor.dtype
        self.actor_flat_grad = aligned_zeros(num_params(actor.params), dtype)      # laid out like the packed
        self.critic_flat_grad = aligned_zeros(num_params(critic.params), dtype)    # parameters, aligned alike
        self.actor_grads = views_of(self.actor_flat_grad, actor.params)
        self.critic_grads = views_of(self.critic_flat_grad, critic.params)
        self._actor = _Workspace(actor.mlp, max_rows, self.actor_grads)
        self._critic = _Workspace(critic.mlp, max_rows, self.critic_grads)
        self._stats = np.zeros(len(_SUMS))
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

        stats, a, c = self._stats, self._actor, self._critic
        actor_out = a.output_layer(a.forward(obs))          # (z = h W, h, W, b, dW, db, dh) for the head
        critic_out = c.output_layer(c.forward(obs))
        if self.actor.discrete:
            actions = np.ascontiguousarray(mb.actions, dtype=np.int64)
            if actions.shape != (B,) or not categorical_head_kernel(
                    *actor_out, actions, logp_old, adv, dist_old, has_old, coefs.temperature, penalty, coefs.clip_eps,
                    coefs.beta, coefs.ent_coef, normalize_advantages, stats):
                raise ValueError(f"actions must be {B} integers in [0, {self.actor.act_dim})")
        else:
            actions = np.ascontiguousarray(mb.actions, dtype=dtype)
            if actions.shape != (B, self.actor.act_dim):
                raise ValueError(f"actions must have shape {(B, self.actor.act_dim)}, got {actions.shape}")
            if has_old and mb.log_std_old is None:
                raise ValueError("a Gaussian minibatch needs log_std_old (D,) along with dist_old")
            log_std = self.actor.params["log_std"]
            log_std_old = log_std if mb.log_std_old is None else np.ascontiguousarray(mb.log_std_old, dtype=dtype)
            gaussian_head_kernel(*actor_out, log_std, self.actor_grads["log_std"], actions, logp_old, adv, dist_old,
                                 log_std_old, has_old, coefs.temperature, penalty, coefs.clip_eps, coefs.beta,
                                 coefs.ent_coef, normalize_advantages, stats)
        vf_clip = -1.0 if coefs.vf_clip is None else coefs.vf_clip
        value_head_kernel(*critic_out, returns, values_old, coefs.vf_coef, vf_clip, stats)
        a.backward(obs)
        c.backward(obs)

        *sums, explained_variance = stats.tolist()
        objective, kl, entropy, k1, k3, clipped, value_loss = (x / B for x in sums)      # means over the minibatch
        policy_loss = -objective + (coefs.beta * kl if penalty else 0.0)
        loss = policy_loss + coefs.vf_coef * value_loss - coefs.ent_coef * entropy
        return loss, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                      "approx_kl_k1": k1, "approx_kl_k3": k3, "exact_kl": kl if has_old else math.nan,
                      "clip_frac": clipped, "explained_variance": explained_variance}


# --- kernels ---------------------------------------------------------------------------------------

@jit
def _activate(v, activation_code, rational_tanh, tanh_coeffs):
    """f(v): 0 identity, 1 tanh (``tanh_rational`` when ``rational_tanh``, as ``layers.tanh_forward``), 2 ReLU.

    Every constant is a float32, so f(v) keeps v's precision: Numba types a Python int or float
    beside a float32 as float64, and one such constant makes the whole loop convert both ways
    (``_derivative`` with ``1 - h * h`` took 2.4x as long on a (256, 64) float32 array).
    """
    if activation_code == 1:
        return tanh_rational(v, tanh_coeffs) if rational_tanh else np.tanh(v)
    if activation_code == 2:
        return v if v > 0 else v * np.float32(0)   # max(v, 0) as x * 1[x > 0]: -0.0 and NaN alike
    return v


@jit
def _derivative(h, activation_code):
    """f'(a) read off h = f(a): tanh 1 - h^2, ReLU 1[h > 0], identity 1, in h's precision (see ``_activate``)."""
    one = np.float32(1)
    if activation_code == 1:
        return one - h * h
    if activation_code == 2:
        return one if h > 0 else np.float32(0)
    return one


@jit
def bias_activation_kernel(a, b, activation_code, rational_tanh, tanh_coeffs):
    """h = f(a + b) in place: ``layers.linear_forward``'s "+ b", then the activation's forward.

    Shapes: a (B, n) C-contiguous, b (n,).
    """
    B, n = a.shape
    for r in range(B):
        for j in range(n):
            a[r, j] = _activate(a[r, j] + b[j], activation_code, rational_tanh, tanh_coeffs)


@jit
def input_layer_kernel(x, W, b, h, activation_code, rational_tanh, tanh_coeffs):
    """h = f(x W + b) for a first layer of small fan-in: the product in a loop nest, then
    ``bias_activation_kernel`` (a separate pass: a branch on f inside the product's loop stops LLVM
    from vectorising it, 20 us against 6 us at B = 64, fan-in 4, 64 units).

    Shapes: x (B, n_in), W (n_in, n), b (n,) -> h (B, n).
    """
    _product(x, W, h)
    bias_activation_kernel(h, b, activation_code, rational_tanh, tanh_coeffs)


@jit
def _product(x, M, out):
    """out = x M by rows: out_r = sum_i x_ri M_i, the inner loop along a row of M (LLVM vectorises it)."""
    for r in range(x.shape[0]):
        for j in range(M.shape[1]):
            out[r, j] = 0
        for i in range(x.shape[1]):
            x_ri = x[r, i]
            for j in range(M.shape[1]):
                out[r, j] += x_ri * M[i, j]


@jit
def activation_backward_kernel(dh, h, db, activation_code):
    r"""g = dh * f'(a) in place, and db = 1^T g: the activation's backward, then the bias gradient.

    .. math:: \tanh: f' = 1 - h^2,\qquad \mathrm{ReLU}: f' = 1[h > 0],\qquad \mathrm{identity}: f' = 1

    Shapes: dh, h (B, n), db (n,) (overwritten).
    """
    B, n = dh.shape
    db[:] = 0
    for r in range(B):
        for j in range(n):
            dh[r, j] = dh[r, j] * _derivative(h[r, j], activation_code)
            db[j] += dh[r, j]


@jit
def input_backward_kernel(dh, h, x, dW, db, activation_code):
    """``activation_backward_kernel``, then dW = x^T g in the same pass (the first layer, small fan-in).

    Shapes: dh, h (B, n), x (B, n_in), dW (n_in, n) and db (n,) (overwritten).
    """
    activation_backward_kernel(dh, h, db, activation_code)
    B, n_in = x.shape
    dW[:] = 0
    for r in range(B):
        for i in range(n_in):
            x_ri = x[r, i]
            for j in range(dh.shape[1]):
                dW[i, j] += x_ri * dh[r, j]


@jit
def output_backward(h, W, dz, dW, db, dh):
    """The output layer's backward: dW = h^T dz, db = 1^T dz, and dh = dz W^T when dh has columns.

    With the fan-out K (1 or 2 here) outside and the hidden units inside, and dW and W taken
    transposed so that the inner loops run along contiguous rows: 5-10x faster than K inside.
    Shapes: h (B, n), W (n, K), dz (B, K) -> dW (n, K), db (K,), dh (B, n).
    """
    B, n = h.shape
    K = W.shape[1]
    dW_t = np.zeros((K, n))                                   # dW^T, accumulated in float64
    db[:] = 0
    for t in range(B):
        for k in range(K):
            g = dz[t, k]
            db[k] += g
            for i in range(n):
                dW_t[k, i] += h[t, i] * g
    dW[:] = dW_t.T
    if dh.shape[1] > 0:
        _product(dz, np.ascontiguousarray(W.T), dh)


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
def _log_softmax(u, p):
    """u <- log softmax(u) in place (max-shifted, as ``Categorical.log_softmax``), p <- its exp;
    returns the entropy -sum_k p_k log p_k. One exp per entry."""
    m = -np.inf
    for k in range(u.shape[0]):
        m = max(m, u[k])
    total = 0.0
    for k in range(u.shape[0]):
        p[k] = math.exp(u[k] - m)
        total += p[k]
    log_total = math.log(total)
    entropy = 0.0
    for k in range(u.shape[0]):
        u[k] -= m + log_total
        p[k] /= total
        entropy -= p[k] * u[k]
    return entropy


@jit
def categorical_head_kernel(z, h, W, b, dW, db, dh, actions, logp_old, adv, logits_old, has_old, tau, penalty,
                            clip_eps, beta, ent_coef, normalize, stats):
    r"""The actor's side of ``ppo_loss`` for pi = softmax(z / tau), z = h W + b, from z = h W (B, K).

    Row by row: + b, log pi, H and KL(pi_old || pi) from one log-softmax (``Categorical.policy_terms``),
    the surrogate, then ``Categorical.policy_terms_backward``

    .. math:: \tau\,dz_j = dlogp\,(1[j=a] - \pi_j) - dH\,\pi_j(\log\pi_j + H) + dkl\,(\pi_j - p^{old}_j)

    with dlogp from the surrogate, dH = -c_e / B and dkl = beta / B (penalty only); dz overwrites z.
    Then ``output_backward`` (dW, db, dh). The policy sums of ``_SUMS`` go to stats. Returns False,
    having changed nothing, if an action lies outside [0, K).
    """
    B, K = z.shape
    for t in range(B):
        if actions[t] < 0 or actions[t] >= K:
            return False
    adv_mean, adv_div = _advantage_scale(adv, normalize)
    stats[:] = 0.0
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    log_pi, pi = np.empty(K), np.empty(K)
    log_old, p_old = np.empty(K), np.empty(K)
    for t in range(B):
        for k in range(K):
            log_pi[k] = (z[t, k] + b[k]) / tau                 # u = z / tau
        H = _log_softmax(log_pi, pi)
        kl = 0.0
        if has_old:
            for k in range(K):
                log_old[k] = logits_old[t, k] / tau
            _log_softmax(log_old, p_old)
            for k in range(K):
                kl += p_old[k] * (log_old[k] - log_pi[k])
        A = (adv[t] - adv_mean) / adv_div
        dlogp = _surrogate(log_pi[actions[t]], logp_old[t], A, B, penalty, clip_eps, stats)
        stats[1] += kl
        stats[2] += H
        coef = -dlogp - dH * H + dkl
        for k in range(K):
            g = pi[k] * (coef - dH * log_pi[k])
            if k == actions[t]:
                g += dlogp
            if penalty:
                g -= dkl * p_old[k]
            z[t, k] = g / tau
    output_backward(h, W, z, dW, db, dh)
    return True


@jit
def gaussian_head_kernel(z, h, W, b, dW, db, dh, log_std, dlog_std, actions, logp_old, adv, mean_old, log_std_old,
                         has_old, tau, penalty, clip_eps, beta, ent_coef, normalize, stats):
    r"""The actor's side of ``ppo_loss`` for N(mu, sigma^2), mu = h W + b, sigma = tau exp(l), from z = h W.

    Row by row: + b, then ``DiagGaussian.policy_terms`` and ``policy_terms_backward``, w = (a - mu) / sigma:

    .. math:: d\mu = dlogp\,\frac{w}{\sigma} + dkl\,\frac{\mu - \mu^{old}}{\sigma^2},\qquad
              dl = \sum_t \Big[dlogp\,(w^2 - 1) + dH + dkl\,\Big(1 - \frac{\sigma_{old}^2 +
              (\mu^{old} - \mu)^2}{\sigma^2}\Big)\Big]

    dmu overwrites z; then ``output_backward`` (dW, db, dh). Also writes dlog_std (D,) and the policy sums.
    """
    B, D = z.shape
    adv_mean, adv_div = _advantage_scale(adv, normalize)
    stats[:] = 0.0
    dlog_std[:] = 0
    dH = -ent_coef / B
    dkl = beta / B if penalty else 0.0
    sigma = np.empty(D)
    var_ratio = np.empty(D)                                    # sigma_old^2 / sigma^2
    sum_log_sigma = 0.0
    for d in range(D):
        sigma[d] = tau * math.exp(log_std[d])
        var_ratio[d] = math.exp(2.0 * (log_std_old[d] - log_std[d]))
        sum_log_sigma += log_std[d] + math.log(tau)
    H = sum_log_sigma + 0.5 * D * (1.0 + LOG_2PI)
    mu = np.empty(D)
    for t in range(B):
        sq = 0.0
        kl = 0.0
        for d in range(D):
            mu[d] = z[t, d] + b[d]
            w = (actions[t, d] - mu[d]) / sigma[d]
            sq += w * w
            if has_old:
                diff = (mu[d] - mean_old[t, d]) / sigma[d]
                kl += log_std[d] - log_std_old[d] + 0.5 * (var_ratio[d] + diff * diff) - 0.5
        logp = -0.5 * sq - sum_log_sigma - 0.5 * D * LOG_2PI
        A = (adv[t] - adv_mean) / adv_div
        dlogp = _surrogate(logp, logp_old[t], A, B, penalty, clip_eps, stats)
        stats[1] += kl
        stats[2] += H
        for d in range(D):
            w = (actions[t, d] - mu[d]) / sigma[d]
            dmu = dlogp * w / sigma[d]
            dl = dlogp * (w * w - 1.0) + dH
            if penalty:
                diff = (mu[d] - mean_old[t, d]) / sigma[d]
                dmu += dkl * diff / sigma[d]
                dl += dkl * (1.0 - var_ratio[d] - diff * diff)
            dlog_std[d] += dl
            z[t, d] = dmu
    output_backward(h, W, z, dW, db, dh)


@jit
def value_head_kernel(z, h, W, b, dW, db, dh, returns, values_old, vf_coef, vf_clip, stats):
    r"""The critic's side of ``ppo_loss``: V = h W + b from z = h W (B, 1), L^V (clipped if vf_clip > 0),
    and the backward of c_v L^V.

    ``losses.value_loss`` / ``losses.clipped_value_loss``:

    .. math:: \frac{\partial L^V}{\partial V_t} = \frac{V_t - R_t}{B}\;
              1[|V_t - V^{old}_t| \le \epsilon_v \vee (V_t - R_t)^2 \ge (V^{clip}_t - R_t)^2]

    c_v dL^V/dV overwrites z; then ``output_backward`` (dW, db, dh). Also ``losses.explained_variance``
    of (V, R) (NaN when Var[R] is zero up to rounding): stats[6] = the sum of the value loss terms,
    stats[7] = the explained variance.
    """
    B = z.shape[0]
    values = np.empty(B)
    loss = 0.0
    mean_r = 0.0
    mean_v = 0.0
    for t in range(B):
        v = z[t, 0] + b[0]
        values[t] = v
        err = v - returns[t]
        use_unclipped = True
        err_clipped = err
        if vf_clip > 0:
            delta = v - values_old[t]
            err_clipped = values_old[t] + min(max(delta, -vf_clip), vf_clip) - returns[t]
            use_unclipped = abs(delta) <= vf_clip or err * err >= err_clipped * err_clipped
        loss += 0.5 * (err * err if use_unclipped else err_clipped * err_clipped)
        z[t, 0] = vf_coef * err / B if use_unclipped else 0.0
        mean_r += returns[t]
        mean_v += v
    output_backward(h, W, z, dW, db, dh)
    stats[6] = loss
    mean_r /= B
    mean_e = mean_r - mean_v / B
    var_r = 0.0
    var_e = 0.0
    sq_r = 0.0
    for t in range(B):
        r = np.float64(returns[t])
        var_r += (r - mean_r) ** 2
        var_e += (r - values[t] - mean_e) ** 2
        sq_r += r * r
    stats[7] = np.nan if var_r <= 1e-24 * sq_r else 1.0 - var_e / var_r
