"""The former home of the rollout kernels, now split by concept into ``advantages``, ``minibatches``
and ``ratios``.

Only the two names that ``tests/test_losses.py`` and ``tests/test_rollout.py`` still import from here
remain (those files are being rewritten elsewhere); delete this module once they import ``gae`` from
``ppo_np.advantages`` and ``importance_ratios`` from ``ppo_np.ratios``.
"""
from ppo_np.advantages import gae  # noqa: F401
from ppo_np.ratios import importance_ratios  # noqa: F401
