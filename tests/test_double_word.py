"""The mixed-parameterization log-ratio ``log(scale) - log_scale`` against mpmath.

``log_difference`` is an internal kernel: the public functions hand it arrays of the
working dtype, which for half inputs (float16, bfloat16) is float32.  So for the half dtypes
these tests give it the half sweeps' exact values in float32, as ``kl_divergence`` does, and
hold its float32 result to the float32 bound (1 ulp) against mpmath on the half inputs: a
stronger check than the KL's 1 half ulp (tests/test_normal.py), under which an error of
thousands of float32 ulp in ``r`` could pass unseen.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

from kullback import _namespace
from kullback._double_word import log_difference as _log_difference
from kullback._double_word import smaller_than_result
from tests.conftest import assert_array, dtype_name, finfo
from tests.reference.normal import log_difference_sweep, same_distribution_sweep, ulp_errors


def log_difference(scale, log_scale, xp):
    """The kernel as the public functions call it: on arrays of the working dtype (float32
    for half inputs, converted exactly), under their errstate."""
    resolved = _namespace.resolve([("scale", scale), ("log_scale", log_scale)])
    scale, log_scale = resolved.asarray(scale), resolved.asarray(log_scale)
    with _namespace.errstate(xp):
        return _log_difference(scale, log_scale, xp)


def working(dtype, xp):
    """The dtype ``log_difference`` computes in for inputs of ``dtype`` (and its name)."""
    working_dtype = _namespace.Resolved(xp, dtype, None, ()).working_dtype
    return working_dtype, dtype_name(working_dtype)


def assert_within_one_ulp(got, scale, log_scale, exact, name):
    errors = ulp_errors(got, list(exact), np.dtype(name).type)
    worst = int(np.argmax(errors))
    assert errors[worst] <= 1, (
        f"{errors[worst]:.2f} ulp at scale={scale[worst]!r}, "
        f"log_scale={log_scale[worst]!r}, r={mpmath.nstr(exact[worst], 8)}"
    )


def test_log_difference_within_one_ulp(backend, xp, dtype):
    """Within 1 ulp of r for |r| from 1e-12 to 10 and
    |log scale| up to the dtype's limit: a rounded log(scale) would be off by up to
    |log scale| / |r| units of roundoff.  (Half inputs: 1 ulp of float32, see above.)"""
    name = dtype_name(dtype)
    working_dtype, working_name = working(dtype, xp)
    scale, log_scale, exact = log_difference_sweep(name)
    result = log_difference(backend.asarray(scale, dtype), backend.asarray(log_scale, dtype), xp)
    assert_array(result, xp=xp, dtype=working_dtype, shape=scale.shape)
    assert_within_one_ulp(backend.to_numpy(result), scale, log_scale, exact, working_name)


@pytest.mark.parametrize("broadcast", [False, True], ids=["pieces", "words"])
def test_log_difference_of_one_scale_in_two_parameterizations(backend, xp, dtype, broadcast):
    """A scale against its own log rounded to the dtype (or a log-scale against the scale
    it rounds to): |r| is then below an ulp of log(scale), down to ~1e-20 in float64, and
    must still come out within 1 ulp, so log(scale) must be carried to far beyond 2 words.
    Half inputs: |r| below an ulp of a half log(scale), up to 4e-3 (float16) or 0.25
    (bfloat16), and in a few rows down to 3e-10 and 2e-7, far below the rounding of a
    float32 log(scale) (up to 4e-6 at |log s| = 88)."""
    name = dtype_name(dtype)
    _, working_name = working(dtype, xp)
    scale, log_scale, exact = same_distribution_sweep(name)
    smallest_r = {"float64": 1e-19, "float32": 1e-10, "float16": 1e-9, "bfloat16": 1e-6}[name]
    assert min(abs(float(e)) for e in exact if e != 0) < smallest_r
    s, t = scale, log_scale
    if broadcast:
        s, t = scale[:, None], np.stack([log_scale, log_scale], axis=1)
    result = log_difference(backend.asarray(s, dtype), backend.asarray(t, dtype), xp)
    got = backend.to_numpy(result)
    for column in range(2 if broadcast else 1):
        values = got[:, column] if broadcast else got
        assert_within_one_ulp(values, scale, log_scale, exact, working_name)


def test_log_difference_with_a_broadcast_scale(backend, xp, dtype):
    """A scale with fewer elements than the result takes the three-word path (log(scale)
    summed first, on its own shape): the same bound, in every column."""
    name = dtype_name(dtype)
    working_dtype, working_name = working(dtype, xp)
    scale, log_scale, exact = log_difference_sweep(name)
    scale_column = backend.asarray(scale[:, None], dtype)
    log_scales = backend.asarray(np.stack([log_scale, log_scale], axis=1), dtype)
    assert smaller_than_result(scale_column, log_scales)
    result = log_difference(scale_column, log_scales, xp)
    assert_array(result, xp=xp, dtype=working_dtype, shape=(len(scale), 2))
    got = backend.to_numpy(result)
    for column in range(2):
        assert_within_one_ulp(got[:, column], scale, log_scale, exact, working_name)


@pytest.mark.parametrize("broadcast", [False, True], ids=["pieces", "words"])
def test_log_difference_special_values(backend, dtype, broadcast):
    """NaN for NaN, negative or infinite scales; -inf for a zero scale; -/+ the largest
    float of the working dtype (float32 for half inputs) for log_scale = +/-inf."""
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
    largest = float(finfo(working(dtype, backend.xp)[1]).max)
    assert got[0] == -np.inf
    assert np.all(np.isnan(got[1:5]))
    np.testing.assert_array_equal(got[5:], [-largest, largest, 0.0])
