"""kullback.special.expm1mx against mpmath, on every backend and dtype."""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kullback as kb
from tests.conftest import assert_array, dtype_name
from tests.reference.normal import expm1mx as exact_expm1mx
from tests.reference.normal import ulp_errors


def sweep(name: str) -> np.ndarray:
    """Magnitudes 1e-12..1e2 of both signs, a dense grid on [-3, 3], and the branch edges."""
    dt = np.dtype(name).type
    edges = [np.nextafter(dt(v), dt(t)) for v in (-1.0, 1.0) for t in (-2.0, 2.0)]
    magnitudes = 10.0 ** np.linspace(-12, 2, 1500)
    values = np.concatenate(
        [magnitudes, -magnitudes, np.linspace(-3, 3, 1201), [-1.0, 1.0, 0.0], edges]
    )
    return values.astype(dt)


def assert_expm1mx_within_4_ulp(got: np.ndarray, x: np.ndarray) -> None:
    """``got`` (NumPy) is within 4 ulp of mpmath's e**x - 1 - x at every point of ``x``."""
    errors = ulp_errors(got, [exact_expm1mx(float(v)) for v in x], x.dtype.type)
    worst = int(np.argmax(errors))
    assert errors[worst] <= 4, f"{errors[worst]:.2f} ulp at x={x[worst]!r}"


def test_accuracy_within_4_ulp(backend, xp, dtype):
    x = sweep(dtype_name(dtype))
    result = kb.special.expm1mx(backend.asarray(x, dtype))
    assert_array(result, xp=xp, dtype=dtype, shape=x.shape)
    assert_expm1mx_within_4_ulp(backend.to_numpy(result), x)


# float32 inputs that were more than 4 ulp off on NumPy (up to 4.24 ulp) when the exp form
# started at x = 3: NumPy's float32 exp is up to 2.5 ulp off, and the form cancelled by a
# factor 1.25 there (tools/exhaustive_expm1mx.py checks every float32 input).
NUMPY_EXP_WORST_CASES = (
    3.4820263385772705, 3.491582155227661, 3.5502712726593018, 3.5733463764190674,
    3.5779011249542236, 3.5807735919952393, 3.588200807571411, 3.5981037616729736,
)  # fmt: skip


def test_worst_cases_of_a_backend_exp(backend, xp):
    x = np.array(NUMPY_EXP_WORST_CASES, dtype=np.float32)
    result = kb.special.expm1mx(backend.asarray(x, "float32"))
    assert_array(result, xp=xp, dtype=xp.float32, shape=x.shape)
    assert_expm1mx_within_4_ulp(backend.to_numpy(result), x)


def test_results_just_above_the_smallest_normal(backend, xp, dtype):
    """Results between the smallest normal float and twice it are normal floats: no
    intermediate half of them may be subnormal (which JAX and CuPy flush to 0)."""
    name = dtype_name(dtype)
    smallest = float(np.finfo(name).smallest_normal)
    # e**x - 1 - x ~ x**2/2 at 1.01, 1.24 and 1.9 times the smallest normal, both signs
    magnitudes = np.sqrt(2.0 * smallest * np.array([1.01, 1.24, 1.9]))
    x = np.concatenate([magnitudes, -magnitudes]).astype(name)
    result = kb.special.expm1mx(backend.asarray(x, dtype))
    assert_array(result, xp=xp, dtype=dtype, shape=x.shape)
    assert_expm1mx_within_4_ulp(backend.to_numpy(result), x)


def test_special_values(backend, dtype):
    name = dtype_name(dtype)
    big = math.log(float(np.finfo(name).max))  # e**big - 1 - big is just below the maximum
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, big - 1, big + 1, -1e30], dtype=name)
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    assert got[0] == 0
    assert got[1] == 0
    assert got[2] == np.inf
    assert got[3] == np.inf
    assert np.isnan(got[4])
    assert np.isfinite(got[5])
    assert got[6] == np.inf
    assert got[7] == np.float32(1e30 - 1) if name == "float32" else got[7] == 1e30 - 1


@given(data=st.data())
def test_never_negative(backend, dtype, data):
    name = dtype_name(dtype)
    x = data.draw(
        hnp.arrays(name, st.integers(1, 20), elements=st.floats(-700, 700, width=int(name[-2:]),
                   allow_subnormal=not backend.flushes_subnormals))
    )  # fmt: skip
    got = backend.to_numpy(kb.special.expm1mx(backend.asarray(x, dtype)))
    assert np.all(got >= 0)


def test_result_follows_input(backend, xp, dtype):
    device = backend.device()
    x = backend.asarray(np.linspace(-2, 2, 6).reshape(2, 3), dtype, device=device)
    result = kb.special.expm1mx(x)
    assert_array(result, xp=xp, dtype=dtype, shape=(2, 3), device=device)


def test_python_scalar_gives_numpy():
    result = kb.special.expm1mx(1e-8)
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float64
    assert result == pytest.approx(5.000000016666667e-17, rel=1e-15)


def test_integer_array_rejected(backend, xp):
    with pytest.raises(TypeError, match="real floating"):
        kb.special.expm1mx(xp.asarray([1, 2]))
