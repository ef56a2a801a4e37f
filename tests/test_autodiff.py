"""Gradients and Hessians through torch.autograd and jax.grad (skipped on other backends).

Every `where` in the library evaluates both branches, so gradients are checked exactly at
p == q, at the branch boundaries of expm1mx (x = ±1) and of the scale-vs-scale kernel, and
next to them.

Half-precision inputs are computed in float32 and their derivatives flow back through the
cast: a half input's gradient is the float32 gradient rounded once to the half dtype.  So a
half derivative is held to 1 ulp of the half dtype plus the float32 tolerance of the same
test (:func:`assert_derivatives_close`), against the analytic value at the exact half inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mpmath
import numpy as np
import pytest

import kullback as kb
from tests.conftest import dtype_name, finfo, is_half

AUTODIFF = ("torch", "jax")


@pytest.fixture
def autodiff(backend):
    if backend.name not in AUTODIFF:
        pytest.skip(f"autodiff tests need torch or jax, not {backend.name}")
    return backend


def gradient(backend, f, *arrays):
    """Gradients of sum(f(*arrays)) with respect to each array (NumPy, of one dtype), as
    NumPy arrays of that dtype."""
    inputs = [backend.asarray(a, a.dtype) for a in arrays]
    if backend.name == "torch":
        for tensor in inputs:
            tensor.requires_grad_(True)
        f(*inputs).sum().backward()
        return [backend.to_numpy(t.grad) for t in inputs]
    import jax
    import jax.numpy as jnp

    grads = jax.grad(lambda *a: jnp.sum(f(*a)), argnums=tuple(range(len(arrays))))(*inputs)
    return [backend.to_numpy(g) for g in grads]


def hessian(backend, f, x):
    """Hessian of the scalar f at the vector x (NumPy), as a NumPy array of x's dtype."""
    array = backend.asarray(x, x.dtype)
    if backend.name == "torch":
        import torch

        return backend.to_numpy(torch.autograd.functional.hessian(f, array))
    import jax

    return backend.to_numpy(jax.hessian(f)(array))


def half_ulp(values, dtype) -> np.ndarray:
    """The ulp of a half dtype at each of ``values``: its spacing there, and the smallest
    subnormal below the normal range (and at 0)."""
    info = finfo(dtype)
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log2(np.abs(np.asarray(values, dtype=np.float64))))
    return np.maximum(2.0 ** (exponent - info.nmant), float(info.smallest_subnormal))


def assert_derivatives_close(got, want, dtype, tolerance: Callable[[float], np.ndarray]) -> None:
    """``|got - want| <= tolerance(eps)`` elementwise, ``eps`` that of float32 or float64.

    In a half dtype the derivative is computed in float32 and rounded once to the half
    dtype: the allowance is 1 ulp of the half dtype at ``want`` plus ``tolerance`` for
    float32 (the float32 error comes first, and is ``eps32/eps_half`` of it in half ulps:
    2**-13 for float16, 2**-16 for bfloat16).
    """
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if is_half(dtype):
        allowed = half_ulp(want, dtype) + tolerance(float(finfo("float32").eps))
    else:
        allowed = tolerance(float(finfo(dtype).eps))
    error = np.abs(got - want)
    bad = ~(error <= allowed)  # NaN fails
    assert not np.any(bad), f"got {got[bad]}, want {want[bad]}, allowed {allowed[bad]}"


def exact_gradient_log(a, ls, b, lt):
    """d KL / d(loc_p, log_scale_p, loc_q, log_scale_q) in mpmath."""
    with mpmath.workdps(50):
        a, ls, b, lt = map(mpmath.mpf, (a, ls, b, lt))
        t2 = mpmath.exp(2 * lt)
        return [(a - b) / t2, mpmath.expm1(2 * (ls - lt)), -(a - b) / t2,
                -mpmath.expm1(2 * (ls - lt)) - (a - b) ** 2 / t2]  # fmt: skip


def exact_gradient_scale(a, s, b, t):
    with mpmath.workdps(50):
        a, s, b, t = map(mpmath.mpf, (a, s, b, t))
        return [
            (a - b) / t**2,
            (s / t - t / s) / t,
            -(a - b) / t**2,
            1 / t - (s**2 + (a - b) ** 2) / t**3,
        ]


def points(name):
    """Equal distributions, branch edges of expm1mx (2r = ±1 and neighbours) and generic rows.

    The tiny log-ratios are 1e-7 (a log-scale an ulp or a few from 1.5 in float32 and
    float64) and 1e-30; in a half dtype an ulp from 1.5, and at least its smallest normal.
    """
    dt = np.dtype(name).type
    info = finfo(name)
    half = np.float64(0.5)
    near = float(info.eps) if is_half(name) else 1e-7
    tiny = max(1e-30, float(info.smallest_normal))
    r = np.array([0.0, half, -half, np.nextafter(dt(half), dt(1)), np.nextafter(dt(-half), dt(-1)),
                  np.nextafter(dt(half), dt(0)), near, -3.0, 2.5, tiny], dtype=name)  # fmt: skip
    lt = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5, -2.0, 3.0, 0.0], dtype=name)
    a = np.array([0.0, 1.0, -2.0, 0.5, 0.0, 0.0, 1e-6, 3.0, -1.0, 0.0], dtype=name)
    b = np.array([0.0, 1.0, 0.0, 0.0, 0.25, 0.0, 0.0, 0.0, 2.0, 0.0], dtype=name)
    return a, (r + lt).astype(name), b, lt


@pytest.mark.parametrize("by_log", [True, False], ids=["log_scale", "scale"])
def test_gradients_match_analytic(autodiff, dtype, by_log):
    name = dtype_name(dtype)
    a, ls, b, lt = points(name)
    if by_log:
        args, exact_fn = (a, ls, b, lt), exact_gradient_log

        def kl(a, ls, b, lt):
            return kb.kl_divergence(kb.Normal(a, log_scale=ls), kb.Normal(b, log_scale=lt))
    else:
        args, exact_fn = (
            (a, np.exp(ls).astype(name), b, np.exp(lt).astype(name)),
            exact_gradient_scale,
        )

        def kl(a, s, b, t):
            return kb.kl_divergence(kb.Normal(a, s), kb.Normal(b, t))

    grads = gradient(autodiff, kl, *args)
    exact = np.array(
        [[float(g) for g in exact_fn(*(float(v[i]) for v in args))] for i in range(len(a))]
    ).T
    for got, want in zip(grads, exact, strict=True):
        assert np.all(np.isfinite(got))
        # exact zeros stay zero-ish
        assert_derivatives_close(
            got,
            want,
            dtype,
            lambda eps, w=want: 16 * eps * (np.abs(w) + eps * np.max(np.abs(w))) + 1e-300,
        )


@pytest.mark.parametrize("by_log", [True, False], ids=["log_scale", "scale"])
def test_hessian_at_equality_is_fisher(autodiff, dtype, by_log):
    """The Fisher information ``diag(1/t**2, 2)`` by log-scale, ``diag(1/t**2, 2/t**2)`` by
    scale, with q's exact scale ``t``: ``e**1.25``, or that rounded to the dtype."""
    name = dtype_name(dtype)
    loc, log_scale = 0.75, 1.25
    scale = float(np.exp(np.float64(log_scale)).astype(name))
    q_param = log_scale if by_log else scale

    def kl(theta):
        p = kb.Normal(theta[0], log_scale=theta[1]) if by_log else kb.Normal(theta[0], theta[1])
        q = kb.Normal(loc, log_scale=q_param) if by_log else kb.Normal(loc, q_param)
        return kb.kl_divergence(p, q)

    theta = np.array([loc, q_param], dtype=name)
    h = hessian(autodiff, kl, theta)
    inverse_variance = math.exp(-2 * log_scale) if by_log else 1 / scale**2
    fisher = np.diag([inverse_variance, 2.0 if by_log else 2 * inverse_variance])
    assert_derivatives_close(h, fisher, dtype, lambda eps: 8 * eps * np.abs(fisher))


def test_scale_gradient_at_branch_edges(autodiff, dtype):
    """The scale-vs-scale kernel switches form at s/t = 1/2, 2 and 4 (and where s/t
    underflows; 1/4, a former switch, is kept): gradients on both sides of each switch, and
    at it, match the analytic ones."""
    name = dtype_name(dtype)
    dt = np.dtype(name).type
    t = dt(1.5)
    scale_p = []
    for ratio in (0.25, 0.5, 2.0, 4.0):
        edge = dt(ratio) * t
        scale_p += [np.nextafter(edge, dt(0)), edge, np.nextafter(edge, dt(np.inf))]
    info, working = finfo(name), finfo("float32" if is_half(name) else name)
    # where the ratio is rescaled before its log, in the working dtype (float32 for the
    # halves); float16's scales do not reach that far, and take twice its smallest normal
    tiny_ratio = max(2.0 ** (4 - working.maxexp), 2 * float(info.smallest_normal))
    scale_p += [dt(tiny_ratio * 1.5 * 0.5), dt(tiny_ratio * 1.5 * 2.0), dt(1e-3)]
    scale_p = np.array(scale_p, dtype=name)
    scale_q = np.full(len(scale_p), t, dtype=name)
    loc_p = np.linspace(-1.0, 1.0, len(scale_p)).astype(name)
    loc_q = np.zeros(len(scale_p), dtype=name)
    args = (loc_p, scale_p, loc_q, scale_q)

    def kl(a, s, b, q):
        return kb.kl_divergence(kb.Normal(a, s), kb.Normal(b, q))

    grads = gradient(autodiff, kl, *args)
    exact = np.array(
        [
            [float(g) for g in exact_gradient_scale(*(float(v[i]) for v in args))]
            for i in range(len(scale_p))
        ]
    ).T
    for got, want in zip(grads, exact, strict=True):
        assert np.all(np.isfinite(got))
        assert_derivatives_close(got, want, dtype, lambda eps, w=want: 16 * eps * np.abs(w))


def test_scale_gradient_at_the_ends_of_the_float_range(autodiff, dtype):
    """Scale ratios below the smallest normal float (rescaled before the ``log``) and scales
    near the largest float at moderate ratios: gradients are finite and match the analytic
    ones (to an absolute smallest-normal where the exact one is below the normal range,
    which XLA flushes to 0, and below which the float32 computation of a half input's
    gradient is as inexact)."""
    name = dtype_name(dtype)
    info, working = finfo(name), finfo("float32" if is_half(name) else name)
    smallest, largest = float(info.smallest_normal), float(info.max)
    scale_p = np.array([smallest, 1.5 * smallest, 0.9 * largest, 0.9 * largest], dtype=name)
    scale_q = np.array([0.5 * largest, largest, 0.1 * largest, 0.3 * largest], dtype=name)
    loc_p = np.array([0.0, 1.0, 0.0, -1.0], dtype=name)
    loc_q = np.zeros(4, dtype=name)
    args = (loc_p, scale_p, loc_q, scale_q)

    def kl(a, s, b, q):
        return kb.kl_divergence(kb.Normal(a, s), kb.Normal(b, q))

    grads = gradient(autodiff, kl, *args)
    exact = np.array(
        [[float(g) for g in exact_gradient_scale(*(float(v[i]) for v in args))] for i in range(4)]
    ).T
    compared = np.ones((4, 4), dtype=bool)
    if autodiff.name == "jax":
        # JAX's quotient rule computes y**-2, which underflows to 0 for y above
        # 2**(maxexp/2) of the working dtype: the gradient with respect to such a scale_q
        # is lost (docs, Limits)
        compared[3] = scale_q.astype(np.float64) < 2.0 ** (working.maxexp / 2)
    # the absolute allowance is the working dtype's smallest normal (bfloat16's is float32's)
    lowest = float(working.smallest_normal)
    for got, want, keep in zip(grads, exact, compared, strict=True):
        assert np.all(np.isfinite(got)), got
        assert_derivatives_close(
            got[keep], want[keep], dtype, lambda eps, w=want[keep]: 16 * eps * np.abs(w) + lowest
        )


def test_expm1mx_gradient_at_branch_edges(autodiff, dtype):
    """At 0, at ±1 and next to them, and at a tiny, a large negative and a large x: 1e-20
    (or the smallest normal float16) and 80 (or, in float16, 10, below its overflow at
    11.1)."""
    name = dtype_name(dtype)
    dt = np.dtype(name).type
    info = finfo(name)
    tiny = max(1e-20, float(info.smallest_normal))
    large = min(80.0, math.floor(math.log(float(info.max))) - 1.0)
    x = np.array(
        [
            0.0,
            1.0,
            -1.0,
            np.nextafter(dt(1), dt(2)),
            np.nextafter(dt(-1), dt(-2)),
            tiny,
            2.0,
            -30.0,
            large,
        ],
        dtype=name,
    )
    (grad,) = gradient(autodiff, kb.special.expm1mx, x)
    with mpmath.workdps(50):
        exact = np.array([float(mpmath.expm1(mpmath.mpf(float(v)))) for v in x])
    assert_derivatives_close(grad, exact, dtype, lambda eps: 8 * eps * np.abs(exact))


def exact_gradient_mixed(a, p_param, b, q_param, p_by_log):
    """d KL / d(loc_p, p's parameter, loc_q, q's parameter), one given by scale, in mpmath."""
    with mpmath.workdps(50):
        a, x, b, y = map(mpmath.mpf, (a, p_param, b, q_param))
        ls, lt = (x, mpmath.log(y)) if p_by_log else (mpmath.log(x), y)
        t2 = mpmath.exp(2 * lt)
        d_ls = mpmath.expm1(2 * (ls - lt))
        d_lt = -d_ls - (a - b) ** 2 / t2
        # a derivative with respect to a scale is the one with respect to its log, over it
        return [(a - b) / t2, d_ls if p_by_log else d_ls / x, -(a - b) / t2,
                d_lt / y if p_by_log else d_lt]  # fmt: skip


@pytest.mark.parametrize("p_by_log", [False, True], ids=["scale-log", "log-scale"])
def test_mixed_gradients_match_analytic(autodiff, dtype, p_by_log):
    """Mixed parameterizations go through the multi-word log-ratio: gradients with respect
    to the scale and the log-scale are finite and match the analytic ones, at equality too."""
    name = dtype_name(dtype)
    a, ls, b, lt = points(name)
    scale_of = {"p": np.exp(ls.astype(np.float64)).astype(name), "q": np.exp(lt).astype(name)}
    if p_by_log:
        args = (a, ls, b, scale_of["q"])

        def kl(a, ls, b, t):
            return kb.kl_divergence(kb.Normal(a, log_scale=ls), kb.Normal(b, t))
    else:
        args = (a, scale_of["p"], b, lt)

        def kl(a, s, b, lt):
            return kb.kl_divergence(kb.Normal(a, s), kb.Normal(b, log_scale=lt))

    grads = gradient(autodiff, kl, *args)
    exact = np.array(
        [
            [float(g) for g in exact_gradient_mixed(*(float(v[i]) for v in args), p_by_log)]
            for i in range(len(a))
        ]
    ).T
    for got, want in zip(grads, exact, strict=True):
        assert np.all(np.isfinite(got))
        assert_derivatives_close(
            got,
            want,
            dtype,
            lambda eps, w=want: 16 * eps * (np.abs(w) + eps * np.max(np.abs(w))) + 1e-300,
        )


def test_mixed_hessian_at_equality_is_fisher(autodiff, dtype):
    """Second derivatives through the multi-word log-ratio: the Fisher information, or
    rather the exact Hessian ``diag(1/t**2, 1/t**2 + 1/s**2)`` at the point, since q's
    log-scale is the log of p's scale rounded (p == q only to rounding: t = s e**-delta with
    delta up to half an ulp of 1.25, which in bfloat16 moves the Fisher information by a few
    of its ulps)."""
    name = dtype_name(dtype)
    loc, log_scale = 0.75, 1.25
    scale = float(np.exp(np.float64(log_scale)).astype(name))
    q_log_scale = float(np.asarray(np.log(np.float64(scale)), dtype=name))

    def kl(theta):
        return kb.kl_divergence(
            kb.Normal(theta[0], theta[1]), kb.Normal(loc, log_scale=q_log_scale)
        )

    h = hessian(autodiff, kl, np.array([loc, scale], dtype=name))
    with mpmath.workdps(50):
        inverse_variance_q = mpmath.exp(-2 * mpmath.mpf(q_log_scale))
        exact = np.diag([float(inverse_variance_q), float(inverse_variance_q + 1 / scale**2)])
    assert_derivatives_close(h, exact, dtype, lambda eps: 64 * eps * np.abs(exact))


# --- Categorical, Bernoulli, sample_kl ----------------------------------------------------


def categorical_points(name):
    rng = np.random.default_rng(21)
    a = rng.normal(size=(5, 6)) * 2
    b = a + rng.normal(size=a.shape) * np.array([[1e-3], [1.0], [0.1], [3.0], [1e-6]])
    return a.astype(name), b.astype(name)


def test_categorical_gradients_match_analytic(autodiff, dtype):
    """dKL/da_j = p_j (log(p_j/q_j) - KL), dKL/db_j = q_j - p_j, both logits given."""
    from tests.reference.categorical import kl_categorical_gradient

    name = dtype_name(dtype)
    a, b = categorical_points(name)

    def kl(a, b):
        return kb.kl_divergence(kb.Categorical(a), kb.Categorical(b))

    grad_a, grad_b = gradient(autodiff, kl, a, b)
    for row in range(a.shape[0]):
        want_a, want_b = kl_categorical_gradient(a[row].tolist(), b[row].tolist())
        for got, want in ((grad_a[row], want_a), (grad_b[row], want_b)):
            assert np.all(np.isfinite(got))
            # relative to the largest component: the components sum to 0 (cancellation)
            largest = np.max(np.abs(want))
            assert_derivatives_close(got, want, dtype, lambda eps, m=largest: 64 * eps * m)


def test_categorical_gradient_is_zero_at_equality_and_hessian_is_fisher(autodiff, dtype):
    from tests.reference.categorical import fisher_information

    name = dtype_name(dtype)
    a = np.array([0.3, -1.2, 2.0, 0.0, -np.inf], dtype=name)
    grad_a, grad_b = gradient(
        autodiff, lambda x, y: kb.kl_divergence(kb.Categorical(x), kb.Categorical(y)), a, a.copy()
    )
    assert np.all(grad_a == 0)
    assert np.all(grad_b == 0)
    finite = a[:4]
    target = finite.copy()

    def kl(theta):
        q = kb.Categorical(autodiff.asarray(target, target.dtype))
        return kb.kl_divergence(kb.Categorical(theta), q)

    h = hessian(autodiff, kl, finite)
    fisher = fisher_information(finite.tolist())
    largest = np.max(np.abs(fisher))
    assert_derivatives_close(h, fisher, dtype, lambda eps: 64 * eps * largest)


def test_matching_minus_inf_logits_give_finite_gradients(autodiff, dtype):
    """torch.distributions gives NaN here; the -inf entries get a zero gradient."""
    name = dtype_name(dtype)
    a = np.array([[0.0, -np.inf, 1.0, -np.inf], [2.0, -np.inf, -np.inf, 0.5]], dtype=name)
    b = np.array([[0.5, -np.inf, 1.0, -np.inf], [2.0, -np.inf, -np.inf, 0.0]], dtype=name)
    grads = gradient(
        autodiff, lambda x, y: kb.kl_divergence(kb.Categorical(x), kb.Categorical(y)), a, b
    )
    for g in grads:
        assert np.all(np.isfinite(g))
        assert np.all(g[np.isinf(a)] == 0)


def test_masked_garbage_gets_zero_gradient(autodiff, dtype):
    name = dtype_name(dtype)
    a = np.array([[0.0, 1.0], [np.nan, np.inf], [1.0, -np.inf]], dtype=name)
    b = np.array([[0.5, 0.0], [np.inf, np.nan], [0.0, np.nan]], dtype=name)
    keep = np.array([True, False, False])

    def kl(x, y):
        mask = autodiff.xp.asarray(keep)
        return kb.kl_divergence(
            kb.Categorical(x), kb.Categorical(y), axis=0, where=mask, reduction="mean"
        )

    grad_a, grad_b = gradient(autodiff, kl, a, b)
    for g in (grad_a, grad_b):
        assert np.all(np.isfinite(g))
        assert np.all(g[1:] == 0)
        assert np.any(g[0] != 0)


def test_bernoulli_and_k3_gradients_match_analytic(autodiff, dtype):
    name = dtype_name(dtype)
    x = np.array([-3.0, 0.0, 0.5, 4.0, 20.0], dtype=name)
    y = np.array([-2.0, 1e-3, 0.5, -4.0, 19.0], dtype=name)
    gx, gy = gradient(
        autodiff, lambda s, t: kb.kl_divergence(kb.Bernoulli(s), kb.Bernoulli(t)), x, y
    )
    with mpmath.workdps(50):
        sig = [1 / (1 + mpmath.exp(-mpmath.mpf(float(v)))) for v in x]
        sig_q = [1 / (1 + mpmath.exp(-mpmath.mpf(float(v)))) for v in y]
        want_x = [float(s * (1 - s) * (mpmath.mpf(float(u)) - mpmath.mpf(float(v))))
                  for s, u, v in zip(sig, x, y, strict=True)]  # fmt: skip
        want_y = [float(t - s) for s, t in zip(sig, sig_q, strict=True)]
    for got, want in ((gx, np.array(want_x)), (gy, np.array(want_y))):
        assert_derivatives_close(got, want, dtype, lambda eps, w=want: 64 * eps * np.abs(w))
    log_p = np.array([-1.0, -5.0, -2.0, 0.0], dtype=name)
    log_q = np.array([-1.0, -4.0, -2.5, 3.0], dtype=name)
    gp, gq = gradient(autodiff, lambda s, t: kb.sample_kl(s, t), log_p, log_q)
    want = np.expm1(log_q.astype(np.float64) - log_p.astype(np.float64))
    for got, exact in ((gq, want), (gp, -want)):
        assert_derivatives_close(got, exact, dtype, lambda eps, w=exact: 16 * eps * np.abs(w))
