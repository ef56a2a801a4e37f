"""Normal–Normal KL: accuracy against mpmath, special values, properties, semantics."""

from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kullback as kb
from kullback._pairs import normal as normal_pair
from tests.conftest import assert_array, dtype_name
from tests.reference.normal import (
    kl_normal,
    log_difference_sweep,
    normal_sweep,
    same_distribution_sweep,
    ulp_errors,
)

PARAMETERIZATIONS = {
    "scale-scale": (False, False),
    "log-log": (True, True),
    "scale-log": (False, True),
    "log-scale": (True, False),
}


def normal(backend, dtype, loc, parameter, by_log, device=None):
    loc = backend.asarray(loc, dtype, device)
    parameter = backend.asarray(parameter, dtype, device)
    return kb.Normal(loc, log_scale=parameter) if by_log else kb.Normal(loc, parameter)


def allowed_ulps(s) -> np.ndarray:
    """The error bound, in ulp, for each row of a sweep: 4 ulp, plus 2|r| ulp wherever a
    log-scale is involved (two log-scales, or mixed), the unavoidable rounding of r
    amplified by exp(2r).  Mixed rows get no allowance for log(scale): it is not rounded."""
    allowed = 4.0 + 0.0 * s.log_ratio
    if s.p_by_log or s.q_by_log:
        allowed += 2 * s.log_ratio
    return allowed


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_accuracy_against_mpmath(backend, xp, dtype, parameterization):
    """Within :func:`allowed_ulps` of an mpmath reference on the exact float inputs.

    The sweep covers log-scale ratios and standardized gaps from 1e-12 to 1e2 of both signs,
    log-scales from -30 to 30, and exact equality.
    """
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    name = dtype_name(dtype)
    s = normal_sweep(name, p_by_log, q_by_log)
    p = normal(backend, dtype, s.loc_p, s.p_param, p_by_log)
    q = normal(backend, dtype, s.loc_q, s.q_param, q_by_log)
    result = kb.kl_divergence(p, q)
    assert_array(result, xp=xp, dtype=dtype, shape=s.loc_p.shape)
    got = backend.to_numpy(result)
    assert np.all(got >= 0)
    errors = ulp_errors(got, list(s.exact), np.dtype(name).type)
    allowed = allowed_ulps(s)
    worst = int(np.argmax(errors - allowed))
    assert errors[worst] <= allowed[worst], (
        f"{errors[worst]:.2f} ulp (allowed {allowed[worst]:.2f}) at loc_p={s.loc_p[worst]!r}, "
        f"loc_q={s.loc_q[worst]!r}, p={s.p_param[worst]!r}, q={s.q_param[worst]!r}"
    )


@pytest.mark.parametrize("p_by_log", [False, True], ids=["scale-log", "log-scale"])
def test_one_distribution_given_both_ways(backend, xp, dtype, p_by_log):
    """A scale against its own rounded log (or a log-scale against its rounded exp): the
    KL, about r**2 with |r| below an ulp of log(scale), within 4 ulp."""
    name = dtype_name(dtype)
    scale, log_scale, r = same_distribution_sweep(name)
    sign = -1 if p_by_log else 1  # r = log(scale_p / scale_q)
    with mpmath.workdps(60):
        exact = [(mpmath.expm1(2 * sign * x) - 2 * sign * x) / 2 for x in r]
    by_scale = kb.Normal(0.0, backend.asarray(scale, dtype))
    by_log = kb.Normal(0.0, log_scale=backend.asarray(log_scale, dtype))
    result = kb.kl_divergence(by_log, by_scale) if p_by_log else kb.kl_divergence(by_scale, by_log)
    assert_array(result, xp=xp, dtype=dtype, shape=scale.shape)
    errors = ulp_errors(backend.to_numpy(result), exact, np.dtype(name).type)
    worst = int(np.argmax(errors))
    assert errors[worst] <= 4, f"{errors[worst]:.2f} ulp at scale={scale[worst]!r}"


def refuse_the_array_path(monkeypatch) -> None:
    """Make the array path of the mixed pair's ``log(scale)`` fail, so that a test proves
    that a Python-number scale takes the path of constants computed in Python."""

    def array_path(*args, **kwargs):
        raise AssertionError("a Python-number scale took the array path of log(scale)")

    monkeypatch.setattr(normal_pair, "log_difference", array_path)
    monkeypatch.setattr(normal_pair, "log_words", array_path)


@pytest.mark.parametrize("which", ["log_difference", "same_distribution"])
def test_mixed_with_a_python_number_scale(backend, xp, dtype, which, monkeypatch):
    """A prior's scale given as a Python number has its log computed in Python (decimal)
    and enters as constants (the array path is refused): the same bound as the array path,
    against mpmath."""
    refuse_the_array_path(monkeypatch)
    name = dtype_name(dtype)
    sweep = log_difference_sweep if which == "log_difference" else same_distribution_sweep
    scale, log_scale, r = sweep(name)
    rows = range(0, len(scale), 10)
    got, exact, allowed = [], [], []
    for i in rows:
        q = kb.Normal(0.0, log_scale=backend.asarray(np.full(2, log_scale[i]), dtype))
        result = kb.kl_divergence(kb.Normal(0.0, float(scale[i])), q)
        assert_array(result, xp=xp, dtype=dtype, shape=(2,))
        got.extend(backend.to_numpy(result).tolist())
        with mpmath.workdps(60):
            exact += [(mpmath.expm1(2 * r[i]) - 2 * r[i]) / 2] * 2
        allowed += [4 + 2 * abs(float(r[i]))] * 2
    errors = ulp_errors(np.array(got), exact, np.dtype(name).type)
    worst = int(np.argmax(errors - np.array(allowed)))
    assert errors[worst] <= allowed[worst], (
        f"{errors[worst]:.2f} ulp (allowed {allowed[worst]:.2f})"
    )


@pytest.mark.parametrize("prior_by_log", [False, True])
@pytest.mark.parametrize("prior_first", [False, True])
def test_unit_prior_as_python_numbers(backend, xp, dtype, prior_by_log, prior_first, monkeypatch):
    """``N(0, 1)`` given as Python numbers (``Normal(0.0, 1.0)`` or ``log_scale=0.0``), as
    VAEs use it, in both argument orders: the KL equals that against the same prior given
    as arrays, bit for bit, and is within the bound of mpmath.  For ``Normal(0.0, 1.0)``
    the test also refuses the multi-word subtraction, which its log of 0 no longer takes
    (the other shortcuts, for ``log_scale=0.0`` and the location term, only save work and
    are seen here only through the values)."""
    name = dtype_name(dtype)
    rng = np.random.default_rng(7)
    loc = rng.normal(0.0, 3.0, 64)
    log_scale = np.concatenate([rng.normal(0.0, 2.0, 60), [0.0, -0.0, 1e-30, 20.0]])
    posterior = kb.Normal(backend.asarray(loc, dtype), log_scale=backend.asarray(log_scale, dtype))
    as_arrays = (
        kb.Normal(
            backend.asarray(np.zeros(1), dtype), log_scale=backend.asarray(np.zeros(1), dtype)
        )
        if prior_by_log
        else kb.Normal(backend.asarray(np.zeros(1), dtype), backend.asarray(np.ones(1), dtype))
    )
    want = backend.to_numpy(
        kb.kl_divergence(as_arrays, posterior)
        if prior_first
        else kb.kl_divergence(posterior, as_arrays)
    )

    def multi_word(*args, **kwargs):
        raise AssertionError("the unit prior went through the multi-word log")

    monkeypatch.setattr(normal_pair, "subtract_from_words", multi_word)
    refuse_the_array_path(monkeypatch)
    prior = kb.Normal(0.0, log_scale=0.0) if prior_by_log else kb.Normal(0.0, 1.0)
    got = kb.kl_divergence(prior, posterior) if prior_first else kb.kl_divergence(posterior, prior)
    assert_array(got, xp=xp, dtype=dtype, shape=(64,))
    np.testing.assert_array_equal(backend.to_numpy(got), want)
    rows = zip(loc.astype(name).tolist(), log_scale.astype(name).tolist(), strict=True)
    exact = [
        kl_normal(0.0, a, log_scale_p=0.0, log_scale_q=b)
        if prior_first
        else kl_normal(a, 0.0, log_scale_p=b, log_scale_q=0.0)
        for a, b in rows
    ]
    errors = ulp_errors(backend.to_numpy(got), exact, np.dtype(name).type)
    assert np.all(errors <= 4 + 2 * np.abs(log_scale.astype(name))), errors.max()


@pytest.mark.parametrize("parameterization", ["scale-log", "log-scale"])
def test_mixed_accuracy_with_a_broadcast_scale(backend, xp, dtype, parameterization):
    """A scale shared along an axis (a prior, a per-feature scale) against log-scales: the
    words of log(scale) are summed on the scale's own shape first; same bounds."""
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    name = dtype_name(dtype)
    s = normal_sweep(name, p_by_log, q_by_log)

    def columns(values, shared):  # (n, 1) for the scale, (n, 2) for everything else
        return values[:, None] if shared else np.stack([values, values], axis=1)

    p = normal(backend, dtype, columns(s.loc_p, False), columns(s.p_param, not p_by_log), p_by_log)
    q = normal(backend, dtype, columns(s.loc_q, False), columns(s.q_param, not q_by_log), q_by_log)
    result = kb.kl_divergence(p, q)
    assert_array(result, xp=xp, dtype=dtype, shape=(len(s.loc_p), 2))
    got = backend.to_numpy(result)
    allowed = allowed_ulps(s)
    for column in range(2):
        errors = ulp_errors(got[:, column], list(s.exact), np.dtype(name).type)
        worst = int(np.argmax(errors - allowed))
        assert errors[worst] <= allowed[worst], (
            f"{errors[worst]:.2f} ulp (allowed {allowed[worst]:.2f}) at p={s.p_param[worst]!r}, "
            f"q={s.q_param[worst]!r}"
        )


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_exactly_zero_for_identical(backend, dtype, parameterization):
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    loc = np.array([0.0, -3.5, 1e20, 7e-20])
    log_scale = np.array([0.0, 12.25, -20.5, 3.0])
    scale = np.exp(log_scale).astype(dtype_name(dtype))
    p_param = log_scale if p_by_log else scale
    q_param = log_scale if q_by_log else scale
    if p_by_log != q_by_log:
        # Identical distributions need exp(log_scale) == scale exactly: use log-scale 0.
        p_param, q_param = (
            np.zeros(4) if p_by_log else np.ones(4),
            np.zeros(4) if q_by_log else np.ones(4),
        )
    p = normal(backend, dtype, loc, p_param, p_by_log)
    q = normal(backend, dtype, loc, q_param, q_by_log)
    got = backend.to_numpy(kb.kl_divergence(p, q))
    np.testing.assert_array_equal(got, np.zeros(4))


def test_no_spurious_overflow(backend, dtype):
    """inf only where the exact KL exceeds the largest float; never from an intermediate."""
    name = dtype_name(dtype)
    largest = float(ml_dtypes.finfo(name).max)
    # KL ~ exp(2r)/2: with 2r just below log(2*max) the result is finite although exp(2r) is not.
    r_finite = (math.log(2) + math.log(largest) - 0.02) / 2
    r_infinite = (math.log(2) + math.log(largest) + 0.02) / 2
    log_p = np.array([r_finite, r_infinite, -r_finite, 0.0], dtype=name)
    loc_p = np.array([0.0, 0.0, 0.0, math.sqrt(largest)], dtype=name)  # last: d**2/2 = max/2
    q = normal(backend, dtype, np.zeros(4), np.zeros(4), True)
    got = backend.to_numpy(kb.kl_divergence(normal(backend, dtype, loc_p, log_p, True), q))
    exact = [
        kl_normal(float(a), 0.0, log_scale_p=float(b), log_scale_q=0.0)
        for a, b in zip(loc_p, log_p, strict=False)
    ]
    assert np.isfinite(got[0])
    assert got[1] == np.inf
    assert np.isfinite(got[2])
    assert np.isfinite(got[3])
    errors = ulp_errors(got, exact, np.dtype(name).type)
    assert np.all(errors[[0, 2, 3]] <= 4 + 2 * abs(float(log_p[0])))


def assert_within_4_ulp_of_mpmath(backend, dtype, scale_p, scale_q) -> np.ndarray:
    """KL of N(0, scale_p) || N(0, scale_q) within 4 ulp of mpmath; returns it as NumPy."""
    loc = np.zeros(len(scale_p), dtype=scale_p.dtype)
    got = backend.to_numpy(
        kb.kl_divergence(
            normal(backend, dtype, loc, scale_p, False), normal(backend, dtype, loc, scale_q, False)
        )
    )
    exact = [kl_normal(0.0, 0.0, float(a), float(b)) for a, b in zip(scale_p, scale_q, strict=True)]
    errors = ulp_errors(got, exact, scale_p.dtype.type)
    assert np.all(errors <= 4), (errors, got)
    return got


def test_scale_ratio_beyond_the_float_range(backend, dtype):
    """s/t below the smallest normal float (its log and the KL are moderate): no inf, no
    lost bits.  Scales near the largest float at moderate ratios (no intermediate such as
    2s may overflow).  And s/t beyond the largest float, where the KL itself overflows."""
    name = dtype_name(dtype)
    info = ml_dtypes.finfo(name)
    smallest_normal, largest = float(info.tiny), float(info.max)
    # (scale_p, scale_q): tiny ratios; huge scales at ratios 9, 3 and 1.5; an overflowing KL
    rows = [
        (1.5 * smallest_normal, 0.5 * largest),
        (2.0 ** (info.minexp // 2), 2.0 ** (info.maxexp // 2)),
        (1e-3 * largest**0.25, 7.0 * largest**0.5),
        (3.0, 1e-6),
        (0.9 * largest, 0.1 * largest),
        (0.9 * largest, 0.3 * largest),
        (0.75 * largest, 0.5 * largest),
        (1.0, smallest_normal),
    ]
    scale_p = np.array([row[0] for row in rows], dtype=name)
    scale_q = np.array([row[1] for row in rows], dtype=name)
    got = assert_within_4_ulp_of_mpmath(backend, dtype, scale_p, scale_q)
    assert got[-1] == np.inf  # (s/t)**2/2 > max


def test_scales_at_the_bottom_of_the_normal_range(backend, dtype):
    """Near-equal scales up to 2**52 times the smallest normal float, in every series window:
    their difference is subnormal, which JAX and CuPy flush to 0, unless the scales are
    lifted (a lift from 2**26 only, as float32 needs, left float64 at 0 near 1e-298)."""
    name = dtype_name(dtype)
    smallest = float(ml_dtypes.finfo(name).tiny)
    rows = [
        (ratio * multiple * smallest, multiple * smallest)
        for multiple in (1.0, 3.0, 1e3, 2.0**26, 2.0**40, 2.0**52)
        for ratio in (0.3, 0.45, 0.9, 1 + 1e-3, 1 + 2.0**-20, 1 - 2.0**-45, 1.7, 3.0)
    ]
    scale_p = np.array([r[0] for r in rows], dtype=name)
    scale_q = np.array([r[1] for r in rows], dtype=name)
    keep = scale_p >= smallest
    assert_within_4_ulp_of_mpmath(backend, dtype, scale_p[keep], scale_q[keep])


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_nan_in_nan_out(backend, dtype, parameterization):
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    one = 0.0 if p_by_log else 1.0
    loc = np.array([np.nan, 0.0, 0.0, 0.0])
    p_param = np.array([one, np.nan, one, one])
    q_param = np.array([0.0 if q_by_log else 1.0] * 3 + [np.nan])
    p = normal(backend, dtype, loc, p_param, p_by_log)
    q = normal(backend, dtype, np.array([0.0, 0.0, np.nan, 0.0]), q_param, q_by_log)
    got = backend.to_numpy(kb.kl_divergence(p, q))
    assert np.all(np.isnan(got)), got


def test_invalid_scale_gives_nan_by_default(backend, dtype):
    p = normal(backend, dtype, np.zeros(4), np.array([-1.0, 1.0, -2.0, -1.0]), False)
    q = normal(backend, dtype, np.zeros(4), np.array([1.0, -1.0, -2.0, 0.5]), False)
    got = backend.to_numpy(kb.kl_divergence(p, q))
    assert np.all(np.isnan(got)), got


@pytest.mark.parametrize("parameterization", ["scale-scale", "scale-log", "log-scale"])
def test_infinite_scale_is_outside_the_domain(backend, dtype, parameterization):
    """A Normal needs a finite scale: an infinite one gives NaN (validate=True raises)."""
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    p_param, q_param = {
        "scale-scale": ([np.inf, 1.0], [1.0, np.inf]),
        "scale-log": ([np.inf, np.inf], [0.0, 5.0]),
        "log-scale": ([0.0, 5.0], [np.inf, np.inf]),
    }[parameterization]
    p = normal(backend, dtype, np.zeros(2), np.array(p_param), p_by_log)
    q = normal(backend, dtype, np.zeros(2), np.array(q_param), q_by_log)
    assert np.all(np.isnan(backend.to_numpy(kb.kl_divergence(p, q))))
    with pytest.raises(ValueError, match="finite and > 0"):
        kb.Normal(0.0, backend.asarray(np.array([np.inf]), dtype), validate=True)


def test_infinite_log_scale_gives_inf(backend, dtype):
    p = normal(backend, dtype, np.zeros(2), np.array([np.inf, 0.0]), True)
    q = normal(backend, dtype, np.zeros(2), np.array([0.0, -np.inf]), True)
    np.testing.assert_array_equal(backend.to_numpy(kb.kl_divergence(p, q)), [np.inf, np.inf])


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_infinite_location_gives_inf(backend, dtype, parameterization):
    """An infinite location of one distribution gives +inf, whatever the log-scale of q
    (both forms of the location term, |log_scale_q| below and above its threshold); two
    equal infinite locations give NaN (inf - inf)."""
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    name = dtype_name(dtype)
    beyond = 0.5 * math.log(float(ml_dtypes.finfo(name).max))  # above the threshold 0.45 log(max)
    log_p = np.array([0.0, 0.3, -beyond, beyond, 0.0])
    log_q = np.array([0.0, -0.2, -beyond, beyond, 0.0])
    loc_p = np.array([np.inf, -np.inf, np.inf, 1.0, np.inf])
    loc_q = np.array([0.0, 2.0, 0.0, -np.inf, np.inf])
    p = normal(backend, dtype, loc_p, log_p if p_by_log else np.exp(log_p), p_by_log)
    q = normal(backend, dtype, loc_q, log_q if q_by_log else np.exp(log_q), q_by_log)
    got = backend.to_numpy(kb.kl_divergence(p, q))
    np.testing.assert_array_equal(got, [np.inf, np.inf, np.inf, np.inf, np.nan])


def test_zero_scale_gives_inf(backend, dtype):
    """The limit KL -> inf as one scale -> 0 (the 0/0 of equal locations and a zero scale
    of q is NaN)."""
    p = normal(backend, dtype, np.zeros(2), np.array([0.0, 1.0]), False)
    q = normal(backend, dtype, np.array([0.0, 1.0]), np.array([1.0, 0.0]), False)
    np.testing.assert_array_equal(backend.to_numpy(kb.kl_divergence(p, q)), [np.inf, np.inf])


def test_known_value(backend, xp, dtype):
    # KL(N(1, 2^2) || N(0, 1)) = log(1/2) + (4 + 1)/2 - 1/2
    p = normal(backend, dtype, np.array([1.0]), np.array([2.0]), False)
    q = normal(backend, dtype, np.array([0.0]), np.array([1.0]), False)
    got = backend.to_numpy(kb.kl_divergence(p, q))
    np.testing.assert_allclose(
        got, [2 - math.log(2)], rtol=4 * float(ml_dtypes.finfo(dtype_name(dtype)).eps)
    )


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
log_scales = st.floats(-8, 8, width=32)


@given(
    st.lists(st.tuples(finite, log_scales, finite, log_scales), min_size=1, max_size=16),
    st.booleans(),
)
def test_nonnegative_and_zero_iff_equal(backend, dtype, rows, by_log):
    a, la, b, lb = (np.array(col, dtype=np.float32) for col in zip(*rows, strict=False))
    if not by_log:
        la, lb = np.exp(la), np.exp(lb)
    got = backend.to_numpy(
        kb.kl_divergence(
            normal(backend, dtype, a, la, by_log), normal(backend, dtype, b, lb, by_log)
        )
    )
    assert np.all(got >= 0)
    # zero exactly where the exact KL rounds to zero (it is 0 iff the parameters are equal,
    # but a tiny exact KL can underflow)
    name = dtype_name(dtype)
    args = ("log_scale_p", "log_scale_q") if by_log else ("scale_p", "scale_q")
    exact = [kl_normal(float(x), float(y), **{args[0]: float(u), args[1]: float(v)})
             for x, u, y, v in zip(a.astype(name), la.astype(name), b.astype(name), lb.astype(name), strict=False)]  # fmt: skip
    half_smallest = mpmath.mpf(float(ml_dtypes.finfo(name).smallest_subnormal)) / 2
    zero = np.array([e < half_smallest for e in exact])
    if backend.flushes_subnormals:
        # XLA and CuPy flush subnormal results to 0: a KL below the smallest normal may be 0
        smallest_normal = mpmath.mpf(float(ml_dtypes.finfo(name).smallest_normal))
        clear = np.array([e < half_smallest or e >= 2 * smallest_normal for e in exact])
        np.testing.assert_array_equal((got == 0)[clear], zero[clear])
    else:
        np.testing.assert_array_equal(got == 0, zero)


@given(
    st.lists(st.tuples(finite, log_scales, finite, log_scales), min_size=1, max_size=16),
    st.integers(-20, 20),
    st.floats(-100, 100, width=16),
)
def test_invariant_under_shared_shift_and_scale(backend, dtype, rows, exponent, shift):
    """KL(N(ca+s, cx) || N(cb+s, cy)) == KL(N(a, x) || N(b, y)).

    Scaling by a power of two and shifting by a float with few bits are exact on the
    parameters, so the two KLs agree to the accuracy bound of each.
    """
    name = dtype_name(dtype)
    a, la, b, lb = (
        np.array(col, dtype=np.float32).astype(name) for col in zip(*rows, strict=False)
    )
    x, y = np.exp(la).astype(name), np.exp(lb).astype(name)
    c = 2.0**exponent
    base = kb.kl_divergence(
        normal(backend, dtype, a, x, False), normal(backend, dtype, b, y, False)
    )
    moved = kb.kl_divergence(
        normal(backend, dtype, c * a.astype(np.float64) + c * shift, c * x, False),
        normal(backend, dtype, c * b.astype(np.float64) + c * shift, c * y, False),
    )
    base, moved = backend.to_numpy(base), backend.to_numpy(moved)
    # the shift is exact only when it does not round the locations
    exact_shift = (np.asarray(c * a + c * shift, dtype=name) - c * shift == c * a) & (
        np.asarray(c * b + c * shift, dtype=name) - c * shift == c * b
    )
    eps = float(ml_dtypes.finfo(name).eps)
    np.testing.assert_allclose(moved[exact_shift], base[exact_shift], rtol=8 * eps, atol=0)


def test_broadcasting_and_axis(backend, xp, dtype):
    rng = np.random.default_rng(1)
    loc_p, loc_q = rng.normal(size=(4, 1, 3)), rng.normal(size=(5, 3))
    scale_p, scale_q = np.exp(rng.normal(size=(3,))), np.exp(rng.normal(size=(1, 3)))
    p = kb.Normal(backend.asarray(loc_p, dtype), backend.asarray(scale_p, dtype))
    q = kb.Normal(backend.asarray(loc_q, dtype), backend.asarray(scale_q, dtype))
    full = kb.kl_divergence(p, q)
    assert_array(full, xp=xp, dtype=dtype, shape=(4, 5, 3))
    expected = (
        np.log(scale_q / scale_p) + (scale_p**2 + (loc_p - loc_q) ** 2) / (2 * scale_q**2) - 0.5
    )
    rtol = 1e-5 if dtype_name(dtype) == "float32" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(full), expected, rtol=rtol)
    for axis, shape in ((-1, (4, 5)), ((0, 2), (5,)), ((0, 1, 2), ())):
        reduced = kb.kl_divergence(p, q, axis=axis)
        assert_array(reduced, xp=xp, dtype=dtype, shape=shape)
        np.testing.assert_allclose(backend.to_numpy(reduced), expected.sum(axis=axis), rtol=rtol)


def test_python_scalars_mix_with_arrays(backend, xp, dtype):
    p = kb.Normal(backend.asarray([0.0, 1.0], dtype), 1.0)
    q = kb.Normal(0.0, log_scale=0.0)
    result = kb.kl_divergence(p, q)
    assert_array(result, xp=xp, dtype=dtype, shape=(2,))
    np.testing.assert_allclose(backend.to_numpy(result), [0.0, 0.5])


def test_all_python_scalars_give_numpy_float64():
    result = kb.kl_divergence(kb.Normal(1.0, 2.0), kb.Normal(0, 1))
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float64
    assert result.shape == ()
    assert float(result) == pytest.approx(2 - math.log(2), rel=1e-15)


def test_type_promotion(backend, xp):
    p = kb.Normal(backend.asarray([0.0], xp.float32), backend.asarray([1.0], xp.float32))
    q = kb.Normal(backend.asarray([0.0], xp.float64), backend.asarray([2.0], xp.float32))
    assert kb.kl_divergence(p, q).dtype == xp.float64


def test_result_on_input_device(backend, xp, dtype):
    device = backend.device()
    p = normal(backend, dtype, np.zeros(3), np.ones(3), False, device)
    q = normal(backend, dtype, np.ones(3), np.zeros(3), True, device)
    result = kb.kl_divergence(p, q, axis=0)
    assert_array(result, xp=xp, dtype=dtype, shape=(), device=device)
    assert float(backend.to_numpy(result)) == pytest.approx(1.5)
