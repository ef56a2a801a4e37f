"""The mixed-parameterization log-ratio ``log(scale) - log_scale`` against mpmath."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from kullback import _namespace
from kullback._double_word import log_difference as _log_difference
from kullback._double_word import smaller_than_result
from tests.conftest import assert_array, dtype_name
from tests.reference.normal import log_difference_sweep, ulp_errors

# The float32 words carry log(scale) to about 2**-55 absolute (measured 2**-54.9 at
# s = 2.735742, where |log m| ~ 0.31): below |r| ~ 1e-9 this floor, not the rounding of r,
# dominates (the sweep below does not reach it; the Normal sweep does).
FLOAT32_FLOOR = 2.0**-53


def log_difference(scale, log_scale, xp):
    with _namespace.errstate(xp):  # as the public functions call it
        return _log_difference(scale, log_scale, xp)


def assert_within_one_ulp(got, scale, log_scale, exact, name):
    errors = ulp_errors(got, list(exact), np.dtype(name).type)
    allowed = np.ones(len(exact))
    if name == "float32":
        with mpmath.workdps(30):
            ulp_of_r = np.array([float(2 ** (mpmath.floor(mpmath.log(abs(e), 2)) - 23)) if e != 0 else np.inf for e in exact])  # fmt: skip
        allowed += FLOAT32_FLOOR / ulp_of_r
    worst = int(np.argmax(errors - allowed))
    assert errors[worst] <= allowed[worst], (
        f"{errors[worst]:.2f} ulp (allowed {allowed[worst]:.2f}) at scale={scale[worst]!r}, "
        f"log_scale={log_scale[worst]!r}, r={mpmath.nstr(exact[worst], 8)}"
    )


def test_log_difference_within_one_ulp(backend, xp, dtype):
    """Within 1 ulp of r (plus, in float32, the floor above) for |r| from 1e-12 to 10 and
    |log scale| up to the dtype's limit: a rounded log(scale) would be off by up to
    |log scale| / |r| units of roundoff."""
    name = dtype_name(dtype)
    scale, log_scale, exact = log_difference_sweep(name)
    result = log_difference(backend.asarray(scale, dtype), backend.asarray(log_scale, dtype), xp)
    assert_array(result, xp=xp, dtype=dtype, shape=scale.shape)
    assert_within_one_ulp(backend.to_numpy(result), scale, log_scale, exact, name)


def test_log_difference_with_a_broadcast_scale(backend, xp, dtype):
    """A scale with fewer elements than the result takes the three-word path (log(scale)
    summed first, on its own shape): the same bound, in every column."""
    name = dtype_name(dtype)
    scale, log_scale, exact = log_difference_sweep(name)
    scale_column = backend.asarray(scale[:, None], dtype)
    log_scales = backend.asarray(np.stack([log_scale, log_scale], axis=1), dtype)
    assert smaller_than_result(scale_column, log_scales)
    result = log_difference(scale_column, log_scales, xp)
    assert_array(result, xp=xp, dtype=dtype, shape=(len(scale), 2))
    got = backend.to_numpy(result)
    for column in range(2):
        assert_within_one_ulp(got[:, column], scale, log_scale, exact, name)


@pytest.mark.parametrize("broadcast", [False, True], ids=["pieces", "words"])
def test_log_difference_special_values(backend, dtype, broadcast):
    scale = np.array([0.0, -1.0, np.inf, np.nan, 1.0, 1.0, 1.0, 1.0])
    log_scale = np.array([0.0, 0.0, 0.0, 0.0, np.nan, np.inf, -np.inf, 0.0])
    if broadcast:
        scale, log_scale = scale[:, None], np.stack([log_scale, log_scale], axis=1)
    got = backend.to_numpy(
        log_difference(backend.asarray(scale, dtype), backend.asarray(log_scale, dtype), backend.xp)
    )
    if broadcast:
        np.testing.assert_array_equal(got[:, 0], got[:, 1])
        got = got[:, 0]
    largest = float(np.finfo(dtype_name(dtype)).max)
    assert got[0] == -np.inf
    assert np.all(np.isnan(got[1:5]))
    np.testing.assert_array_equal(got[5:], [-largest, largest, 0.0])
