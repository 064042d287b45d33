"""ppo-np: Proximal Policy Optimization in NumPy and Numba, with every gradient written by hand."""

__version__ = "0.1.0"
