"""Policy heads: one file per action distribution, each owning everything that depends on its space.

``base.py`` states the interface; ``categorical.py`` (Discrete actions), ``gaussian.py`` (1-D Box
actions), ``bernoulli.py`` (MultiBinary actions) and ``multicategorical.py`` (MultiDiscrete actions)
implement it. A new head is a new file and one line in ``HEADS``.
"""
from __future__ import annotations

from ppo_np.heads.base import PolicyHead, check_temperature
from ppo_np.heads.bernoulli import Bernoulli
from ppo_np.heads.categorical import Categorical
from ppo_np.heads.gaussian import DiagGaussian
from ppo_np.heads.multicategorical import MultiCategorical

#: every head, asked in this order which one serves an action space (``for_space``)
HEADS = (Categorical, DiagGaussian, Bernoulli, MultiCategorical)

__all__ = ["HEADS", "Bernoulli", "Categorical", "DiagGaussian", "MultiCategorical", "PolicyHead", "check_temperature",
           "head_for"]


def head_for(action_space) -> PolicyHead:
    """The policy head for a gymnasium action space; a ValueError naming the space if none serves it."""
    for head in HEADS:
        found = head.for_space(action_space)
        if found is not None:
            return found
    raise ValueError(f"action space {action_space} is not supported; ppo-np's policy heads take "
                     f"{', '.join(h.space_name for h in HEADS)}")
