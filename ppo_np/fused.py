r"""The minibatch step of the update loop, fused: ``losses.ppo_loss`` in a few compiled calls.

``losses.ppo_loss`` composes the pure functions of ``layers``, the policy head and ``losses``, one
NumPy call per term; it is the specification, and the one the gradient checks differentiate. On a
64-row minibatch of 64-64 networks it makes about a hundred NumPy calls of a few microseconds each,
several times what its matrix products cost. ``FusedLoss`` computes the same loss, gradients and
diagnostics with

* the hidden layers' matrix products through BLAS into buffers allocated once
  (``np.dot(..., out)``): a_l = h_{l-1} W_l, dW_l = h_{l-1}^T g_l, dh_{l-1} = g_l W_l^T, and no
  dx for the observations; a first layer of small fan-in on a small minibatch in loops instead
  (``input_layer_kernel``, ``input_backward_kernel``), where a BLAS call costs more than its arithmetic;
* between them, ``layers.bias_activation_kernel`` (h_l = f(a_l + b_l) in place) and
  ``activation_backward_kernel`` (g_l = dh_l * f'(a_l) in place, db_l = 1^T g_l), on
  ``layers.activate`` and ``layers.activation_derivative``;
* one call per network for its loss, from z = h W_L: the policy head's loss kernel
  (``heads.base.loss_step``: the output bias, log pi, H, KL, the ratio, the surrogate sample by sample,
  dL/dz and the head's own gradients), and ``value_head_kernel`` for the critic; from dL/dz on, the
  output layer's backward is ``backward``'s, as the hidden layers' are (dW_L = h^T dL/dz by BLAS: 0.6 us
  on cartpole-zoo's 256 x 64 x 2, where a loop accumulating in float64 took 5);
* all of it, forward and backward through both networks, one source (``loss_pass``) run as one
  compiled call where Numba can call BLAS (SciPy, the ``fast`` extra): 7% less time per call on
  cartpole-zoo's 256-row minibatch than the same source run as Python, with the same bits;
* the gradients of each network in one flat vector (``actor_flat_grad``, ``critic_flat_grad``)
  whose views are named like the parameters, so clipping is one dot product per network and Adam
  one pass (``Adam.step_flat`` over parameters packed by ``params.pack``).

The formulas are those of ``losses.py``, ``surrogate.py`` and the heads (their docstrings derive
them); statistics are accumulated in float64. ``ppo-np gradcheck`` (rows fused-*) checks its gradients
against central differences in float64, and ``tests/test_fused.py`` checks every output against
``ppo_loss`` for both heads, both surrogates, both value losses, every activation, a temperature
tau != 1, both dtypes, both first-layer paths and the pass compiled and not (the two the same to the bit).
"""
from __future__ import annotations

import functools
import importlib
import math
from typing import NamedTuple, Optional

import numpy as np

from ppo_np.heads.base import loss_step
from ppo_np.jit import compiled_with, jit, plain
from ppo_np.layers import ACTIVATION_CODES, activation_derivative, bias_activation_kernel, matmul_rows
from ppo_np.losses import STAT_KEYS, LossCoefs, Minibatch
from ppo_np.mlp import MLP
from ppo_np.params import aligned_empty, aligned_zeros, num_params, views_of

#: a first layer with at most this many inputs runs in ``input_layer_kernel`` / ``input_backward_kernel``
#: (a BLAS call of so few inputs costs several times its arithmetic); wider ones go through BLAS like
#: every other layer
INPUT_KERNEL_MAX_FAN_IN = 16
#: ... on a minibatch of at most this many rows; on more, BLAS's product is the faster (on 256 rows of fan-in 4,
#: 2.6 against 6.7 us forward and 4.9 against 6.9 us backward, measured here)
INPUT_KERNEL_MAX_ROWS = 64


class OutputLayer(NamedTuple):
    """What a loss kernel takes of the output layer: z = h W_L (B, n_out), which it overwrites with dL/dz
    (``backward`` goes on from there), and the bias b_L."""

    z: np.ndarray
    b: np.ndarray


class KernelCoefs(NamedTuple):
    """A ``LossCoefs`` as the heads' loss kernels take it (and whether to normalise the advantages)."""

    penalty: bool
    clip_eps: float
    beta: float
    ent_coef: float
    temperature: float
    normalize_advantages: bool


class ValueSums(NamedTuple):
    """What ``value_head_kernel`` returns: the sum of the value loss terms, and the explained variance."""

    value_loss: float
    explained_variance: float


class _Workspace:
    """One MLP's weights and the buffers of its forward and backward passes, for up to max_rows rows, as
    the tuple ``args`` that ``loss_pass`` takes: (network, hidden, upstream, output, dW, db, codes).

    network = (weights, biases, act), the live arrays; hidden = h_0 .. h_{L-2} and upstream = their
    dL/dh; output = z = h W_L, then dL/dz; dW, db = where the gradients go; codes = each layer's
    activation (``layers.ACTIVATION_CODES``), the output layer's the identity. Each buffer on a cache
    line (``params.aligned_empty``): the kernels' vector loops run along their rows.
    """

    def __init__(self, mlp: MLP, max_rows: int, grads: dict):
        L = mlp.n_layers
        network = plain(mlp.network)
        hidden = tuple(aligned_empty((max_rows, n), mlp.dtype) for n in mlp.sizes[1:-1])
        upstream = tuple(aligned_empty((max_rows, n), mlp.dtype) for n in mlp.sizes[1:-1])
        output = aligned_empty((max_rows, mlp.sizes[-1]), mlp.dtype)
        codes = (network[2][0],) * (L - 1) + (ACTIVATION_CODES["identity"],)
        self.args = (network, hidden, upstream, output, tuple(grads[f"W{l}"] for l in range(L)),
                     tuple(grads[f"b{l}"] for l in range(L)), codes)
        self.has_hidden = bool(hidden)
        self.small_input = mlp.sizes[0] <= INPUT_KERNEL_MAX_FAN_IN

    def input_kernels(self, B: int) -> bool:
        """Whether the first layer runs in the input kernels for a minibatch of B rows."""
        return self.small_input and B <= INPUT_KERNEL_MAX_ROWS


def loss_pass(obs, actor, critic, policy_key, samples, coefs, value_targets, input_kernels):
    """``FusedLoss``'s forward and backward through both networks, from the observations to every gradient:
    each network's ``output_layer`` (its hidden layers, then z = h W_L), the head's loss kernel
    (``heads.base.loss_step``) and the critic's (``value_head_kernel``), then each network's
    ``backward``. Returns (``PolicySums``, ``ValueSums``), plain.

    actor, critic = ``_Workspace.args``; value_targets = (returns, values_old, c_v, the value clip or -1);
    input_kernels = (actor's, critic's) ``_Workspace.input_kernels``. One source, run two ways: as one
    compiled call (``COMPILED_LOSS_PASS``, the products calling BLAS through SciPy), or as this Python
    function calling the same kernels and NumPy's BLAS (networks without hidden layers, or no SciPy).
    """
    policy = loss_step(policy_key, output_layer(obs, actor, input_kernels[0]), samples, coefs)
    value = value_head_kernel(output_layer(obs, critic, input_kernels[1]), *value_targets)
    backward(obs, actor, input_kernels[0])
    backward(obs, critic, input_kernels[1])
    return policy, value


def kl_sum(obs, actor, policy_key, samples, coefs, input_kernels):
    """sum_t KL(pi_old,tau(. | s_t) || pi_tau(. | s_t)) over the rows of ``obs``: the actor's ``output_layer``,
    then the head's loss kernel, whose KL sum it is (the kernels' one home of the head's KL; its other sums,
    and the dL/dz it writes, go unused). coefs = ``kl_coefs(tau)``; samples' dist_old must be given."""
    return loss_step(policy_key, output_layer(obs, actor, input_kernels), samples, coefs)[1]


def kl_coefs(temperature: float) -> tuple:
    """The ``KernelCoefs`` (plain) of ``kl_sum``: only tau acts on the KL."""
    return False, 0.0, 0.0, 0.0, float(temperature), False


def output_layer(obs, workspace, input_kernels):
    """z = h W_L (BLAS, without b_L) after the network's ``hidden_forward``: the ``OutputLayer`` of the
    first B rows, plain. The bias is the loss kernel's to add: for a fan-out of 1 or 2, a pass of its
    own over z would cost more than the addition."""
    weights, biases, _ = workspace[0]
    z = workspace[3][:obs.shape[0]]
    np.dot(hidden_forward(obs, workspace, input_kernels), weights[-1], z)
    return z, biases[-1]


def hidden_forward(x, workspace, input_kernels):
    """h_l = f(h_{l-1} W_l + b_l) into the first B rows of the workspace's hidden buffers; returns the last
    (x itself without hidden layers). The products by BLAS (``np.dot`` into the buffer), the first layer
    by ``input_layer_kernel`` when ``input_kernels``."""
    network, hidden = workspace[0], workspace[1]
    weights, biases, act = network
    B = x.shape[0]
    h = x
    for l in range(len(hidden)):
        out = hidden[l][:B]
        if l == 0 and input_kernels:
            input_layer_kernel(h, weights[0], biases[0], out, act)
        else:
            np.dot(h, weights[l], out)
            bias_activation_kernel(out, biases[l], act)
        h = out
    return h


def backward(x, workspace, input_kernels):
    """Every dW_l and db_l from dL/dz, which the loss kernel wrote over z: for l = L-1 .. 0,
    g_l = dh_l * f'(a_l) (the output layer's f the identity: g_{L-1} = dL/dz), db_l = 1^T g_l,
    dW_l = h_{l-1}^T g_l, dh_{l-1} = g_l W_l^T; no dx for the observations. Checked both ways against
    ``ppo_loss`` by ``tests/test_fused.py::test_fused_loss_equals_ppo_loss``, and against central
    differences by ``ppo-np gradcheck`` (rows fused-*)."""
    network, hidden, upstream, output, dW, db, codes = workspace
    weights = network[0]
    B = x.shape[0]
    last = len(weights) - 1
    for l in range(last, -1, -1):
        g = output[:B] if l == last else upstream[l][:B]
        h = g if l == last else hidden[l][:B]      # f'(a_l) is read off h_l = f(a_l); the identity's reads nothing
        if l == 0 and input_kernels:
            input_backward_kernel(g, h, x, dW[0], db[0], codes[0])
        else:
            below = x if l == 0 else hidden[l - 1][:B]
            activation_backward_kernel(g, h, db[l], codes[l])
            np.dot(below.T, g, dW[l])
        if l > 0:
            np.dot(g, weights[l].T, upstream[l - 1][:B])


@functools.cache
def numba_can_call_blas() -> bool:
    """Whether ``COMPILED_LOSS_PASS`` can run: Numba's ``np.dot`` calls BLAS through SciPy (the ``fast`` extra).

    Importing SciPy's BLAS here also loads it before ``PPO.learn`` limits BLAS to one thread:
    threadpoolctl limits the libraries loaded at that moment.
    """
    try:
        importlib.import_module("scipy.linalg.cython_blas")
    except ImportError:
        return False
    return True


class FusedLoss:
    """``ppo_loss(actor, critic, mb, coefs)`` for one actor-critic pair, in buffers allocated once.

    Args:
        actor: a ``policy.Actor``; critic: a ``policy.Critic`` (their parameters are read at every call).
        max_rows: the largest minibatch it will see.
    Calling it with a ``Minibatch`` of B <= max_rows rows and a ``LossCoefs`` returns
    ``(loss, stats)`` like ``ppo_loss`` (stats keyed by ``losses.STAT_KEYS``) and leaves dL/dtheta in
    ``actor_grads`` and dL/dphi in ``critic_grads`` (dicts of views of ``actor_flat_grad`` and
    ``critic_flat_grad``), valid until the next call. ``normalize_advantages=True`` first replaces
    A by (A - mean(A)) / (std(A) + 1e-8) over the minibatch (``surrogate.normalize_advantages``).
    ``compiled_passes``: ``loss_pass``, the forward and backward through both networks, as one compiled
    call (``COMPILED_LOSS_PASS``), or run as Python calling the same kernels; by default compiled where
    Numba can call BLAS (SciPy, the ``fast`` extra; ``numba_can_call_blas``). Networks without hidden
    layers take the Python pass either way. ``mean_kl`` gives the exact KL of the actor as it stands over a
    batch of any size, from the same kernels.
    Checked against ``ppo_loss`` by ``tests/test_fused.py``, and against central differences in float64
    by ``tests/test_losses.py::test_ppo_loss_gradients`` (the ``fused`` cases) and ``ppo-np gradcheck``.
    """

    def __init__(self, actor, critic, max_rows: int, compiled_passes: Optional[bool] = None):
        if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        if compiled_passes not in (None, True, False):
            raise ValueError(f"compiled_passes must be None (compiled where SciPy is installed), True or False, "
                             f"got {compiled_passes!r}")
        if compiled_passes is None:
            compiled_passes = numba_can_call_blas()
        elif compiled_passes and not numba_can_call_blas():
            raise ValueError("compiled_passes=True needs SciPy, through which Numba calls BLAS: "
                             "pip install 'ppo-np[fast]'")
        self.compiled_passes = bool(compiled_passes)
        self.actor, self.critic, self.max_rows = actor, critic, int(max_rows)
        dtype = actor.dtype
        self.actor_flat_grad = aligned_zeros(num_params(actor.params), dtype)      # laid out like the packed
        self.critic_flat_grad = aligned_zeros(num_params(critic.params), dtype)    # parameters, aligned alike
        self.actor_grads = views_of(self.actor_flat_grad, actor.params)
        self.critic_grads = views_of(self.critic_flat_grad, critic.params)
        self._actor = _Workspace(actor.mlp, max_rows, self.actor_grads)
        self._critic = _Workspace(critic.mlp, max_rows, self.critic_grads)
        # Numba types a workspace's hidden layers by their count: the compiled pass wants at least one
        compiled = self.compiled_passes and self._actor.has_hidden and self._critic.has_hidden
        self._loss_pass = COMPILED_LOSS_PASS if compiled else loss_pass
        self._kl_sum = COMPILED_KL_SUM if compiled else kl_sum
        self._no_old = np.zeros((1, actor.head.dist_dim), dtype)   # stands for a missing dist_old
        self._coefs = (None, None, None)                           # (LossCoefs, normalize, KernelCoefs)

    def kernel_coefs(self, coefs: LossCoefs, normalize_advantages: bool) -> tuple:
        """The kernels' ``KernelCoefs`` (plain), made again only when the loss coefficients change."""
        if self._coefs[0] is not coefs or self._coefs[1] != normalize_advantages:
            self._coefs = (coefs, normalize_advantages, plain(KernelCoefs(
                coefs.surrogate == "penalty", coefs.clip_eps, coefs.beta, coefs.ent_coef, coefs.temperature,
                bool(normalize_advantages))))
        return self._coefs[2]

    def __call__(self, mb: Minibatch, coefs: LossCoefs, normalize_advantages: bool = False) -> tuple[float, dict]:
        if not isinstance(coefs, LossCoefs):
            raise ValueError(f"coefs must be a LossCoefs, got {type(coefs).__name__}")
        kernel_coefs = self.kernel_coefs(coefs, normalize_advantages)
        has_old = mb.dist_old is not None
        if coefs.surrogate == "penalty" and not has_old:
            raise ValueError("the 'penalty' surrogate needs mb.dist_old (the old policy's distribution parameters)")
        obs, samples, returns, values_old = self._arrays(mb)
        B = obs.shape[0]
        policy_key = self.actor.head.loss_key(self.actor.head_params, self.actor_grads, samples[0], B)
        value_targets = (returns, values_old, coefs.vf_coef, kernel_value_clip(coefs))
        a, c = self._actor, self._critic
        policy, value = self._loss_pass(obs, a.args, c.args, policy_key, samples, kernel_coefs, value_targets,
                                        (a.input_kernels(B), c.input_kernels(B)))
        loss, *stats = loss_statistics(policy, value, B, kernel_coefs, coefs.vf_coef, has_old)
        return loss, dict(zip(STAT_KEYS, stats))

    def mean_kl(self, batch: Minibatch, rows: np.ndarray, temperature: float) -> float:
        """The exact mean KL(pi_old,tau(. | s) || pi_tau(. | s)) over ``batch``'s ``rows``, with the actor's
        weights as they are: the head's loss kernel's KL (``kl_sum``) on up to max_rows rows at a time, the
        sums added in order (as ``fused_update.FusedUpdate`` adds them); NaN for no rows. Overwrites the
        gradients, like a call. Checked against ``heads.*.kl`` by ``tests/test_fused.py``."""
        if batch.dist_old is None:
            raise ValueError("the exact KL needs batch.dist_old (the old policy's distribution parameters)")
        coefs, total = kl_coefs(temperature), 0.0
        for start in range(0, rows.size, self.max_rows):
            chunk = rows[start:start + self.max_rows]
            obs, samples, _, _ = self._arrays(Minibatch(*(field[chunk] for field in batch)))
            policy_key = self.actor.head.loss_key(self.actor.head_params, self.actor_grads, samples[0], chunk.size)
            total += self._kl_sum(obs, self._actor.args, policy_key, samples, coefs,
                                  self._actor.input_kernels(chunk.size))
        return total / rows.size if rows.size else math.nan

    def _arrays(self, mb: Minibatch) -> tuple:
        """mb's arrays as the kernels take them (checked, in the networks' dtype): obs, a ``PolicySamples``
        (plain), returns, values_old."""
        B = mb.obs.shape[0]
        if not 1 <= B <= self.max_rows:
            raise ValueError(f"a minibatch of {B} rows; this FusedLoss takes 1 to {self.max_rows}")
        has_old = mb.dist_old is not None
        head, dtype = self.actor.head, self.actor.dtype
        obs = np.ascontiguousarray(mb.obs, dtype=dtype)
        if obs.shape != (B, self.actor.obs_dim):
            raise ValueError(f"observations must have shape ({B}, {self.actor.obs_dim}), got {obs.shape}")
        vectors = [np.ascontiguousarray(v, dtype=dtype) for v in (mb.logp_old, mb.advantages, mb.returns,
                                                                   mb.values_old)]
        for name, v in zip(("logp_old", "advantages", "returns", "values_old"), vectors):
            if v.shape != (B,):
                raise ValueError(f"{name} must have shape ({B},), got {v.shape}")
        logp_old, adv, returns, values_old = vectors
        dist_old = self._no_old
        if has_old:
            dist_old = np.ascontiguousarray(mb.dist_old, dtype=dtype)
            if dist_old.shape != (B, head.dist_dim):
                raise ValueError(f"dist_old must have shape ({B}, {head.dist_dim}), got {dist_old.shape}")
        actions = np.ascontiguousarray(mb.actions, dtype=head.action_dtype(dtype))
        return obs, (actions, logp_old, adv, dist_old, has_old), returns, values_old   # PolicySamples, plain

    @property
    def compiled(self) -> bool:
        """Whether ``loss_pass`` runs as one compiled call (``COMPILED_LOSS_PASS``)."""
        return self._loss_pass is COMPILED_LOSS_PASS

    @property
    def workspaces(self) -> tuple:
        """The actor's and the critic's ``_Workspace.args``, as ``loss_pass`` takes them."""
        return self._actor.args, self._critic.args

    @property
    def small_inputs(self) -> tuple[bool, bool]:
        """Whether the actor's and the critic's first layers may run in the input kernels (by their fan-in;
        ``_Workspace.input_kernels`` adds the rows' rule)."""
        return self._actor.small_input, self._critic.small_input


def kernel_value_clip(coefs: LossCoefs) -> float:
    """The value clip eps_v as ``value_head_kernel`` takes it: -1 for none."""
    return -1.0 if coefs.vf_clip is None else coefs.vf_clip


@jit
def loss_statistics(policy, value, B, coefs, vf_coef, has_old):
    """The loss and ``losses.STAT_KEYS``'s statistics (a tuple, loss first) from the sums a ``loss_pass``
    returns (``PolicySums``, ``ValueSums``) over a minibatch of B rows: means over it, and
    L = -objective (+ beta KL for the penalty) + c_v L^V - c_e H. ``coefs`` a ``KernelCoefs``."""
    objective, kl, entropy, k1, k3, clipped, weight, weight_outside = policy
    value_loss, explained_variance = value
    penalty, _, beta, ent_coef, _, _ = coefs
    objective, kl, entropy, k1, k3, clipped = objective / B, kl / B, entropy / B, k1 / B, k3 / B, clipped / B
    value_loss = value_loss / B
    policy_loss = -objective + (beta * kl if penalty else 0.0)
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    return (loss, policy_loss, value_loss, entropy, k1, k3, kl if has_old else math.nan, clipped,
            explained_variance, weight_outside / weight if weight > 0 else 0.0)


# --- kernels ---------------------------------------------------------------------------------------

@jit
def input_layer_kernel(x, W, b, h, act):
    """h = f(x W + b) for a first layer of small fan-in: the product by ``layers.matmul_rows``, then
    ``bias_activation_kernel`` (a separate pass: a branch on f inside the product's loop stops LLVM
    from vectorising it).

    Shapes: x (B, n_in), W (n_in, n), b (n,) -> h (B, n).
    """
    matmul_rows(x, W, h)
    bias_activation_kernel(h, b, act)


@jit
def activation_backward_kernel(dh, h, db, activation_code):
    r"""g = dh * f'(a) in place, and db = 1^T g: the activation's backward, then the bias gradient.

    .. math:: \tanh: f' = 1 - h^2,\qquad \mathrm{ReLU}: f' = 1[h > 0],\qquad \mathrm{identity}: f' = 1

    f' by ``layers.activation_derivative``. Shapes: dh, h (B, n), db (n,) (overwritten).
    """
    B, n = dh.shape
    db[:] = 0
    for r in range(B):
        for j in range(n):
            dh[r, j] = dh[r, j] * activation_derivative(h[r, j], activation_code)
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
def value_head_kernel(layer, returns, values_old, vf_coef, vf_clip):
    r"""The critic's side of ``ppo_loss``: V = h W + b from layer.z = h W (B, 1), L^V (clipped if vf_clip > 0),
    and the backward of c_v L^V.

    ``losses.value_loss`` / ``losses.clipped_value_loss``:

    .. math:: \frac{\partial L^V}{\partial V_t} = \frac{V_t - R_t}{B}\;
              1[|V_t - V^{old}_t| \le \epsilon_v \vee (V_t - R_t)^2 \ge (V^{clip}_t - R_t)^2]

    c_v dL^V/dV overwrites z, whose layer's backward is ``backward``'s. Returns ``ValueSums`` (plain): the
    sum of the value loss terms, and ``losses.explained_variance`` of (V, R) (NaN when Var[R] is zero up
    to rounding).
    """
    z, b = layer
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
    return loss, np.nan if var_r <= 1e-24 * sq_r else 1.0 - var_e / var_r


#: ``loss_pass`` and ``kl_sum`` as one compiled call each, their networks' passes compiled too (their
#: products call BLAS through SciPy: ``numba_can_call_blas``)
_COMPILED_OUTPUT_LAYER = compiled_with(output_layer, hidden_forward=jit(hidden_forward))
COMPILED_LOSS_PASS = compiled_with(loss_pass, backward=jit(backward), output_layer=_COMPILED_OUTPUT_LAYER)
COMPILED_KL_SUM = compiled_with(kl_sum, output_layer=_COMPILED_OUTPUT_LAYER)
