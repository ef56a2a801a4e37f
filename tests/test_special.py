"""kullback.special.expm1mx and half_expm1mx against mpmath, on every backend and dtype."""

from __future__ import annotations

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
from tests.conftest import assert_array, dtype_name
from tests.reference.normal import expm1mx as exact_expm1mx
from tests.reference.normal import ulp_errors

# The documented bound, in ulp of the result, for every float32 input (checked exhaustively
# by tools/exhaustive_expm1mx.py: at most 1.55 on NumPy, PyTorch and JAX, jit included) and
# the float64 sweeps below; the estimators' k3 adds one rounding to it.
BOUND = 2.5


def half_expm1mx(x, xp):
    """The private kernel as the public functions call it (NumPy's warnings silenced)."""
    with _namespace.errstate(xp):
        return _half_expm1mx(x, xp)


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


def half_sweep(name: str) -> np.ndarray:
    """:func:`sweep` where half the result is a normal float too."""
    x = sweep(name)
    smallest = math.sqrt(4.0 * float(ml_dtypes.finfo(name).smallest_normal)) * 1.01
    return x[np.abs(x) >= smallest]


def assert_expm1mx_within(got: np.ndarray, x: np.ndarray, ulps: float = BOUND, weight=1.0):
    """``got`` (NumPy) is within ``ulps`` of mpmath's ``weight (e**x - 1 - x)`` at every
    point of ``x`` (infinite exactly where the exact value rounds to infinity)."""
    exact = [weight * exact_expm1mx(float(v)) for v in x]
    errors = ulp_errors(got, exact, x.dtype.type)
    worst = int(np.argmax(errors))
    assert errors[worst] <= ulps, f"{errors[worst]:.2f} ulp at x={x[worst]!r}"


def assert_expm1mx_within_4_ulp(got: np.ndarray, x: np.ndarray) -> None:
    """The bound of 4 ulp, which compiled code (``torch.compile``) is held to in
    ``test_transforms``."""
    assert_expm1mx_within(got, x, 4.0)


def test_accuracy(backend, xp, dtype):
    x = sweep(dtype_name(dtype))
    result = kb.special.expm1mx(backend.asarray(x, dtype))
    assert_array(result, xp=xp, dtype=dtype, shape=x.shape)
    assert_expm1mx_within(backend.to_numpy(result), x)


def test_half_accuracy(backend, xp, dtype):
    """``half_expm1mx`` (the Normal KL's kernel, and twice it the k3 estimator's) meets the
    same bound, up to its own overflow threshold (half a float's range later)."""
    name = dtype_name(dtype)
    top, half_top = overflow_threshold(name), overflow_threshold(name, 0.5)
    beyond = np.linspace(top, half_top, 200)
    x = np.concatenate([half_sweep(name), beyond, [half_top, 1.001 * half_top]]).astype(name)
    result = half_expm1mx(backend.asarray(x, dtype), xp)
    assert_array(result, xp=xp, dtype=dtype, shape=x.shape)
    got = backend.to_numpy(result)
    assert_expm1mx_within(got, x, weight=0.5)
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
    assert_expm1mx_within(backend.to_numpy(result), x)


def test_subnormal_and_zero_results(backend, dtype):
    """``|x|`` down to 1e-300 (float64) or 1e-44 (float32): the result, subnormal or 0, is
    within the bound in units of the smallest subnormal, or flushed to 0 by JAX and CuPy."""
    name = dtype_name(dtype)
    info = ml_dtypes.finfo(name)
    lowest = 1e-300 if name == "float64" else 1e-44
    magnitudes = np.geomspace(lowest, math.sqrt(2.0 * float(info.smallest_normal)), 200)
    x = np.concatenate([magnitudes, -magnitudes]).astype(name)
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    if backend.flushes_subnormals:
        assert np.all((got == 0) | (got >= info.smallest_normal))
        x, got = x[got != 0], got[got != 0]
    if x.size:
        assert_expm1mx_within(got, x)


def test_special_values(backend, dtype):
    name = dtype_name(dtype)
    top = overflow_threshold(name)
    after = np.nextafter(np.array(top, dtype=name), np.array(np.inf, dtype=name))
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, top, after, -1e30, 1e30], dtype=name)
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    assert got[0] == 0
    assert got[1] == 0
    assert got[2] == np.inf
    assert got[3] == np.inf
    assert np.isnan(got[4])
    assert np.isfinite(got[5])  # the largest finite result is not lost to an intermediate
    assert got[6] == np.inf
    assert got[7] == np.float32(1e30 - 1) if name == "float32" else got[7] == 1e30 - 1
    assert got[8] == np.inf


def test_half_special_values(backend, xp, dtype):
    name = dtype_name(dtype)
    top = overflow_threshold(name, 0.5)
    after = np.nextafter(np.array(top, dtype=name), np.array(np.inf, dtype=name))
    x = np.array([0.0, np.inf, -np.inf, np.nan, top, after, -1e30], dtype=name)
    got = backend.to_numpy(half_expm1mx(backend.asarray(x, dtype), xp))
    assert got[0] == 0
    assert got[1] == np.inf
    assert got[2] == np.inf
    assert np.isnan(got[3])
    assert np.isfinite(got[4])
    assert got[5] == np.inf
    assert got[6] == np.array(0.5e30 - 0.5, dtype=name)


@given(data=st.data())
def test_never_negative(backend, dtype, data):
    name = dtype_name(dtype)
    x = data.draw(
        hnp.arrays(name, st.integers(1, 20), elements=st.floats(-700, 700, width=int(name[-2:]),
                   allow_subnormal=not backend.flushes_subnormals))
    )  # fmt: skip
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    assert np.all(got >= 0)


def gradient(backend, f, x):
    """d/dx of sum(f(x)) by torch.autograd or jax.grad, as a NumPy array."""
    if backend.name == "torch":
        import torch

        tensor = torch.tensor(x, requires_grad=True)
        f(tensor).sum().backward()
        return tensor.grad.numpy()
    import jax
    import jax.numpy as jnp

    return np.asarray(jax.grad(lambda a: jnp.sum(f(a)))(jnp.asarray(x)))


def test_gradient_is_expm1(backend, xp, dtype):
    """The autodiff derivative is within a few ulp of ``expm1(x)`` over the sweep (table
    points and their neighbours included), finite wherever the value is."""
    if backend.name not in ("torch", "jax"):
        pytest.skip(f"autodiff needs torch or jax, not {backend.name}")
    name = dtype_name(dtype)
    x = sweep(name)
    x = x[x <= overflow_threshold(name)]  # where the value is finite
    with mpmath.workdps(50):
        exact = np.array([float(mpmath.expm1(mpmath.mpf(float(v)))) for v in x])
    for f in (kb.special.expm1mx, lambda a: 2.0 * half_expm1mx(a, xp)):
        grad = gradient(backend, f, x)
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
    x = sweep(name)
    got = np.asarray(jax.jit(kb.special.expm1mx)(jnp.asarray(x)))
    assert_expm1mx_within(got, x)
    x = half_sweep(name)
    half = np.asarray(jax.jit(lambda a: half_expm1mx(a, xp))(jnp.asarray(x)))
    assert_expm1mx_within(half, x, weight=0.5)


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
