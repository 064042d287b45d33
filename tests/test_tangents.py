"""Forward mode (``ppo_np/tangents.py``): every tangent is the derivative of its forward (central differences
along a random direction, float64) and the adjoint of the backward (<dy, J v> = <J^T dy, v>)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import actor_point as point
from support import direction

from ppo_np import tangents
from ppo_np.gradcheck import check_directional
from ppo_np.layers import ACTIVATIONS, linear_forward
from ppo_np.mlp import MLP
from ppo_np.params import flatten

LAW = settings(deadline=None, max_examples=25)
TOL = 1e-6
seeds = st.integers(0, 2**32 - 1)
policies = st.booleans()                     # discrete?
activations = st.sampled_from(["tanh", "relu"])


@LAW
@given(seed=seeds, name=st.sampled_from(sorted(ACTIVATIONS)))
def test_layer_tangents_match_finite_differences(seed, name):
    """dy = dx W + x dW + db for the linear layer, f'(x) dx for each activation."""
    rng = np.random.default_rng(seed)
    B, n, m = (int(k) for k in rng.integers(1, 6, size=3))
    arrays = {"x": rng.standard_normal((B, n)), "W": rng.standard_normal((n, m)), "b": rng.standard_normal(m)}
    v = direction(arrays, rng)
    dy = tangents.linear_tangent(v["x"], linear_forward(arrays["x"], arrays["W"], arrays["b"])[1], v["W"], v["b"])
    assert check_directional("linear", lambda: linear_forward(arrays["x"], arrays["W"], arrays["b"])[0],
                             dy, arrays, v).ok
    # x held fixed (dx = None): only x dW + db
    np.testing.assert_allclose(dy - v["x"] @ arrays["W"], tangents.linear_tangent(
        None, linear_forward(arrays["x"], arrays["W"], arrays["b"])[1], v["W"], v["b"]), rtol=1e-12, atol=1e-12)
    act = ACTIVATIONS[name]
    x = {"x": rng.standard_normal((3, 4))}
    x["x"] = np.sign(x["x"]) * (0.1 + np.abs(x["x"]))           # off ReLU's kink
    dx = {"x": rng.standard_normal((3, 4))}
    dy = tangents.ACTIVATION_TANGENTS[name](dx["x"], act.forward(x["x"])[1])
    assert check_directional(name, lambda: act.forward(x["x"])[0], dy, x, dx).ok


@LAW
@given(seed=seeds, activation=activations, hidden=st.lists(st.integers(1, 6), min_size=0, max_size=3))
def test_mlp_tangent_matches_finite_differences(seed, activation, hidden):
    rng = np.random.default_rng(seed)
    mlp = MLP((3, *hidden, 2), activation, rng=rng, hidden_gain=1.0, out_gain=1.0)
    for p in mlp.params.values():
        p[...] = rng.standard_normal(p.shape)
    inputs = {"x": rng.standard_normal((5, 3)), **mlp.params}
    v = direction(inputs, rng)
    dy = tangents.mlp_tangent(mlp, mlp.forward(inputs["x"])[1], v, v["x"])
    check = check_directional("mlp", lambda: mlp.forward(inputs["x"])[0], dy, inputs, v)
    assert check.max_rel_error < TOL, check


@LAW
@given(seed=seeds, discrete=policies, activation=activations)
def test_actor_tangent_matches_finite_differences(seed, discrete, activation):
    actor, obs, _, rng = point(seed, discrete, activation)
    v = direction(actor.params, rng)
    dy = tangents.actor_tangent(actor, actor.forward(obs)[1], v)
    check = check_directional("actor", lambda: actor.forward(obs)[0], dy, actor.params, v)
    assert check.max_rel_error < TOL, check
    if not discrete:   # log_std is its own parameter, the same in every state
        np.testing.assert_array_equal(dy[:, 2:], np.broadcast_to(v["log_std"], (dy.shape[0], 2)))


@LAW
@given(seed=seeds, discrete=policies, activation=activations)
def test_tangent_is_the_adjoint_of_backward(seed, discrete, activation):
    """<dy, J v> = <J^T dy, v> for any dy and v: forward and backward mode are transposes."""
    actor, obs, _, rng = point(seed, discrete, activation)
    out, cache = actor.forward(obs)
    v = direction(actor.params, rng)
    dy = rng.standard_normal(out.shape)
    lhs = float(np.sum(dy * tangents.actor_tangent(actor, cache, v)))
    rhs = float(flatten(actor.backward(dy, cache)) @ flatten(v))
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-12)
