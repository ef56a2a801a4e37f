r"""``log(scale) - log_scale`` to about one unit of roundoff, in the input's dtype.

The mixed parameterizations of a KL (one scale given by itself, the other by its log) need
``r = log(s) - L``.  Near equality ``|r|`` is tiny while ``|log s|`` may be ~88 (float32)
or ~709 (float64), so ``fl(log s) - L`` carries the rounding of ``log s``, amplified by
``|log s| / |r|``.  Here ``log s`` is never rounded: it is split into pieces that are exact,
or carried in two or three words (error-free transformations, Dekker and Knuth, with no
FMA, which the array API lacks), and the pieces cancel against ``L`` exactly.

Only standard elementwise functions are used; no Python control flow on values.
"""

from __future__ import annotations

import math
from typing import Any

from . import _namespace
from .special import mask

__all__: list[str] = []

# ln 2 in pieces.  All but the last have few enough bits that k * piece is exact for every
# exponent k (|k| <= 1075 in float64, 150 in float32): 42 bits for float64, 16 for float32.
_LN2_FLOAT64 = (0.6931471805598903, 5.49792301870721e-14, 1.1612227229362532e-26)
_LN2_FLOAT32 = (
    0.693145751953125, 1.4285906217992306e-06, 1.6198153929281034e-11, 3.562573724641692e-16,
)  # fmt: skip

# 2 atanh(f) = 2f + f w R(w), w = f**2, R(w) = sum_n 2 w**n / (2n + 3) (Taylor: on
# |f| <= 0.1716 the terms fall by w <= 0.0295 each).  The leading terms, whose rounding would
# exceed the target (2**-96 absolute in float64, 2**-57 in float32), are evaluated in double
# words with coefficients split as (hi, lo); the rest in plain Horner.  The numbers of terms
# are the lowest for which the measured error of r stays below one ulp of r for |r| >= 1e-12
# (float64; 5 levels give 3 ulp) and for the float32 rows of the Normal sweep (4 levels give
# 6 ulp at r = -1.96e-10).
_DOUBLE_FLOAT64 = (
    (0.6666666666666666, 3.700743415417188e-17), (0.4, -2.2204460492503132e-17),
    (0.2857142857142857, 1.586032892321652e-17), (0.2222222222222222, 1.2335811384723961e-17),
    (0.18181818181818182, -5.046468293750712e-18), (0.15384615384615385, -8.540177112501205e-18),
)  # fmt: skip
_PLAIN_FLOAT64 = tuple(2 / (2 * n + 3) for n in range(6, 18))
_DOUBLE_FLOAT32 = (
    (0.6666666865348816, -1.9868215517249155e-08), (0.4000000059604645, -5.9604645663569045e-09),
    (0.2857142984867096, -1.277242400732348e-08), (0.2222222238779068, -1.6556845894299954e-09),
    (0.1818181872367859, -5.418604231977042e-09), (0.1538461595773697, -5.7312159462696854e-09),
)  # fmt: skip
_PLAIN_FLOAT32 = tuple(2 / (2 * n + 3) for n in range(6, 9))


def _two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth; 6 operations)."""
    s = a + b
    b_virtual = s - a
    return s, (a - (s - b_virtual)) + (b - b_virtual)


def _fast_two_sum(a: Any, b: Any) -> tuple[Any, Any]:
    """As :func:`_two_sum` where ``|a| >= |b|`` or ``a = 0`` (Dekker; 3 operations)."""
    s = a + b
    return s, b - (s - a)


def _split(a: Any, factor: float, zero: Any) -> tuple[Any, Any]:
    """Veltkamp: ``a = hi + lo`` exactly, each half as wide (5 operations).

    ``zero`` (an array of zeros) makes the product an addition, which a compiler cannot
    contract with the next subtraction into an FMA (that would round differently).
    """
    c = a * factor + zero
    hi = c - (c - a)
    return hi, a - hi


def _two_product(a: Any, b: Any, factor: float, zero: Any) -> tuple[Any, Any]:
    """``(p, e)`` with ``p = fl(a b)`` and ``p + e = a b`` exactly (Dekker; 19 operations).

    ``p`` is returned as ``a b + zero``: where it is added to or subtracted from something,
    a compiler that contracts a product and a sum into an FMA (XLA on CPU does, after it
    duplicates a product into each consumer) would otherwise use the exact ``a b`` there
    while ``e`` is also counted.  The other products are exact, so contracting them is
    harmless.
    """
    p = a * b + zero
    a_hi, a_lo = _split(a, factor, zero)
    b_hi, b_lo = _split(b, factor, zero)
    return p, ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo


def log_difference(scale: Any, log_scale: Any, xp: Any) -> Any:
    r"""``log(scale) - log_scale``, correct to about one ulp of the result however small.

    Parameters
    ----------
    scale, log_scale : array
        Real floating arrays of namespace ``xp``, of one dtype, broadcastable.

    Returns
    -------
    array
        ``r = log(s) - L``.  NaN for NaN, a negative or an infinite ``s``; ``-inf`` for
        ``s = 0``; ``-/+max`` for ``L = +/-inf`` (so that ``expm1mx(2r)`` is ``inf``).

    Notes
    -----
    With ``k`` an integer near ``log2 s`` and ``m = s 2**-k`` (exact, in ``[0.7, 1.42]``),
    ``e = m - 1`` (exact) and ``f = e/(2 + e)``,

    .. math::

        r = (k \ln 2_1 - L) + 2f + f w R(w) + k(\ln 2_2 + \ln 2_3 + \dots),
        \qquad w = f^2,

    since ``log m = 2 atanh(f)``.  ``k ln2_1`` is exact and so is its difference with ``L``
    wherever ``r`` is small (Sterbenz); ``f`` is carried as ``f1 + f2`` (float64) or
    ``f1 + f2 + f3`` (float32) from the exact residual ``e - f1 (2 + e) = (e - 2 f1) - f1 e``
    (TwoProduct); ``f w R(w)`` in double words; and the large pieces are added by TwoSum, so
    the cancellation of ``k ln 2 + log m`` against ``L`` is exact, and the result is rounded
    about once.  No backend ``log`` is relied on (``log2`` only picks ``k``; any nearby
    integer serves).

    Measured against mpmath on exact float inputs with ``1e-12 <= |r| <= 10`` and
    ``|log s|`` up to the dtype's limit: at most 0.5 ulp in float64; in float32 at most
    0.6 ulp on that sweep, but the float32 words carry ``log m`` only to about ``2**-55``
    absolute (measured 2.2 ulp of r at ``r = -1.96e-10``, ``s = 2.735742``), so below
    ``|r| ~ 1e-9`` that floor, not the rounding of ``r``, bounds the error.

    Cost, counted as jaxpr equations (elementwise operations; constants folded): 386 in
    float64, 411 in float32, of which 2 ``pow``, 1 ``log2``, 1 ``round``, 1 ``floor``,
    2 ``clip``, 4-5 divisions, the rest additions and multiplications (ten TwoProducts
    of 19 operations each are most of it: the double-word series needs 6 levels in float64
    and float32 alike).  Fused (``jax.jit``) this is cheap; eagerly each is a pass over
    the data.

    All of that depends on ``s`` alone.  Where ``s`` has fewer elements than the result (a
    prior ``N(0, 1)`` or a per-feature scale against a batch of log-scales), the pieces are
    first summed, on the shape of ``s``, into three non-overlapping words
    ``log s = H + M + T`` (error about ``u**3 |log s|``), and only
    ``(H - L) + M + T``, by two TwoSums (15 operations), is done per element of the result:
    ``H - L`` is exact wherever ``r`` is small (Sterbenz), so that the result is again
    rounded about once.
    """
    if smaller_than_result(scale, log_scale):
        return subtract_from_words(log_words(scale, xp), log_scale, xp)
    return _subtract_from_pieces(_log_pieces(scale, xp), log_scale, xp)


def log_words(scale: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``log(scale)`` as three non-overlapping words ``H + M + T``, at the shape of ``scale``."""
    return _three_words(_log_pieces(scale, xp))


def smaller_than_result(scale: Any, log_scale: Any) -> bool:
    """Whether ``scale`` broadcasts to more elements than it has (shapes known, static)."""
    try:
        result = _namespace.broadcast_shapes(
            [("scale", scale.shape), ("log_scale", log_scale.shape)]
        )
        return math.prod(scale.shape) < math.prod(result)
    except TypeError:  # unknown (None) dimensions: no saving can be shown
        return False


def _log_pieces(scale: Any, xp: Any) -> tuple[Any, tuple[Any, ...], Any, Any]:
    """``log(s) = leading + sum(large) + small``, with ``special`` 0, or -inf for ``s = 0``.

    ``leading`` is exact and the largest; ``large`` decrease roughly in magnitude; ``small``
    is below the target precision.  See :func:`log_difference`.
    """
    dtype = scale.dtype
    is_float64 = dtype == xp.float64
    digits = 53 if is_float64 else 24
    factor = float(2 ** ((digits + 1) // 2) + 1)  # Veltkamp's splitter
    ln2 = _LN2_FLOAT64 if is_float64 else _LN2_FLOAT32
    # k in [smallest exponent - 1, largest]: finite for s = 0 and s = inf (which then give
    # m = 0 and m = inf); 2**-k in two factors, neither of which overflows.
    lowest = -float(digits + 1021 if is_float64 else digits + 125)
    k = xp.clip(xp.round(xp.log2(scale)), lowest, 1024.0 if is_float64 else 128.0)
    k_half = xp.floor(0.5 * k)
    m = (scale * 2.0 ** (-k_half)) * 2.0 ** (k_half - k)
    e = m - 1.0  # exact: 1/2 <= m <= 2
    # XLA folds (x + c) - c to x for a literal c, which would cancel the error terms of the
    # TwoSums below: constants that enter one are made opaque by adding this zero.
    zero = 0.0 * e
    one = 1.0 + zero
    denominator = m + one
    f1 = e / denominator
    product, product_error = _two_product(f1, e, factor, zero)
    # e - f1 (2 + e) = ((e - 2 f1) - fl(f1 e)) - error: the first two differences are exact
    # (Sterbenz), the last is kept as a double word for float32.
    residual, residual_error = _two_sum((e - 2.0 * f1) - product, -product_error)
    f2 = residual / denominator
    if is_float64:
        f3 = 0.0 * f2
    else:
        # a third word: f2 is rounded at 2**-50, above the float32 target
        denominator_error = m - (denominator - one)  # m + 1 = denominator + this, exactly
        quotient, quotient_error = _two_product(f2, denominator, factor, zero)
        f3 = (
            ((residual - quotient) - quotient_error) + residual_error - f2 * denominator_error
        ) / denominator
    w1, w2 = _two_product(f1, f1, factor, zero)
    w2 = w2 + 2.0 * (f1 * (f2 + f3))
    # R(w): plain Horner for the small terms, then double words (R1 + R2)
    plain = _PLAIN_FLOAT64 if is_float64 else _PLAIN_FLOAT32
    series = plain[-1] * w1 + plain[-2]
    for c in plain[-3::-1]:
        series = series * w1 + c
    r1, r2 = series, 0.0 * series
    for c_hi, c_lo in (_DOUBLE_FLOAT64 if is_float64 else _DOUBLE_FLOAT32)[::-1]:
        p1, p2 = _two_product(w1, r1, factor, zero)
        s1, s2 = _fast_two_sum(c_hi + zero, p1)  # |c| > |w R|
        r1, r2 = _fast_two_sum(s1, s2 + (p2 + (w1 * r2 + w2 * r1)) + c_lo)
    # f w, then f w R: the series part of log m (below 2**-8)
    a1, a2 = _two_product(f1, w1, factor, zero)
    a2 = a2 + (f1 * w2 + (f2 + f3) * w1)
    t1, t2 = _two_product(a1, r1, factor, zero)
    t2 = t2 + (a1 * r2 + a2 * r1)
    large = (
        (2.0 * f1, t1, k * ln2[1])
        if is_float64
        else (2.0 * f1, t1, k * ln2[1], k * ln2[2], 2.0 * f2)
    )
    small = (2.0 * f2 + t2) + k * ln2[2] if is_float64 else (2.0 * f3 + t2) + k * ln2[3]
    # s = 0: -inf (the finite pieces are meaningless there); s < 0 is already NaN
    positive = mask(scale > 0, dtype, xp)
    return k * ln2[0], large, small, (positive - 1.0) / positive


def _capped(log_scale: Any, xp: Any) -> Any:
    """``-L`` with ``L = +-inf`` capped at the largest float (``r = -+max``): an infinite
    ``L`` would make the TwoSums NaN."""
    largest = float(xp.finfo(log_scale.dtype).max)
    return -xp.clip(log_scale, -largest, largest)


def _subtract_from_pieces(pieces: tuple[Any, ...], log_scale: Any, xp: Any) -> Any:
    """``log(s) - L`` from the pieces, at the result's shape: the large pieces are added by
    TwoSum to ``leading - L`` (exact where r is small), their errors kept apart."""
    leading, large, small, special = pieces
    total, low = _two_sum(leading, _capped(log_scale, xp))
    for piece in large:
        total, error = _two_sum(total, piece)
        low = low + error
    return (total + (low + small)) + special


def _three_words(pieces: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    """``leading + sum(large) + small`` as non-overlapping ``H + M + T``, ``H`` = fl(sum).

    Each piece goes into ``H`` by TwoSum, whose error goes into ``M`` by TwoSum, whose error
    goes into ``T``: only the additions to ``T`` round, at about ``u**3 |log s|``.  The
    special value (``-inf`` for ``s = 0``) joins ``T`` last, where it cannot meet an
    infinity of opposite sign.
    """
    leading, large, small, special = pieces
    high, middle, tail = leading, 0.0 * leading, 0.0 * leading
    for piece in (*large, small):
        high, error = _two_sum(high, piece)
        middle, error = _two_sum(middle, error)
        tail = tail + error
    # renormalize: |M| <= ulp(H)/2 and |T| <= ulp(M)/2, so that H is the rounded sum
    high, error = _two_sum(high, middle)
    middle, low = _two_sum(error, tail)
    high, error = _two_sum(high, middle)
    middle, low2 = _two_sum(error, low)
    return high, middle, low2 + special


def subtract_from_words(words: tuple[Any, Any, Any], log_scale: Any, xp: Any) -> Any:
    """``(H + M + T) - L`` from :func:`log_words`: see :func:`log_difference`."""
    high, middle, tail = words
    total, error = _two_sum(high, _capped(log_scale, xp))
    total, middle_error = _two_sum(total, middle)
    return total + ((middle_error + tail) + error)
