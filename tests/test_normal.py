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
from tests.conftest import assert_array, dtype_name, finfo, is_half, ulp_bound, working_name
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


def in_ulps_of(dtype, working_ulps):
    """An allowance of ``working_ulps`` ulp of the dtype the KL is computed in, in ulp of
    ``dtype``: itself for float32 and float64; for the half dtypes, computed in float32,
    ``working_ulps * eps(float32) / eps(half)`` (2**-13 in float16, 2**-16 in bfloat16)."""
    if not is_half(dtype):
        return working_ulps
    return working_ulps * float(finfo("float32").eps) / float(finfo(dtype).eps)


def bound_with_allowance(dtype, log_ratio):
    """4 ulp plus 2|r| ulp, the unavoidable rounding of ``r = log(scale_p/scale_q)``
    amplified by exp(2r); for the half dtypes 1 ulp (the float32 result rounded once) plus
    that allowance, which is incurred in float32 (:func:`in_ulps_of`).  Where exp(2r)
    amplifies (r > 0) and the KL is finite, r < 5.9 in float16 and 44.7 in bfloat16: at
    most 0.0015 ulp.  (For r < 0 the KL is about |r|, and the allowance, larger for
    float16 log-scales far apart, is more than that rounding needs.)"""
    return ulp_bound(dtype, 4.0) + in_ulps_of(dtype, 2 * np.abs(log_ratio))


def allowed_ulps(s, dtype) -> np.ndarray:
    """The error bound, in ulp of ``dtype``, for each row of a sweep: 4 ulp, plus 2|r| ulp
    wherever a log-scale is involved (two log-scales, or mixed), the unavoidable rounding of
    r amplified by exp(2r) (:func:`bound_with_allowance`; 1 ulp and a few thousandths for the
    half dtypes).  Mixed rows get no allowance for log(scale): it is not rounded."""
    if s.p_by_log or s.q_by_log:
        return bound_with_allowance(dtype, s.log_ratio)
    return ulp_bound(dtype, 4.0) + 0.0 * s.log_ratio


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_accuracy_against_mpmath(backend, xp, dtype, parameterization):
    """Within :func:`allowed_ulps` of an mpmath reference on the exact float inputs.

    The sweep covers log-scale ratios and standardized gaps from 1e-12 to 1e2 of both signs,
    log-scales from -30 to 30, and exact equality.  For the half dtypes (1 ulp) it is drawn
    in their range and resolution (see :func:`~tests.reference.normal.normal_sweep`): ratios
    and gaps from a thousandth of an ulp, KLs from 0 through subnormal to near the largest
    float16, scales over 0.8 of the exponent range.
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
    allowed = allowed_ulps(s, dtype)
    worst = int(np.argmax(errors - allowed))
    assert errors[worst] <= allowed[worst], (
        f"{errors[worst]:.2f} ulp (allowed {allowed[worst]:.2f}) at loc_p={s.loc_p[worst]!r}, "
        f"loc_q={s.loc_q[worst]!r}, p={s.p_param[worst]!r}, q={s.q_param[worst]!r}"
    )


@pytest.mark.parametrize("p_by_log", [False, True], ids=["scale-log", "log-scale"])
def test_one_distribution_given_both_ways(backend, xp, dtype, p_by_log):
    """A scale against its own rounded log (or a log-scale against its rounded exp): the
    KL, about r**2 with |r| below an ulp of log(scale), within 4 ulp (1 in half)."""
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
    bound = ulp_bound(dtype, 4)
    assert errors[worst] <= bound, f"{errors[worst]:.2f} ulp at scale={scale[worst]!r}"


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
        allowed += [bound_with_allowance(dtype, abs(float(r[i])))] * 2
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
    # a tiny log-scale (float16 holds no 1e-30: its smallest normal), and one whose KL
    # overflows (in float16 many do: exp(2 log_scale) > 65504 from log_scale = 5.5)
    tiny = max(1e-30, float(finfo(dtype).smallest_normal))
    log_scale = np.concatenate([rng.normal(0.0, 2.0, 60), [0.0, -0.0, tiny, 20.0]])
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
    allowed = bound_with_allowance(dtype, np.abs(log_scale.astype(name).astype(np.float64)))
    assert np.all(errors <= allowed), errors.max()


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
    allowed = allowed_ulps(s, dtype)
    for column in range(2):
        errors = ulp_errors(got[:, column], list(s.exact), np.dtype(name).type)
        worst = int(np.argmax(errors - allowed))
        assert errors[worst] <= allowed[worst], (
            f"{errors[worst]:.2f} ulp (allowed {allowed[worst]:.2f}) at p={s.p_param[worst]!r}, "
            f"q={s.q_param[worst]!r}"
        )


@pytest.mark.parametrize("parameterization", list(PARAMETERIZATIONS))
def test_exactly_zero_for_identical(backend, dtype, parameterization):
    """Identical parameters give exactly 0, with locations and scales far from 1 (as far
    as the dtype's range allows: float16 holds 1e20 and exp(12.25) as inf)."""
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    info = finfo(dtype)
    largest_log = math.log(float(info.max))
    smallest_log = math.log(float(info.smallest_normal))
    big, small = min(1e20, 0.5 * float(info.max)), max(7e-20, 7 * float(info.smallest_normal))
    loc = np.array([0.0, -3.5, big, small])
    log_scale = np.array([0.0, min(12.25, 0.8 * largest_log), max(-20.5, 0.8 * smallest_log), 3.0])
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

    def kl_of(log_scale):  # KL(N(0, exp(log_scale)) || N(0, 1)), exact
        return kl_normal(0.0, 0.0, log_scale_p=float(log_scale), log_scale_q=0.0)

    # KL ~ exp(2r)/2: with 2r just below log(2*max) the result is finite although exp(2r) is not.
    # Rounded to the dtype, r may cross that threshold (bfloat16's ulp is 1/4 there): the
    # nearest log-scales of the dtype on the right sides.
    r_finite = np.asarray((math.log(2) + math.log(largest) - 0.02) / 2, dtype=name)
    while kl_of(r_finite) >= largest:
        r_finite = np.nextafter(r_finite, np.asarray(0, dtype=name))
    info = ml_dtypes.finfo(name)
    rounds_to_inf = largest + mpmath.mpf(2) ** (info.maxexp - 1 - info.nmant) / 2  # max + ulp/2
    r_infinite = np.asarray((math.log(2) + math.log(largest) + 0.02) / 2, dtype=name)
    while kl_of(r_infinite) <= rounds_to_inf:
        r_infinite = np.nextafter(r_infinite, np.asarray(np.inf, dtype=name))
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
    assert np.all(errors[[0, 2, 3]] <= bound_with_allowance(dtype, abs(float(log_p[0]))))


def assert_within_4_ulp_of_mpmath(backend, dtype, scale_p, scale_q) -> np.ndarray:
    """KL of N(0, scale_p) || N(0, scale_q) within 4 ulp of mpmath (1 in half); returns it
    as NumPy."""
    loc = np.zeros(len(scale_p), dtype=scale_p.dtype)
    got = backend.to_numpy(
        kb.kl_divergence(
            normal(backend, dtype, loc, scale_p, False), normal(backend, dtype, loc, scale_q, False)
        )
    )
    exact = [kl_normal(0.0, 0.0, float(a), float(b)) for a, b in zip(scale_p, scale_q, strict=True)]
    errors = ulp_errors(got, exact, scale_p.dtype.type)
    assert np.all(errors <= ulp_bound(dtype, 4)), (errors, got)
    return got


def test_scale_ratio_beyond_the_float_range(backend, dtype):
    """s/t below the smallest normal float (its log and the KL are moderate): no inf, no
    lost bits.  Scales near the largest float at moderate ratios (no intermediate such as
    2s may overflow).  And s/t beyond the largest float, where the KL itself overflows.
    In float16 a large ratio with a finite KL is at most sqrt(2 * 65504) = 362: the row
    (3, 1e-6) becomes (3, 30/sqrt(max)), a ratio of 25.6."""
    name = dtype_name(dtype)
    info = ml_dtypes.finfo(name)
    smallest_normal, largest = float(info.tiny), float(info.max)
    # (scale_p, scale_q): tiny ratios; huge scales at ratios 9, 3 and 1.5; an overflowing KL
    rows = [
        (1.5 * smallest_normal, 0.5 * largest),
        (2.0 ** (info.minexp // 2), 2.0 ** (info.maxexp // 2)),
        (1e-3 * largest**0.25, 7.0 * largest**0.5),
        (3.0, max(1e-6, 30 / largest**0.5)),
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
    lifted (a lift from 2**26 only, as float32 needs, left float64 at 0 near 1e-298).  Plus
    ratios 1 + eps and 1 - eps/2, the nearest to 1 the dtype holds.  bfloat16 shares
    float32's range, which it is computed in: its differences are subnormal there too.
    float16's bottom is normal in float32, and its range ends below 2**16 (multiples
    beyond it are left out)."""
    name = dtype_name(dtype)
    info = ml_dtypes.finfo(name)
    smallest = float(info.tiny)
    rows = [
        (ratio * multiple * smallest, multiple * smallest)
        for multiple in (1.0, 3.0, 1e3, 2.0**26, 2.0**40, 2.0**52)
        for ratio in (
            *(0.3, 0.45, 0.9, 1 + 1e-3, 1 + 2.0**-20, 1 - 2.0**-45, 1.7, 3.0),
            *(1 + float(info.eps), 1 - float(info.epsneg)),
        )
        if ratio * multiple * smallest <= float(info.max) and multiple * smallest <= float(info.max)
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
    equal infinite locations give NaN (inf - inf).  The threshold, 0.45 log(max), is that of
    the dtype computed in, float32 for half inputs: float16 holds log-scales beyond it, but
    not their scales, which stay within its range (exp(±5.5))."""
    p_by_log, q_by_log = PARAMETERIZATIONS[parameterization]
    name = dtype_name(dtype)
    working = "float32" if is_half(dtype) else name
    beyond = 0.5 * math.log(float(finfo(working).max))  # above the threshold 0.45 log(max)
    in_range = 0.5 * math.log(float(finfo(dtype).max))  # scales: finite floats of the dtype
    log_p = np.array([0.0, 0.3, -beyond, beyond, 0.0])
    log_q = np.array([0.0, -0.2, -beyond, beyond, 0.0])
    loc_p = np.array([np.inf, -np.inf, np.inf, 1.0, np.inf])
    loc_q = np.array([0.0, 2.0, 0.0, -np.inf, np.inf])

    def scale(log_scale):
        return np.exp(np.clip(log_scale, -in_range, in_range))

    p = normal(backend, dtype, loc_p, log_p if p_by_log else scale(log_p), p_by_log)
    q = normal(backend, dtype, loc_q, log_q if q_by_log else scale(log_q), q_by_log)
    got = backend.to_numpy(kb.kl_divergence(p, q)).astype(np.float64)  # NaN of bfloat16 too
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
        got, [2 - math.log(2)], rtol=ulp_bound(dtype, 4) * float(finfo(dtype).eps)
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
        # (in the dtype computed in: float32 for a half dtype)
        smallest_normal = mpmath.mpf(float(ml_dtypes.finfo(working_name(name)).smallest_normal))
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
    parameters, so the two KLs agree to the accuracy bound of each (2 ulp apart at most in
    half, 8 in float32 and float64).  Rows where the dtype cannot hold the moved parameters
    exactly (a rounded shift, a scale out of range) are left out; float16, whose largest
    float is 65504, takes ``c`` within ``2**±3`` (the parameters reach about 2**12).
    """
    name = dtype_name(dtype)
    info = finfo(dtype)
    limit = min(20, info.maxexp - 13)  # c times the largest parameter stays finite
    c = 2.0 ** max(-limit, min(limit, exponent))
    a, la, b, lb = (
        np.array(col, dtype=np.float32).astype(name) for col in zip(*rows, strict=False)
    )
    x, y = np.exp(la).astype(name), np.exp(lb).astype(name)
    a, b, x, y = (v.astype(np.float64) for v in (a, b, x, y))  # exact
    moved_a, moved_b = exact_sum(c * a, c * shift), exact_sum(c * b, c * shift)
    base = kb.kl_divergence(
        normal(backend, dtype, a, x, False), normal(backend, dtype, b, y, False)
    )
    moved = kb.kl_divergence(
        normal(backend, dtype, np.nan_to_num(moved_a), c * x, False),
        normal(backend, dtype, np.nan_to_num(moved_b), c * y, False),
    )
    base, moved = backend.to_numpy(base), backend.to_numpy(moved)
    exact = held_exactly(moved_a, name) & held_exactly(moved_b, name)
    exact &= held_exactly(c * x, name) & held_exactly(c * y, name)
    bound = ulp_bound(dtype, 4)
    # float16 KLs are often subnormal (r = 1e-3 gives 1e-6), where an ulp is absolute
    atol = 2 * bound * float(info.smallest_subnormal) if is_half(dtype) else 0.0
    np.testing.assert_allclose(
        moved[exact], base[exact], rtol=2 * bound * float(info.eps), atol=atol
    )


def exact_sum(x, y):
    """``x + y`` in float64 where that sum is exact (TwoSum's error is 0), else NaN."""
    total = x + y
    virtual = total - x
    error = (x - (total - virtual)) + (y - virtual)
    return np.where(error == 0, total, np.nan)


def held_exactly(values, name):
    """Where the float64 ``values`` are finite and held exactly by the dtype ``name``."""
    with np.errstate(over="ignore", invalid="ignore"):
        held = np.asarray(values, dtype=name).astype(np.float64)
    return np.isfinite(values) & (held == values)


def test_broadcasting_and_axis(backend, xp, dtype):
    """KLs over the broadcast batch, and their sums over axes, against the closed form in
    float64 on the exact inputs: rtol 1e-5 in float32, 1e-12 in float64, and eps (1 ulp)
    in half, whose sums are also taken in float32 and rounded once."""
    name = dtype_name(dtype)
    rng = np.random.default_rng(1)
    loc_p, loc_q = rng.normal(size=(4, 1, 3)), rng.normal(size=(5, 3))
    scale_p, scale_q = np.exp(rng.normal(size=(3,))), np.exp(rng.normal(size=(1, 3)))
    loc_p, loc_q, scale_p, scale_q = (
        np.asarray(v, dtype=name).astype(np.float64) for v in (loc_p, loc_q, scale_p, scale_q)
    )
    p = kb.Normal(backend.asarray(loc_p, dtype), backend.asarray(scale_p, dtype))
    q = kb.Normal(backend.asarray(loc_q, dtype), backend.asarray(scale_q, dtype))
    full = kb.kl_divergence(p, q)
    assert_array(full, xp=xp, dtype=dtype, shape=(4, 5, 3))
    expected = (
        np.log(scale_q / scale_p) + (scale_p**2 + (loc_p - loc_q) ** 2) / (2 * scale_q**2) - 0.5
    )
    rtol = {"float32": 1e-5, "float64": 1e-12}.get(name, float(finfo(dtype).eps))
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
