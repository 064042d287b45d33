r"""Schedules (functions of training progress) and the two feedback controllers of PPO.

Progress p = steps done / total steps, in [0, 1].

    constant:     c(p) = c0
    linear:       c(p) = c0 + (c1 - c0) p
    exponential:  c(p) = c0 (c1 / c0)^p            (geometric interpolation; c0, c1 > 0)

Adaptive KL penalty (Schulman et al. 2017, sec. 4), after each update with mean KL d between the
rollout policy and the updated one, measured between action distributions state by state:

    d > KL_max  ->  beta <- beta * factor        (the penalty was too weak)
    d < KL_min  ->  beta <- beta / factor        (the penalty dominated the surrogate)

Automatic entropy coefficient (as SAC tunes its temperature, Haarnoja et al. 2018): learn
alpha = exp(log_alpha) by gradient descent on

    J(log_alpha) = alpha * (H(pi) - H_target),    dJ/dlog_alpha = alpha * (H - H_target),

so alpha grows while the policy's entropy is below the target and shrinks while it is above.
"""
from __future__ import annotations

import numpy as np

from ppo_np.optim import Adam


def schedule(kind: str, start: float, end: float, progress: float) -> float:
    """The value at ``progress`` in [0, 1] of a constant, linear or exponential schedule."""
    p = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return start
    if kind == "linear":
        return start + (end - start) * p
    if kind == "exponential":
        return start * (end / start) ** p
    raise ValueError(f"schedule must be constant, linear or exponential; got {kind!r}")


class AdaptiveBeta:
    """beta of PPO-penalty, multiplied or divided by ``factor`` after each update by the measured mean KL."""

    def __init__(self, beta: float, kl_min: float, kl_max: float, factor: float):
        self.beta, self.kl_min, self.kl_max, self.factor = beta, kl_min, kl_max, factor

    def update(self, mean_kl: float) -> float:
        if mean_kl > self.kl_max:
            self.beta *= self.factor
        elif mean_kl < self.kl_min:
            self.beta /= self.factor
        return self.beta


class EntropyCoefficient:
    """c_e over training: scheduled (constant, linear, exponential) or tuned toward a target entropy."""

    def __init__(self, kind: str, start: float, end: float, target_entropy: float, lr: float):
        self.kind, self.start, self.end, self.target_entropy = kind, start, end, target_entropy
        self.value = start
        self.log_alpha = {"log_ent_coef": np.array([np.log(start) if start > 0 else 0.0])}
        self.optimizer = Adam(self.log_alpha, lr=lr) if kind == "auto" else None

    def at(self, progress: float) -> float:
        """The coefficient to use now (the schedule's value, or the current tuned alpha)."""
        if self.kind != "auto":
            self.value = schedule(self.kind, self.start, self.end, progress)
        return self.value

    def observe(self, entropy: float) -> None:
        """After a minibatch, one gradient step on log_alpha (auto only): d/dlog_alpha = alpha (H - H_target)."""
        if self.optimizer is None:
            return
        alpha = float(np.exp(self.log_alpha["log_ent_coef"][0]))
        self.optimizer.step({"log_ent_coef": np.array([alpha * (entropy - self.target_entropy)])})
        self.value = float(np.exp(self.log_alpha["log_ent_coef"][0]))

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"ent/value": np.array(self.value), "ent/log_ent_coef": self.log_alpha["log_ent_coef"].copy()}
        if self.optimizer is not None:
            state.update({f"ent/adam/{k}": v for k, v in self.optimizer.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.value = float(state["ent/value"])
        self.log_alpha["log_ent_coef"][...] = state["ent/log_ent_coef"]
        if self.optimizer is not None:
            self.optimizer.load_state_dict({k[len("ent/adam/"):]: v for k, v in state.items()
                                            if k.startswith("ent/adam/")})
