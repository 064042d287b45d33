r"""TRPO's policy step: the KL-constrained surrogate, solved with hand-derived Fisher-vector products.

PPO is the first-order answer to the problem TRPO solves directly (Schulman et al. 2015). With the
rollout of pi_old = pi_{theta_old} (a batch of B valid samples, advantages A_t, temperature tau):

    maximise_theta   L(theta) = (1/B) sum_t r_t(theta) A_t,     r_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t)
    subject to       KLbar(theta) = (1/B) sum_t KL(pi_old,tau(.|s_t) || pi_theta,tau(.|s_t)) <= delta.

The step
--------
Around theta_old, with s = theta - theta_old: L is linear to first order, L ~ L(theta_old) + g^T s with
g = grad L(theta_old) = (1/B) sum_t A_t grad log pi(a_t|s_t) (r = 1 there); KLbar is quadratic to second
order, KLbar ~ (1/2) s^T F s, because KLbar(theta_old) = 0 and its gradient vanishes at its minimum.
Maximising g^T s subject to (1/2) s^T F s <= delta (Lagrange: g = lambda F s) gives

    s = beta x,   x = F^{-1} g  (the natural gradient),   beta = sqrt(2 delta / (x^T F x)),

whose predicted improvement is g^T s = sqrt(2 delta g^T F^{-1} g). x is found by conjugate gradient,
which needs only products F v; F itself (P x P for P parameters) is never formed.

F is the Hessian of the mean KL at pi = pi_old, and a Gauss-Newton matrix
--------------------------------------------------------------------------
Let y_t(theta) be the distribution's parameters at state s_t (logits z, or mean mu and log-std l) and
J_t = dy_t/dtheta their Jacobian. The chain rule twice gives, for KL_t(theta) = KL(p_t || q(y_t(theta))),

    d^2 KL_t / dtheta^2 = J_t^T (d^2 KL / dy^2) J_t + sum_i (dKL / dy_i) d^2 y_i / dtheta^2.

At theta = theta_old we have q = p, dKL/dy = 0 (KL is at its minimum 0), so the second term vanishes and

    F = (1/B) sum_t J_t^T M_t J_t,      M_t = d^2 KL(p || q) / dy^2 at q = p,

the Fisher information of the action distribution in its own parameters y. Each policy head derives
its closed form and applies it (``fisher_metric``): (diag(p) - p p^T) / tau^2 for a categorical in its
logits, diag(1/sigma^2, 2) for a Gaussian in (mu, l). A Gaussian's l is one parameter shared by every
state, so its block of F is (1/B) sum_t 2 I = 2 I, and it never couples to the network weights.

So F v = J^T (M (J v)) / B: J v by one forward-mode (tangent) pass through the network and the head
(``tangents.actor_tangent``), M applied state by state by the head, J^T by the actor's ordinary
backward (``Actor.backward``), with the 1/B of the mean. Nothing is differenced numerically; ``ppo-np gradcheck``
compares F v with central differences of the gradient of KLbar (a Hessian-vector product, rows
``fisher-*``). With damping c > 0 the solver uses F + c I: strictly positive definite, so CG cannot
stall on F's null directions, and the step is a little more conservative.

Conjugate gradient (Hestenes and Stiefel 1952), for (F + c I) x = g from x_0 = 0:
    r_0 = p_0 = g;   alpha_k = r_k^T r_k / p_k^T A p_k;   x_{k+1} = x_k + alpha_k p_k;
    r_{k+1} = r_k - alpha_k A p_k;   p_{k+1} = r_{k+1} + (r_{k+1}^T r_{k+1} / r_k^T r_k) p_k,
stopping after ``cg_iters`` products or when r^T r <= ``cg_tol``. In exact arithmetic it is exact after
P steps; TRPO uses ~10, which already captures the directions of large curvature.

Line search. The quadratic model of KLbar and the linear model of L are only local, so the step
beta x is tried, then shrunk by ``decay`` (1, decay, decay^2, ...) up to ``steps`` times; the first
candidate with L(theta) > L(theta_old) and the *exact* mean KL (analytic, between the action
distributions: the head's ``kl``) <= delta is accepted. If none is, the parameters are written back from the
saved flat vector, bit for bit (``params.assign_flat``), and this update leaves the policy unchanged.

The critic is not part of the constrained problem: it keeps its own Adam steps on the value loss
(``value_gradients``), over epochs of shuffled minibatches like PPO (``ppo.PPO._trpo_update``).

References: Schulman, Levine, Moritz, Jordan, Abbeel (2015), "Trust Region Policy Optimization",
arXiv:1502.05477 (Appendix C: the Fisher-vector product and the line search); Kakade (2001), "A Natural
Policy Gradient"; Martens (2014), "New insights and perspectives on the natural gradient method"
(the Gauss-Newton view); Nocedal and Wright (2006), "Numerical Optimization", ch. 5 (CG).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import numpy as np

from ppo_np.heads import check_temperature
from ppo_np.losses import Minibatch, clipped_value_loss, value_loss
from ppo_np.params import Params, assign_flat, flatten, unflatten
from ppo_np.surrogate import kl_penalty_surrogate
from ppo_np.tangents import actor_tangent


# --- F v -----------------------------------------------------------------------------------------------

class FisherPoint(NamedTuple):
    """The forward at theta_old that every F v of one update reuses: the actor's forward cache (for the
    tangent pass and the backward), y_old (B, dist_dim) where the head's metric is taken, and tau."""

    cache: tuple
    y: np.ndarray
    temperature: float


def fisher_point(actor, obs: np.ndarray, temperature: float) -> FisherPoint:
    """One actor forward at the current parameters (theta_old), kept for ``fisher_vector_product``.

    Shapes: obs (B, obs_dim) with B >= 1.
    """
    tau = check_temperature(temperature)
    y, cache = actor.forward(obs)                                    # (B, dist_dim)
    if y.shape[0] < 1:
        raise ValueError("the Fisher matrix needs at least one state, got B = 0")
    return FisherPoint(cache, y, tau)


def fisher_vector_product(actor, point: FisherPoint, v: np.ndarray, damping: float = 0.0) -> np.ndarray:
    r"""(F + c I) v with F = (1/B) sum_t J_t^T M_t J_t, the Hessian of the mean KL at pi = pi_old.

    .. math:: F v = J^T\Big(\frac{1}{B} M\,(J v)\Big) + c\,v

    J v by ``tangents.actor_tangent``, M by the head's ``fisher_metric``, J^T by ``actor.backward``;
    exact (no finite differences). ``point`` must come from ``fisher_point`` at the actor's current
    parameters.
    Shapes: v (P,) flat as ``params.flatten(actor.params)`` -> (P,) float64.
    Checked by ``ppo-np gradcheck`` (rows ``fisher-*``), ``tests/test_trpo.py::test_fisher_is_the_kl_hessian``
    and ``::test_fisher_is_symmetric_and_psd``.
    """
    v = np.asarray(v, dtype=np.float64)
    dparams = unflatten(v.astype(actor.dtype, copy=False), actor.params)
    dy = actor_tangent(actor, point.cache, dparams)                  # J v (B, dist_dim)
    My = actor.head.fisher_metric(point.y, dy, point.temperature)    # M J v
    return flatten(actor.backward(My / dy.shape[0], point.cache)).astype(np.float64) + damping * v


# --- the surrogate, the KL and their gradients ----------------------------------------------------------

def surrogate_gradient(actor, batch: Minibatch, temperature: float) -> tuple[float, np.ndarray]:
    r"""L(theta) = mean_t r_t A_t and its gradient g = dL/dtheta, flat.

    .. math:: \frac{\partial L}{\partial \log\pi_t} = \frac{r_t A_t}{B},\qquad
              g = J^T\Big(\frac{\partial \log\pi}{\partial y}^T \frac{r A}{B}\Big)

    The surrogate's derivative is ``surrogate.kl_penalty_surrogate`` at beta = 0 (which returns that of
    -mean(r A)), chained through the head's ``log_prob_backward`` and ``actor.backward``.
    At theta_old (r = 1) this is the policy gradient mean_t A_t grad log pi(a_t|s_t).
    Shapes: batch of B rows -> (L float, g (P,) float64).
    Checked by ``ppo-np gradcheck`` (rows ``trpo-surrogate-*``).
    """
    y, cache = actor.forward(batch.obs)
    logp = actor.head.log_prob(y, batch.actions, temperature)
    loss, (dlogp, _), _ = kl_penalty_surrogate(logp, batch.logp_old, batch.advantages,
                                               np.zeros(y.shape[0], logp.dtype), beta=0.0)  # loss = -L, dlogp = -r A / B
    grads = actor.backward(actor.head.log_prob_backward(-dlogp, y, batch.actions, temperature), cache)
    return -loss, flatten(grads).astype(np.float64)


def surrogate_and_kl(actor, batch: Minibatch, temperature: float) -> tuple[float, float]:
    """(L(theta), exact mean KL(pi_old || pi_theta)) at the actor's current parameters, no gradients.

    The line search's two tests. KL is analytic between the tau-tempered action distributions
    (the head's ``kl``), never a distance between parameter vectors.
    Checked by ``tests/test_trpo.py::test_accepted_steps_satisfy_the_constraint``.
    """
    y = actor.forward(batch.obs)[0]
    ratio = np.exp(actor.head.log_prob(y, batch.actions, temperature) - batch.logp_old)     # r_t
    kl = actor.head.kl(batch.dist_old, y, temperature)                                    # (B,)
    return float(np.mean(ratio * batch.advantages)), float(np.mean(kl))


def mean_kl_gradient(actor, obs: np.ndarray, dist_old: np.ndarray, temperature: float) -> Params:
    r"""d/dtheta of (1/B) sum_t KL(pi_old,tau(.|s_t) || pi_theta,tau(.|s_t)), by the q side of ``kl_backward``.

    .. math:: \frac{\partial \overline{KL}}{\partial\theta} = J^T \frac{1}{B}\frac{\partial KL}{\partial y^q}

    Zero at pi_theta = pi_old; its derivative there along v is F v, which is how ``ppo-np gradcheck``
    checks ``fisher_vector_product`` (central differences of this function). Itself checked against
    central differences of the mean KL by ``ppo-np gradcheck`` (rows ``trpo-kl-*``).
    Shapes: obs (B, obs_dim), dist_old (B, dist_dim) -> dict like actor.params.
    """
    y, cache = actor.forward(obs)
    dkl = np.full(y.shape[0], 1.0 / y.shape[0], dtype=y.dtype)                          # d mean / d KL_t
    return actor.backward(actor.head.kl_backward(dkl, dist_old, y, temperature)[1], cache)


def value_gradients(critic, mb: Minibatch, vf_clip: Optional[float]) -> tuple[float, Params]:
    """The critic's own regression: L^V (plain, or clipped around V_old) and dL^V/dphi.

    The formulas and their gradients are ``losses.value_loss`` / ``losses.clipped_value_loss``.
    Shapes: a minibatch of B rows -> (loss float, dict like critic.params).
    """
    values, cache = critic.forward(mb.obs)
    if vf_clip is None:
        loss, dvalues, _ = value_loss(values, mb.returns)
    else:
        loss, dvalues, _ = clipped_value_loss(values, mb.returns, mb.values_old, vf_clip)
    return loss, critic.backward(dvalues, cache)


# --- conjugate gradient --------------------------------------------------------------------------------

class CGResult(NamedTuple):
    """x ~ A^{-1} b; residual = ||b - A x|| / ||b|| (by the recursion; 0 for b = 0); iterations = products used."""

    x: np.ndarray
    residual: float
    iterations: int


def conjugate_gradient(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, iters: int = 10,
                       tol: float = 1e-10) -> CGResult:
    r"""Solve A x = b for a symmetric positive (semi)definite A given only v -> A v; x_0 = 0.

    .. math:: \alpha_k = \frac{r_k^T r_k}{p_k^T A p_k},\; x_{k+1} = x_k + \alpha_k p_k,\;
              r_{k+1} = r_k - \alpha_k A p_k,\; p_{k+1} = r_{k+1} + \frac{r_{k+1}^T r_{k+1}}{r_k^T r_k} p_k

    Stops after ``iters`` products, when r^T r <= ``tol``, or if p^T A p <= 0 (A not positive definite
    along p: the iterate so far is returned).
    Shapes: b (P,) -> x (P,) float64.
    Checked by ``tests/test_trpo.py::test_cg_solves_small_systems``.
    """
    if not (isinstance(iters, (int, np.integer)) and iters >= 1):
        raise ValueError(f"cg iterations must be an integer >= 1, got {iters!r}")
    b = np.asarray(b, dtype=np.float64)
    x = np.zeros_like(b)
    r = b.copy()                                     # r_0 = b - A x_0 = b
    p = r.copy()
    rr = float(r @ r)
    b_norm = math.sqrt(rr)
    k = 0
    while k < iters and rr > tol:
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not pAp > 0:
            break
        k += 1
        alpha = rr / pAp                             # alpha_k
        x += alpha * p                               # x_{k+1}
        r -= alpha * Ap                              # r_{k+1}
        rr_next = float(r @ r)
        p = r + (rr_next / rr) * p                   # p_{k+1}
        rr = rr_next
    return CGResult(x, math.sqrt(rr) / b_norm if b_norm > 0 else 0.0, k)


# --- the step ------------------------------------------------------------------------------------------

class LineSearchResult(NamedTuple):
    """accepted: whether a candidate passed; backtracks: candidates rejected before it (``steps`` if none
    passed); step_norm: ||theta_new - theta_old||_2 (0 when rejected); surrogate, kl: L and the exact mean KL
    at the final parameters (those of theta_old when rejected)."""

    accepted: bool
    backtracks: int
    step_norm: float
    surrogate: float
    kl: float


def line_search(actor, batch: Minibatch, temperature: float, full_step: np.ndarray, surrogate_old: float,
                max_kl: float, steps: int = 10, decay: float = 0.5) -> LineSearchResult:
    r"""Try theta_old + decay^j s for j = 0 .. steps - 1; keep the first with L > L_old and KLbar <= delta.

    If none passes, ``actor.params`` are restored from the flat copy of theta_old, bit for bit.
    ``surrogate_old`` is L(theta_old) as ``surrogate_and_kl`` computes it (the same arithmetic as the
    candidates, so that a rounding difference cannot pass for an improvement). The parameters are
    changed in place (the arrays the MLP computes with).
    Shapes: full_step (P,) -> ``LineSearchResult``.
    Checked by ``tests/test_trpo.py::test_accepted_steps_satisfy_the_constraint`` and
    ``::test_violating_step_is_rejected_bit_identically``.
    """
    theta_old = flatten(actor.params)                                  # a copy, in the params' dtype
    full_step = np.asarray(full_step, dtype=np.float64)
    for j in range(steps):
        theta = theta_old + decay**j * full_step                      # theta_old + decay^j beta x
        assign_flat(actor.params, theta.astype(theta_old.dtype))
        surrogate, kl = surrogate_and_kl(actor, batch, temperature)
        if math.isfinite(surrogate) and kl <= max_kl and surrogate > surrogate_old:
            step_norm = float(np.linalg.norm(flatten(actor.params).astype(np.float64) - theta_old))
            return LineSearchResult(True, j, step_norm, surrogate, kl)
    assign_flat(actor.params, theta_old)                               # bit-identical restore
    surrogate, kl = surrogate_and_kl(actor, batch, temperature)
    return LineSearchResult(False, steps, 0.0, surrogate, kl)


class TRPOResult(NamedTuple):
    """Diagnostics of one TRPO policy step.

    surrogate_old, surrogate_new: L(theta_old), L(theta_new); kl: exact mean KL(pi_old || pi_new);
    accepted, backtracks, step_norm: from the line search; grad_norm: ||g||; cg_residual, cg_iterations:
    from CG; expected_improvement: g^T (beta x), the linear model's prediction for the full step.
    """

    surrogate_old: float
    surrogate_new: float
    kl: float
    accepted: bool
    backtracks: int
    step_norm: float
    grad_norm: float
    cg_residual: float
    cg_iterations: int
    expected_improvement: float


def trpo_step(actor, batch: Minibatch, temperature: float, max_kl: float = 0.01, cg_iters: int = 10,
              cg_tol: float = 1e-10, damping: float = 0.1, line_search_steps: int = 10,
              line_search_decay: float = 0.5) -> TRPOResult:
    r"""One TRPO policy update on ``batch``, in place on ``actor.params``.

    g = grad L (``surrogate_gradient``); x ~ (F + c I)^{-1} g by CG (``fisher_vector_product``);
    s = beta x with beta = sqrt(2 delta / x^T (F + c I) x); then ``line_search``.

    Args:
        actor: a ``policy.Actor`` at theta_old (the policy that collected ``batch``).
        batch: the update's samples (``losses.Minibatch``, B >= 1 rows), advantages as they should be
            used (normalised or not: the caller's choice); ``dist_old`` required for the KL.
        temperature: the tau the rollout acted with.
        max_kl: delta > 0; cg_iters, cg_tol, damping: CG and F + c I; line_search_steps, line_search_decay:
            candidates tried and their shrink factor in (0, 1).
    Returns a ``TRPOResult``. If g = 0 or the curvature x^T F x is not positive, nothing moves.
    Checked by ``tests/test_trpo.py::test_accepted_steps_satisfy_the_constraint``,
    ``::test_zero_advantages_leave_the_policy_unchanged`` and ``::test_trpo_learns_cartpole``.
    """
    if batch.dist_old is None:
        raise ValueError("a TRPO step needs batch.dist_old (the old policy's distribution parameters) for the KL")
    if not (math.isfinite(max_kl) and max_kl > 0):
        raise ValueError(f"max_kl must be a finite number > 0, got {max_kl!r}")
    if not 0 < line_search_decay < 1:
        raise ValueError(f"line_search_decay must lie in (0, 1), got {line_search_decay!r}")
    g = surrogate_gradient(actor, batch, temperature)[1]                             # g (P,)
    surrogate_old, kl_old = surrogate_and_kl(actor, batch, temperature)              # what the search compares
    grad_norm = float(np.linalg.norm(g))
    point = fisher_point(actor, batch.obs, temperature)

    def fvp(v):
        return fisher_vector_product(actor, point, v, damping)

    cg = conjugate_gradient(fvp, g, cg_iters, cg_tol)                                # x ~ F^{-1} g
    xFx = float(cg.x @ fvp(cg.x))
    if not (math.isfinite(xFx) and xFx > 0):                                          # g = 0: nothing to do
        return TRPOResult(surrogate_old, surrogate_old, kl_old, False, 0, 0.0, grad_norm, cg.residual,
                          cg.iterations, 0.0)
    beta = math.sqrt(2.0 * max_kl / xFx)                                              # (1/2) s^T F s = delta
    full_step = beta * cg.x
    ls = line_search(actor, batch, temperature, full_step, surrogate_old, max_kl, line_search_steps,
                     line_search_decay)
    return TRPOResult(surrogate_old, ls.surrogate, ls.kl, ls.accepted, ls.backtracks, ls.step_norm, grad_norm,
                      cg.residual, cg.iterations, float(g @ full_step))
