"""Laws of the gradient checker itself, and of the ``ppo-np gradcheck`` command.

A checker that always says "ok" is worthless, so besides its accuracy on functions with closed-form
gradients we show that it catches wrong backward passes.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppo_np import cli, gradcheck, gradcheck_suite, layers
from ppo_np.gradcheck import DEFAULT_TOL, Check, check_gradients, numerical_gradient, relative_error
from ppo_np.gradcheck_suite import run_suite

FAST = settings(deadline=None, max_examples=40)

seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


# --- relative_error --------------------------------------------------------------------------------

@FAST
@given(shape=shapes, seed=seeds, log10_scale=st.floats(-20, 20))
def test_relative_error_laws(shape, seed, log10_scale):
    """0 for equal arrays, symmetric, 1 when exactly one side is zero, within [0, 1]."""
    rng = np.random.default_rng(seed)
    a = 10.0**log10_scale * rng.standard_normal(shape)
    b = 10.0**log10_scale * rng.standard_normal(shape)
    zero = np.zeros(shape)
    assert relative_error(a, a) == 0.0
    assert relative_error(zero, zero) == 0.0
    assert relative_error(a, b) == relative_error(b, a)
    assert relative_error(a, zero) == pytest.approx(1.0, rel=1e-15)
    assert relative_error(zero, b) == pytest.approx(1.0, rel=1e-15)
    assert 0.0 <= relative_error(a, b) <= 1.0
    assert relative_error(a, -a) == pytest.approx(1.0, rel=1e-15)


@FAST
@given(shape=shapes, seed=seeds, delta=st.floats(-0.5, 0.5))
def test_relative_error_of_scaled_copy(shape, seed, delta):
    """rel(a, (1 + d) a) = |d| / (2 + d): scale-free, and small perturbations give small errors."""
    a = np.random.default_rng(seed).standard_normal(shape)
    assert relative_error(a, (1 + delta) * a) == pytest.approx(abs(delta) / (2 + delta), rel=1e-9, abs=1e-15)


# --- numerical_gradient ----------------------------------------------------------------------------

def rounding_bound(*terms: np.ndarray, h: float = gradcheck.DEFAULT_STEP) -> float:
    """Bound on the rounding error of a central difference of L = sum(terms): ~ eps |L| / h per entry,
    with |L| replaced by the sum of |terms| (cancellation can make L itself small)."""
    return 100 * np.finfo(np.float64).eps * (1.0 + sum(float(np.sum(np.abs(t))) for t in terms)) / h


@FAST
@given(n=st.integers(1, 8), seed=seeds)
def test_numerical_gradient_of_quadratic(n, seed):
    """L(x) = 1/2 x^T A x + c^T x has gradient A x + c (A symmetric); central differences are exact
    on quadratics up to rounding."""
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, n))
    A, c, x = M + M.T, rng.standard_normal(n), rng.standard_normal(n)
    x0 = x.copy()
    grad = numerical_gradient(lambda: 0.5 * x @ A @ x + c @ x, x)
    np.testing.assert_allclose(grad, A @ x0 + c, rtol=0, atol=rounding_bound(0.5 * x0 * (A @ x0), c * x0))
    assert np.array_equal(x, x0)  # every entry restored bit for bit


@FAST
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), seed=seeds)
def test_numerical_gradient_on_non_contiguous_views(rows, cols, seed):
    """x may be a strided view or Fortran-ordered: the perturbation reaches the array the loss reads."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((2 * rows, 3 * cols))
    base0 = base.copy()
    w = rng.standard_normal(base.shape)
    view = base[::2, 1::3]  # (rows, cols), strided
    assert not view.flags.c_contiguous or view.size == 1
    # L = sum(w * base^3 / 3): dL/dbase = w * base^2, read through base, not through view
    grad = numerical_gradient(lambda: float(np.sum(w * base**3) / 3.0), view)
    assert grad.shape == view.shape
    np.testing.assert_allclose(grad, (w * base0**2)[::2, 1::3], rtol=0, atol=rounding_bound(w * base0**3))
    assert np.array_equal(base, base0)

    f = np.asfortranarray(rng.standard_normal((rows, cols + 1)))
    f0 = f.copy()
    grad_f = numerical_gradient(lambda: float(np.sum(np.sin(f))), f)
    np.testing.assert_allclose(grad_f, np.cos(f0), rtol=0, atol=rounding_bound(np.sin(f0)))
    assert np.array_equal(f, f0)


def test_numerical_gradient_is_accurate_on_a_well_scaled_function():
    """Away from cancellation the error is far below the 1e-6 tolerance of the suite."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    x0 = x.copy()
    grad = numerical_gradient(lambda: float(np.sum(np.exp(0.5 * x))), x)
    assert relative_error(grad, 0.5 * np.exp(0.5 * x0)) < 1e-8


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64])
def test_numerical_gradient_refuses_other_dtypes(dtype):
    x = np.ones(3, dtype=dtype)
    with pytest.raises(ValueError, match=np.dtype(dtype).name):
        numerical_gradient(lambda: float(np.sum(x)), x)


def test_check_gradients_refuses_float32():
    rng = np.random.default_rng(0)
    x = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="float32"):
        check_gradients("tanh", lambda: np.tanh(x), lambda dy: {"x": dy * (1 - np.tanh(x) ** 2)}, {"x": x}, rng)


# --- the checker catches wrong backward passes -----------------------------------------------------

WRONG_LINEAR = {
    "dW off by 0.1%": lambda dy, x, W: (dy @ W.T, 1.001 * (x.T @ dy), dy.sum(0)),
    # dy W has the right shape only for square W, and equals dy W^T for 1 x 1; otherwise drop dx
    "dx uses W instead of W^T": lambda dy, x, W: (dy @ W if W.shape[0] == W.shape[1] > 1 else 0 * x,
                                                  x.T @ dy, dy.sum(0)),
    "db averaged instead of summed": lambda dy, x, W: (dy @ W.T, x.T @ dy, dy.mean(0)),
    "dx missing": lambda dy, x, W: (np.zeros_like(x), x.T @ dy, dy.sum(0)),
    "dx sign flipped": lambda dy, x, W: (-(dy @ W.T), x.T @ dy, dy.sum(0)),
}


@FAST
@given(B=st.integers(2, 5), n=st.integers(1, 5), m=st.integers(1, 5), seed=seeds,
       bug=st.sampled_from(sorted(WRONG_LINEAR)))
def test_wrong_linear_backward_is_caught(B, n, m, seed, bug):
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal((B, n)), "W": rng.standard_normal((n, m)), "b": rng.standard_normal(m)}
    wrong = WRONG_LINEAR[bug]

    def backward(dy):
        dx, dW, db = wrong(dy, arrays["x"], arrays["W"])
        return {"x": dx, "W": dW, "b": db}

    checks = check_gradients("linear", lambda: layers.linear_forward(arrays["x"], arrays["W"], arrays["b"])[0],
                             backward, arrays, rng)
    assert not all(c.ok for c in checks)
    assert all(c.ok == (c.max_rel_error < DEFAULT_TOL) for c in checks)


@FAST
@given(shape=shapes, seed=seeds, log10_delta=st.floats(-4, 0))
def test_small_relative_mistake_is_caught(shape, seed, log10_delta):
    """Even a gradient off by a factor 1 + 1e-4 fails (rel error ~ 5e-5 >> 1e-6)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    factor = 1.0 + 10.0**log10_delta
    [check] = check_gradients("tanh-wrong", lambda: np.tanh(x),
                              lambda dy: {"x": factor * dy * (1 - np.tanh(x) ** 2)}, {"x": x}, rng)
    assert not check.ok and check.max_rel_error > 10 * DEFAULT_TOL


def test_tanh_backward_using_x_instead_of_y_is_caught():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5))
    checks = check_gradients("tanh-wrong", lambda: np.tanh(x), lambda dy: {"x": dy * (1 - x * x)}, {"x": x}, rng)
    assert [c.ok for c in checks] == [False]


def test_nan_gradient_is_not_ok():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(3)
    [check] = check_gradients("nan", lambda: 2 * x, lambda dy: {"x": np.full(3, np.nan)}, {"x": x}, rng)
    assert not check.ok


# --- helpers for kink-free test points -------------------------------------------------------------

@FAST
@given(shape=shapes, margin=st.floats(1e-3, 2.0), seed=seeds)
def test_away_from_zero_keeps_the_margin(shape, margin, seed):
    x = gradcheck.away_from_zero(np.random.default_rng(seed), shape, margin)
    assert x.shape == shape and np.all(np.abs(x) >= margin)


def test_randomize_biases_touches_only_biases_in_place():
    rng = np.random.default_rng(0)
    params = {"W0": np.zeros((2, 3)), "b0": np.zeros(3), "W1": np.zeros((3, 1)), "b1": np.zeros(1)}
    objects = dict(params)
    gradcheck.randomize_biases(params, rng)
    assert all(params[k] is objects[k] for k in params)
    assert np.all(params["W0"] == 0) and np.all(params["W1"] == 0)
    assert np.all(params["b0"] != 0) and np.all(params["b1"] != 0)


# --- the suite and the CLI -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [1, 12345])  # seed 0 with 3 trials runs in test_cli_json
def test_run_suite_all_ok(seed):
    checks = run_suite(seed=seed, trials=1)
    assert all(isinstance(c, Check) for c in checks)
    keys = [(c.component, c.param) for c in checks]
    assert len(keys) == len(set(keys))  # one row per (component, param)
    assert {c.component for c in checks} >= {"linear", *layers.ACTIVATIONS, "mlp-tanh", "mlp-relu"}
    for c in checks:
        assert c.ok and 0.0 <= c.max_rel_error < DEFAULT_TOL, c


def test_cli_json(capsys):
    assert cli.main(["gradcheck", "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # one JSON object on one line
    report = json.loads(out)
    assert set(report) == {"checks", "ok"} and report["ok"] is True
    assert report["checks"]
    for c in report["checks"]:
        assert set(c) == {"component", "param", "max_rel_error", "ok"}
        assert isinstance(c["component"], str) and isinstance(c["param"], str)
        assert c["ok"] is True and 0.0 <= c["max_rel_error"] < DEFAULT_TOL


def test_cli_json_is_seeded(capsys):
    """Same --seed, same report, to the last digit of every error."""
    cli.main(["gradcheck", "--json", "--seed", "3", "--trials", "1"])
    first = capsys.readouterr().out
    cli.main(["gradcheck", "--json", "--seed", "3", "--trials", "1"])
    assert capsys.readouterr().out == first


def test_cli_table(capsys):
    assert cli.main(["gradcheck", "--trials", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["component", "param"]
    assert all(line.rstrip().endswith("pass") for line in lines[1:-1])
    assert lines[-1].endswith("ok")


def test_cli_exits_1_when_a_check_fails(capsys, monkeypatch):
    def broken(rng):
        return [Check("broken", "x", 0.5, False)]

    monkeypatch.setattr(gradcheck_suite, "SUITE", [gradcheck_suite._check_linear, broken])
    assert cli.main(["gradcheck", "--json", "--trials", "1"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [c for c in report["checks"] if not c["ok"]] == [
        {"component": "broken", "param": "x", "max_rel_error": 0.5, "ok": False}]


@pytest.mark.parametrize("argv, message", [
    (["gradcheck", "--trials", "0"], "positive integer"),
    (["gradcheck", "--trials", "-2"], "positive integer"),
    (["gradcheck", "--trials", "many"], "'many'"),
    (["gradcheck", "--seed", "-1"], ">= 0"),
    (["gradcheck", "--bogus"], "--bogus"),
    (["frobnicate"], "frobnicate"),
    ([], "COMMAND"),
])
def test_cli_bad_usage_exits_2_with_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "--help)" in err and len(err.strip().splitlines()) == 1   # one line, no usage block
    assert "Traceback" not in err
