r"""A multilayer perceptron with a hand-written backward pass.

An MLP with layer sizes (n_0, n_1, ..., n_L) is L linear layers; every layer but the last is followed
by the activation f:

    h_0 = x,    a_l = h_{l-1} W_l + b_l,    h_l = f(a_l)  (l < L),    y = a_L.

Backward applies the chain rule layer by layer from the top: with g_L = dy,

    dW_l = h_{l-1}^T g_l,    db_l = 1^T g_l,    dh_{l-1} = g_l W_l^T,    g_{l-1} = dh_{l-1} * f'(a_{l-1}),

and dx = dh_0. The per-layer pieces and their derivatives live in ``layers.py``; this file only
composes them. Parameters are named ``W0, b0, W1, b1, ...`` (0-based), each weight of shape
(n_{l}, n_{l+1}).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ppo_np.jit import jit
from ppo_np.layers import (CompiledActivation, activation, bias_activation_kernel, compiled_activation,
                           linear_backward, linear_forward, matmul_rows, orthogonal)
from ppo_np.params import Params, pack

DTYPES = {"float32": np.float32, "float64": np.float64}


def as_dtype(dtype) -> np.dtype:
    """numpy dtype from a name or type; only float32 and float64 are allowed."""
    try:
        resolved = np.dtype(DTYPES.get(dtype, dtype)) if isinstance(dtype, str) else np.dtype(dtype)
    except TypeError:  # a name numpy does not know, e.g. "bogus"
        resolved = None
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    return resolved


class MLPCache(NamedTuple):
    """Per layer: the linear cache (input, W) and the activation cache (None for the output layer)."""

    linear: tuple
    act: tuple


class Network(NamedTuple):
    """An MLP as the compiled kernels take it: its weights and biases as tuples (the live arrays:
    updates are in place, so a ``Network`` made once stays current) and its hidden activation."""

    weights: tuple
    biases: tuple
    activation: CompiledActivation


class MLP:
    """Fully connected network x -> y with orthogonal init and zero biases.

    Args:
        sizes: (n_in, hidden..., n_out), at least two entries, all positive.
        activation: name of the hidden activation: "tanh", "relu" or "identity".
        rng: the seeded generator that draws the initial weights.
        hidden_gain: gain of the hidden layers' orthogonal init (sqrt(2) by default).
        out_gain: gain of the output layer (0.01 for a policy head, 1.0 for a value head).
        dtype: float32 or float64; parameters, activations and gradients all use it.
    """

    def __init__(self, sizes, activation_name: str = "tanh", *, rng: np.random.Generator,
                 hidden_gain: float = math.sqrt(2.0), out_gain: float = 1.0, dtype="float64"):
        try:
            given = tuple(sizes)
            sizes = tuple(int(s) for s in given)
        except (TypeError, ValueError):
            given, sizes = sizes, None
        if sizes is None or sizes != given or len(sizes) < 2 or min(sizes) < 1:  # != rejects 2.5 -> 2
            raise ValueError(f"MLP sizes must be at least (n_in, n_out), all integers >= 1, got {given!r}")
        self.sizes = sizes
        self.activation_name = activation_name
        self.act = activation(activation_name)
        self.dtype = as_dtype(dtype)
        self.params: Params = {}
        n_layers = len(sizes) - 1
        for l in range(n_layers):
            gain = out_gain if l == n_layers - 1 else hidden_gain
            self.params[f"W{l}"] = orthogonal((sizes[l], sizes[l + 1]), gain, rng, self.dtype)
            self.params[f"b{l}"] = np.zeros(sizes[l + 1], dtype=self.dtype)
        self.params = pack(self.params)  # one buffer: an optimiser steps the whole network in one pass
        #: the network as ``infer_kernel`` and the rollout's act kernels take it
        self.network = Network(tuple(self.params[f"W{l}"] for l in range(n_layers)),
                               tuple(self.params[f"b{l}"] for l in range(n_layers)),
                               compiled_activation(activation_name, self.dtype))

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, MLPCache]:
        """y = MLP(x). Shapes: x (B, n_in) -> y (B, n_out)."""
        h = np.asarray(x, dtype=self.dtype)
        linear_caches, act_caches = [], []
        for l in range(self.n_layers):
            h, lin = linear_forward(h, self.params[f"W{l}"], self.params[f"b{l}"])  # (B, n_{l+1})
            linear_caches.append(lin)
            if l < self.n_layers - 1:
                h, act = self.act.forward(h)
                act_caches.append(act)
        return h, MLPCache(tuple(linear_caches), tuple(act_caches))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The output alone, for inference: ``infer_kernel`` for a few rows, BLAS for many.

        Acting in a vector env calls the networks once per step with only N rows; there the ~15
        NumPy calls of ``forward`` cost more than the arithmetic, which one compiled loop nest does
        without them. From ``INFER_KERNEL_MAX_ROWS`` rows on, BLAS wins.
        """
        h = np.asarray(x, dtype=self.dtype)
        if h.ndim != 2 or h.shape[0] > INFER_KERNEL_MAX_ROWS or not h.flags.c_contiguous:
            return self.forward(h)[0]
        return infer_kernel(h, self.network, np.empty((h.shape[0], self.sizes[-1]), self.dtype))

    def backward(self, dy: np.ndarray, cache: MLPCache) -> tuple[np.ndarray, Params]:
        r"""Gradients of a scalar loss through the whole stack.

        .. math:: g_L = dy,\quad dW_l = h_{l-1}^T g_l,\quad db_l = 1^T g_l,\quad
                  g_{l-1} = (g_l W_l^T) \odot f'(a_{l-1}),\quad dx = g_1 W_1^T

        Shapes: dy (B, n_out) -> dx (B, n_in) and a dict of gradients shaped like ``params``.
        Checked by ``tests/test_mlp.py::test_mlp_gradients``.
        """
        grads: Params = {}
        g = np.asarray(dy, dtype=self.dtype)
        for l in reversed(range(self.n_layers)):
            if l < self.n_layers - 1:
                g = self.act.backward(g, cache.act[l])  # g_l = dh_l * f'(a_l)
            g, grads[f"W{l}"], grads[f"b{l}"] = linear_backward(g, cache.linear[l])
        return g, {name: grads[name] for name in self.params}  # in parameter order


INFER_KERNEL_MAX_ROWS = 32


@jit
def infer_kernel(x, network, out):
    """``MLP.forward(x)[0]`` (its reference) in loops, for inference on a few rows.

    Per layer h_l = f(h_{l-1} W_l + b_l): the product row by row (``layers.matmul_rows``, its inner loop
    along a contiguous row of W_l), then "+ b" and f in a pass of their own
    (``layers.bias_activation_kernel``): f inside the product's loop would stop LLVM from vectorising
    it. Shapes: x (B, n_in) -> out (B, n_out); ``network`` is ``MLP.network``.
    Checked by ``tests/test_mlp.py::test_infer_kernel_matches_forward``.
    """
    weights, biases, act = network
    n_layers = len(weights)
    h = x
    for l in range(n_layers):
        W, b = weights[l], biases[l]
        nxt = out if l == n_layers - 1 else np.empty((x.shape[0], W.shape[1]), dtype=x.dtype)
        matmul_rows(h, W, nxt)
        if l < n_layers - 1:
            bias_activation_kernel(nxt, b, act)
        else:
            for r in range(nxt.shape[0]):
                for j in range(nxt.shape[1]):
                    nxt[r, j] += b[j]
        h = nxt
    return out
