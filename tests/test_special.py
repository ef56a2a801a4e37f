"""kullback.special.expm1mx and half_expm1mx against mpmath, on every backend and dtype.

Half-precision inputs (float16, bfloat16) are computed in float32 and rounded once, so their
bound is 1 ulp of the half dtype (:func:`~tests.conftest.ulp_bound`); a half dtype has only
65536 floats, and ``expm1mx`` is checked at every one of them.
"""

from __future__ import annotations

import functools
import math

import hypothesis.extra.numpy as hnp
import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kullback as kb
from kullback import _namespace
from kullback.special import half_expm1mx as _half_expm1mx
from tests.conftest import assert_array, dtype_name, finfo, is_half, ulp_bound, working_name
from tests.reference.normal import expm1mx as exact_expm1mx
from tests.reference.normal import ulp_errors

# The documented bound, in ulp of the result, for every float32 input (checked exhaustively
# by tools/exhaustive_expm1mx.py: at most 1.55 on NumPy, PyTorch and JAX, jit included) and
# the float64 sweeps below; the estimators' k3 adds one rounding to it.
BOUND = 2.5


def half_expm1mx(x, xp):
    """``(e**x - 1 - x) / 2`` by the private kernel, as the public functions call it.

    They compute half-precision inputs in float32 and round the result once
    (``Resolved.asarray`` and ``Resolved.result``), so a half array never reaches the kernel
    itself: for one this is :func:`kl_from_log_scale` at ``x/2`` (exact for the normal floats
    passed here), the kernel at ``2 (x/2) = x``.  NumPy's warnings are silenced, as the
    public functions silence them.
    """
    if is_half(x.dtype):
        return kl_from_log_scale(0.5 * x, xp)
    with _namespace.errstate(xp):
        return _half_expm1mx(x, xp)


def kl_from_log_scale(log_scale, xp):
    """``KL(N(0, e**log_scale) || N(0, 1))`` by log-scales (q's an array of zeros): the
    kernel's ``half_expm1mx(2 log_scale)``, plus a location term that is exactly 0."""
    zero = xp.zeros_like(log_scale)
    return kb.kl_divergence(kb.Normal(zero, log_scale=log_scale), kb.Normal(zero, log_scale=zero))


def overflow_threshold(name: str, weight: float = 1.0) -> float:
    """The largest float ``x`` of the dtype whose ``weight (e**x - 1 - x)`` is finite."""
    dt = np.dtype(name).type
    info = ml_dtypes.finfo(name)
    # values from max + ulp/2 on round to infinity
    limit = mpmath.mpf(float(info.max)) * (1 + mpmath.mpf(2) ** -(info.nmant + 2))
    low, high = dt(math.log(float(info.max)) - 1), dt(math.log(float(info.max)) + 1)
    while np.nextafter(low, high) != high:  # bisection on the floats: low finite, high not
        middle = dt((float(low) + float(high)) / 2)
        if middle in (low, high):
            middle = np.nextafter(low, high)
        if weight * exact_expm1mx(float(middle)) < limit:
            low = middle
        else:
            high = middle
    return float(low)


def sweep(name: str) -> np.ndarray:
    """Inputs of every region of ``expm1mx``, both signs, whose results are normal floats.

    Magnitudes log-spaced from where the result is the smallest normal to the overflow
    threshold; a dense grid on [-3, 3]; the table points ``a = q/4`` (where ``w = x - a``
    changes sign or restarts) for ``|a| <= 10``, at the ends of the tables (``a`` from -24 or
    -44 to 88.5 or 709.75) and their neighbours; the floats next to the overflow threshold.
    """
    dt = np.dtype(name).type
    info = ml_dtypes.finfo(name)
    top = overflow_threshold(name)
    smallest = math.sqrt(2.0 * float(info.smallest_normal)) * 1.01  # result just normal
    magnitudes = np.geomspace(smallest, top, 2500)
    points = [q / 4 for q in range(-40, 41) if q]  # (the neighbours of 0 are subnormal)
    points += [-24.0, -24.25, -24.5, -25.0, -44.0, -44.25, -44.5, -45.0, 88.5, 88.75]
    points += [709.75] if name == "float64" else []
    points = np.array(points, dtype=name)
    neighbours = [np.nextafter(points, dt(t)) for t in (-np.inf, np.inf)]
    near_top = [top]
    for _ in range(5):
        near_top.append(float(np.nextafter(dt(near_top[-1]), dt(0))))
    values = np.concatenate(
        [magnitudes, -magnitudes, np.linspace(-3, 3, 1201), points, *neighbours, near_top]
    )
    return values.astype(dt)


def every_input(name: str) -> np.ndarray:
    """Every float of a half dtype except the NaNs (infinities and subnormals included)."""
    x = np.arange(2**16, dtype=np.uint16).view(np.dtype(name))
    with np.errstate(invalid="ignore"):
        return x[~np.isnan(x.astype(np.float32))]


@functools.cache
def exact_on_every_input(name: str) -> tuple:
    """mpmath's ``e**x - 1 - x`` at every input of a half dtype (about 1.5 s each): +inf
    beyond ``log(max) + 1``, where it certainly overflows (and mpmath would go on to compute
    ``e**(3e38)`` for bfloat16), and for -inf."""
    beyond = math.log(float(finfo(name).max)) + 1
    return tuple(
        mpmath.inf if v > beyond or v == -math.inf else exact_expm1mx(v)
        for v in every_input(name).tolist()
    )


def accuracy_inputs(name: str) -> tuple[np.ndarray, tuple | None]:
    """Inputs and, for a half dtype, their exact values: :func:`sweep` for float32 and float64
    (and ``None``: assert_expm1mx_within computes them), every input of a half dtype."""
    if is_half(name):
        return every_input(name), exact_on_every_input(name)
    return sweep(name), None


def half_sweep(name: str) -> np.ndarray:
    """:func:`sweep` where half the result is a normal float too."""
    x = sweep(name)
    smallest = math.sqrt(4.0 * float(ml_dtypes.finfo(name).smallest_normal)) * 1.01
    return x[np.abs(x) >= smallest]


def assert_expm1mx_within(
    got: np.ndarray, x: np.ndarray, ulps: float = BOUND, weight=1.0, *, exact=None, flushes=False
) -> None:
    """``got`` (NumPy) is within ``ulps`` of mpmath's ``weight (e**x - 1 - x)`` at every
    point of ``x`` (infinite exactly where the exact value rounds to infinity), or, where
    ``flushes`` (JAX, CuPy), 0 where the exact value is below the normal range.  ``exact``:
    the exact values, if already known."""
    if exact is None:
        exact = [weight * exact_expm1mx(float(v)) for v in x]
    errors = ulp_errors(got, exact, x.dtype.type)
    if flushes:
        # flushed in the dtype computed in (float32 for a half dtype)
        smallest = finfo(working_name(x.dtype)).smallest_normal
        below_normal = np.array([e < smallest for e in exact])
        errors[below_normal & (got == 0)] = 0.0
    worst = int(np.argmax(errors))
    assert errors[worst] <= ulps, f"{errors[worst]:.2f} ulp at x={x[worst]!r}"


def test_accuracy(backend, xp, dtype):
    """Within the bound over the sweep (float32, float64), and within 1 ulp and never negative
    at every input of a half dtype (subnormal results, which XLA flushes, included)."""
    x, exact = accuracy_inputs(dtype_name(dtype))
    result = kb.special.expm1mx(backend.asarray(x, dtype))
    assert_array(result, xp=xp, dtype=dtype, shape=x.shape)
    got = backend.to_numpy(result)
    assert_expm1mx_within(
        got, x, ulp_bound(dtype, BOUND), exact=exact, flushes=backend.flushes_subnormals
    )
    assert np.all(got >= 0)


def test_half_accuracy(backend, xp, dtype):
    """``half_expm1mx`` (the Normal KL's kernel, and twice it the k3 estimator's) meets the
    same bound, up to its own overflow threshold (half a float's range later); half inputs
    through the Normal KL (see :func:`half_expm1mx`)."""
    name = dtype_name(dtype)
    top, half_top = overflow_threshold(name), overflow_threshold(name, 0.5)
    beyond = np.linspace(top, half_top, 200)
    after = np.nextafter(np.array(half_top, dtype=name), np.array(np.inf, dtype=name))
    x = np.concatenate([half_sweep(name), beyond, [half_top, 1.001 * half_top]]).astype(name)
    x = np.concatenate([x, [after]])
    result = half_expm1mx(backend.asarray(x, dtype), xp)
    assert_array(result, xp=xp, dtype=dtype, shape=x.shape)
    got = backend.to_numpy(result)
    assert_expm1mx_within(got, x, ulp_bound(dtype, BOUND), weight=0.5)
    assert got[-1] == np.inf
    # The same roundings as expm1mx (the tables and scalings are exact) where half of the
    # result is a normal float and the whole finite.
    whole = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    same = (whole >= 4 * ml_dtypes.finfo(name).smallest_normal) & np.isfinite(whole)
    np.testing.assert_array_equal(2 * got[same], whole[same])


# float32 inputs that were far off before: more than 4 ulp (up to 4.24) when the exp form
# started at x = 3 (NumPy's float32 exp is up to 2.5 ulp off); 3.98, 3.87, 3.49 and 3.41 ulp
# on NumPy where exp(x - 2) served x > 4; 3.52 and 2.71 ulp on every backend from the
# series shifted by 1; and the largest errors of the tabulated form (1.55 ulp), all found by
# tools/exhaustive_expm1mx.py.
FLOAT32_WORST_CASES = (
    3.4820263385772705, 3.491582155227661, 3.5502712726593018, 3.5733463764190674,
    3.5779011249542236, 3.5807735919952393, 3.588200807571411, 3.5981037616729736,
    4.19597053527832, 6.241530895233154, 12.460086822509766, 18.690324783325195,
    1.936116099357605, 1.1362450122833252, 3.9646689891815186, -1.0360976457595825,
    0.6285302042961121, -0.18043529987335205, 3.994741916656494, -1.1981379985809326,
    1.430511474609375e-06, -0.00017263820336665958,
)  # fmt: skip


def test_float32_worst_cases(backend, xp):
    x = np.array(FLOAT32_WORST_CASES, dtype=np.float32)
    result = kb.special.expm1mx(backend.asarray(x, "float32"))
    assert_array(result, xp=xp, dtype=xp.float32, shape=x.shape)
    assert_expm1mx_within(backend.to_numpy(result), x)
    half = backend.to_numpy(half_expm1mx(backend.asarray(x, "float32"), xp))
    assert_expm1mx_within(half, x, weight=0.5)


def test_results_just_above_the_smallest_normal(backend, xp, dtype):
    """Results between the smallest normal float and twice it are normal floats: no
    intermediate half of them may be subnormal (which JAX and CuPy flush to 0)."""
    name = dtype_name(dtype)
    smallest = float(ml_dtypes.finfo(name).smallest_normal)
    # e**x - 1 - x ~ x**2/2 at 1.01, 1.24 and 1.9 times the smallest normal, both signs
    magnitudes = np.sqrt(2.0 * smallest * np.array([1.01, 1.24, 1.9]))
    x = np.concatenate([magnitudes, -magnitudes]).astype(name)
    result = kb.special.expm1mx(backend.asarray(x, dtype))
    assert_array(result, xp=xp, dtype=dtype, shape=x.shape)
    assert_expm1mx_within(backend.to_numpy(result), x, ulp_bound(dtype, BOUND))


def test_subnormal_and_zero_results(backend, dtype):
    """``|x|`` down to 1e-300 (float64), 1e-44 (float32) or the smallest subnormal (half
    dtypes): the result, subnormal or 0, is within the bound in units of the smallest
    subnormal, or flushed to 0 by JAX and CuPy where the exact value is below the normal
    range (JAX rounds float32 results to float16 subnormals, and flushes bfloat16 ones)."""
    name = dtype_name(dtype)
    info = ml_dtypes.finfo(name)
    lowest = {"float64": 1e-300, "float32": 1e-44}.get(name, float(info.smallest_subnormal))
    magnitudes = np.geomspace(lowest, math.sqrt(2.0 * float(info.smallest_normal)), 200)
    x = np.concatenate([magnitudes, -magnitudes]).astype(name)
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    assert_expm1mx_within(got, x, ulp_bound(dtype, BOUND), flushes=backend.flushes_subnormals)


def far_beyond_the_tables(name: str) -> float:
    """1e30, or half the largest float where that is less (float16: 32752)."""
    return min(1e30, float(ml_dtypes.finfo(name).max) / 2)


def test_special_values(backend, dtype):
    name = dtype_name(dtype)
    top = overflow_threshold(name)
    after = np.nextafter(np.array(top, dtype=name), np.array(np.inf, dtype=name))
    far = far_beyond_the_tables(name)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, top, after, -far, far], dtype=name)
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    assert got[0] == 0
    assert got[1] == 0
    assert got[2] == np.inf
    assert got[3] == np.inf
    assert np.isnan(got[4])
    assert np.isfinite(got[5])  # the largest finite result is not lost to an intermediate
    assert got[6] == np.inf
    # e**x is far below the resolution of -1 - x (exact in float64 for the half dtypes)
    assert got[7] == np.array(-float(x[7]) - 1.0, dtype=name)
    assert got[8] == np.inf


def test_half_special_values(backend, xp, dtype):
    """Half inputs through the Normal KL (see :func:`half_expm1mx`)."""
    name = dtype_name(dtype)
    top = overflow_threshold(name, 0.5)
    after = np.nextafter(np.array(top, dtype=name), np.array(np.inf, dtype=name))
    x = np.array([0.0, np.inf, -np.inf, np.nan, top, after, -far_beyond_the_tables(name)], name)
    got = backend.to_numpy(half_expm1mx(backend.asarray(x, dtype), xp))
    assert got[0] == 0
    assert got[1] == np.inf
    assert got[2] == np.inf
    assert np.isnan(got[3])
    assert np.isfinite(got[4])
    assert got[5] == np.inf
    assert got[6] == np.array(0.5 * (-float(x[6]) - 1.0), dtype=name)


@given(data=st.data())
def test_never_negative(backend, dtype, data):
    """Over [-700, 700] (float32, float64); any bit pattern of a half dtype (NaN gives NaN)."""
    name = dtype_name(dtype)
    if is_half(name):
        x = data.draw(hnp.arrays(np.uint16, st.integers(1, 20))).view(np.dtype(name))
    else:
        x = data.draw(
            hnp.arrays(name, st.integers(1, 20), elements=st.floats(-700, 700,
                       width=int(name[-2:]), allow_subnormal=not backend.flushes_subnormals))
        )  # fmt: skip
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    with np.errstate(invalid="ignore"):
        nan = np.isnan(x.astype(np.float32))
    assert np.all(got[~nan] >= 0)
    assert np.all(np.isnan(got[nan]))


def gradient(backend, f, x, dtype):
    """d/dx of sum(f(x)) by torch.autograd or jax.grad, at ``x`` (NumPy) as an array of
    ``dtype``, as a NumPy array of ``dtype``."""
    array = backend.asarray(x, dtype)
    if backend.name == "torch":
        array.requires_grad_(True)
        f(array).sum().backward()
        return backend.to_numpy(array.grad)
    import jax
    import jax.numpy as jnp

    return backend.to_numpy(jax.grad(lambda a: jnp.sum(f(a)))(array))


@functools.cache
def exact_expm1_on_every_input(name: str, factor: float) -> tuple:
    """mpmath's ``expm1(factor x)`` at every input of a half dtype (about 1.2 s each); +inf
    beyond ``log(max) + 1``."""
    beyond = math.log(float(finfo(name).max)) + 1
    with mpmath.workdps(30):
        return tuple(
            mpmath.inf if factor * v > beyond else mpmath.expm1(factor * mpmath.mpf(v))
            for v in every_input(name).tolist()
        )


def assert_half_gradient_within_1_ulp(backend, f, factor, weight, dtype):
    """The derivative of ``f`` is ``expm1(factor x)`` within 1 ulp of the half dtype at every
    input ``x`` where ``f(x) = weight expm1mx(factor x)`` is finite: infinite where that
    derivative overflows (``expm1(x) > expm1mx(x)``, so it may where ``f`` does not).

    Backends that flush subnormals give, in the float32 a half dtype is computed in (the
    exponent range of bfloat16, not of float16), 0 where the derivative is below ``2/weight`` times the smallest
    normal float: the series' derivative is a sum of terms ``weight/2`` of it, flushed there
    (float32 inputs too; the float32 sweep stays above it).
    """
    name = dtype_name(dtype)
    x = every_input(name)
    finite = factor * x.astype(np.float64) <= overflow_threshold(name, weight)
    every = exact_expm1_on_every_input(name, factor)
    exact = [e for e, keep in zip(every, finite, strict=True) if keep]
    grad = gradient(backend, f, x, dtype)[finite]
    errors = ulp_errors(grad, exact, np.dtype(name))
    if backend.flushes_subnormals:
        lowest = 2 / weight * float(finfo(working_name(name)).smallest_normal)
        errors[np.array([abs(e) < lowest for e in exact]) & (grad == 0)] = 0.0
    worst = int(np.argmax(errors))
    assert errors[worst] <= 1.0, f"{errors[worst]:.2f} ulp at x={x[finite][worst]!r}"


def test_gradient_is_expm1(backend, xp, dtype):
    """The autodiff derivative is within a few ulp of ``expm1(x)`` over the sweep (table
    points and their neighbours included), finite wherever the value is.  In a half dtype,
    within 1 ulp at every input: of ``expm1mx``, and of the kernel through the Normal KL
    (:func:`kl_from_log_scale`, whose derivative at ``r`` is ``expm1(2r)``)."""
    if backend.name not in ("torch", "jax"):
        pytest.skip(f"autodiff needs torch or jax, not {backend.name}")
    name = dtype_name(dtype)
    if is_half(name):
        assert_half_gradient_within_1_ulp(backend, kb.special.expm1mx, 1.0, 1.0, dtype)
        kl = functools.partial(kl_from_log_scale, xp=xp)
        assert_half_gradient_within_1_ulp(backend, kl, 2.0, 0.5, dtype)
        return
    x = sweep(name)
    x = x[x <= overflow_threshold(name)]  # where the value is finite
    with mpmath.workdps(50):
        exact = np.array([float(mpmath.expm1(mpmath.mpf(float(v)))) for v in x])
    for f in (kb.special.expm1mx, lambda a: 2.0 * half_expm1mx(a, xp)):
        grad = gradient(backend, f, x, dtype)
        assert np.all(np.isfinite(grad))
        np.testing.assert_allclose(grad, exact, rtol=4 * float(ml_dtypes.finfo(name).eps), atol=0)


def test_accuracy_under_jit(backend, dtype):
    """Compiled code may fuse differently from eager code: it must meet the same bound."""
    if backend.name != "jax":
        pytest.skip("jax.jit")
    import jax
    import jax.numpy as jnp

    xp = backend.xp
    name = dtype_name(dtype)
    bound = ulp_bound(dtype, BOUND)
    x, exact = accuracy_inputs(name)
    got = np.asarray(jax.jit(kb.special.expm1mx)(jnp.asarray(x)))
    assert got.dtype == x.dtype
    assert_expm1mx_within(got, x, bound, exact=exact, flushes=True)
    x = half_sweep(name)
    half = np.asarray(jax.jit(lambda a: half_expm1mx(a, xp))(jnp.asarray(x)))
    assert half.dtype == x.dtype
    assert_expm1mx_within(half, x, bound, weight=0.5)


def test_result_follows_input(backend, xp, dtype):
    device = backend.device()
    x = backend.asarray(np.linspace(-2, 2, 6).reshape(2, 3), dtype, device=device)
    result = kb.special.expm1mx(x)
    assert_array(result, xp=xp, dtype=dtype, shape=(2, 3), device=device)
    scalar = kb.special.expm1mx(backend.asarray(np.array(1.5), dtype, device=device))
    assert_array(scalar, xp=xp, dtype=dtype, shape=(), device=device)


def test_python_scalar_gives_numpy():
    result = kb.special.expm1mx(1e-8)
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float64
    assert result == pytest.approx(5.000000016666667e-17, rel=1e-15)


def test_integer_array_rejected(backend, xp):
    with pytest.raises(TypeError, match="real floating"):
        kb.special.expm1mx(xp.asarray([1, 2]))
