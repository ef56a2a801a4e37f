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

import decimal
import math
import struct
from decimal import Decimal
from fractions import Fraction
from typing import Any

from . import _namespace
from .special import fusable_clip, mask

__all__: list[str] = []

# ln 2 in pieces.  All but the last have few enough bits that k * piece is exact for every
# exponent k (|k| <= 1075 in float64, 150 in float32): 42 bits for float64, 16 for float32.
_LN2_FLOAT64 = (0.6931471805598903, 5.49792301870721e-14, 1.1612227229362532e-26)
_LN2_FLOAT32 = (
    0.693145751953125, 1.4285906217992306e-06, 1.6198153929281034e-11, 3.562573724641692e-16,
)  # fmt: skip

# log m = log(i/256) + 2 atanh(f), with i the integer nearest 256 m and
# f = (256 m - i)/(256 m + i), |f| <= 1/720.  The table holds log(i/256) in three words of the
# dtype (computed here with Python's decimal module, to 60 digits).  m is in
# [2**-0.5, 2**0.5] up to the backend's log2: the table has a margin of a few entries.
_TABLE_SCALE = 256
_TABLE_FIRST, _TABLE_LAST = 176, 368

# 2 atanh(f) = 2f + f w R(w), w = f**2 <= 2**-19, R(w) = sum_n 2 w**n / (2n + 3).  Terms are
# kept while they exceed the target (2**-125 absolute in float64, 2**-66 in float32, about
# u**2 / 2**20: r is then within one ulp down to |r| ~ u |log s| / 2**10, the closeness of a
# scale and the rounded log of it); the leading ones, whose plain rounding would exceed the
# target, in double words with coefficients split as (hi, lo).
_SERIES_TERMS = {True: (3, 3), False: (1, 2)}  # float64?: (double-word, plain) levels


def _to_dtype(value: Decimal | Fraction, is_float64: bool) -> float:
    """``value`` rounded to a float of the dtype (float32: via float64, which is harmless for
    constants whose rounding error is kept by the next word)."""
    x = float(value)
    return x if is_float64 else struct.unpack("f", struct.pack("f", x))[0]


def _three_words_of(value: Decimal, is_float64: bool) -> tuple[float, float, float]:
    """``value`` as three floats of the dtype whose exact sum is ``value`` to about
    ``u**3``: each word rounds what the previous ones left (exact in ``decimal``)."""
    words = []
    for _ in range(3):
        words.append(_to_dtype(value, is_float64))
        value -= Decimal(words[-1])
    return words[0], words[1], words[2]


def _log_table() -> dict[bool, tuple[tuple[float, ...], ...]]:
    """``log(i/256)`` for ``i`` in ``[_TABLE_FIRST, _TABLE_LAST]`` as three word tuples, for
    float64 (key True) and float32 (False).  Made at import (about 10 ms): torch.compile
    cannot trace a cache that fills on first use."""
    with decimal.localcontext() as context:
        context.prec = 60
        logs = [
            (Decimal(i) / Decimal(_TABLE_SCALE)).ln() for i in range(_TABLE_FIRST, _TABLE_LAST + 1)
        ]
        return {
            is_float64: tuple(zip(*(_three_words_of(x, is_float64) for x in logs), strict=True))
            for is_float64 in (True, False)
        }


def _series_coefficients(
    is_float64: bool,
) -> tuple[tuple[tuple[float, float], ...], tuple[float, ...]]:
    """``2/(2n + 3)``: the double-word ``(hi, lo)`` levels, then the plain ones."""
    double, plain = _SERIES_TERMS[is_float64]
    exact = [Fraction(2, 2 * n + 3) for n in range(double + plain)]
    split = []
    for c in exact[:double]:
        hi = _to_dtype(c, is_float64)
        split.append((hi, _to_dtype(c - Fraction(hi), is_float64)))
    return tuple(split), tuple(_to_dtype(c, is_float64) for c in exact[double:])


_LOG_TABLE = _log_table()
_SERIES = {is_float64: _series_coefficients(is_float64) for is_float64 in (True, False)}


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
    With ``k`` an integer near ``log2 s``, ``m = s 2**-k`` (exact, in ``[0.7, 1.42]``), ``i``
    the integer nearest ``256 m``, ``delta = 256 m - i`` (exact, ``|delta| <= 1/2``) and
    ``f = delta / (256 m + i)`` (``|f| <= 1/720``),

    .. math::

        r = (k \ln 2_1 - L) + \log\frac{i}{256} + 2f + f w R(w)
            + k(\ln 2_2 + \ln 2_3 + \dots), \qquad w = f^2,

    since ``log(256 m / i) = 2 atanh(f)``.  ``k ln2_1`` is exact and so is its difference
    with ``L`` wherever ``r`` is small (Sterbenz); ``log(i/256)`` comes from a table (``take``)
    of three words per entry; ``f`` is carried in three words, from residuals made exact by
    TwoProduct; ``f w R(w)`` (below ``2**-28``) in double words, with 3 double-word and 3
    plain levels of ``R`` in float64, 1 and 2 in float32; the pieces are added by TwoSum,
    so the cancellation against ``L`` is exact and the result is rounded about once.  So
    ``log s`` is carried to about ``2**-125`` (float64) or ``2**-66`` (float32), far
    enough for ``r`` to be correct to an ulp even for a scale against its own rounded log,
    where ``|r|`` is below an ulp of ``log s`` (about ``1e-17`` in float64): two words
    (``2**-106``) are 10**5 ulp off there.  No backend ``log`` is relied on (``log2`` only
    picks ``k``; any nearby integer serves).

    Measured against mpmath on exact float inputs: at most 0.50 ulp in float32 and float64,
    both on a sweep of ``1e-12 <= |r| <= 10`` with ``|log s|`` up to the dtype's limit and
    on scales against their own rounded logs (``|r|`` down to ``1e-20`` in float64), on
    NumPy, PyTorch and JAX, also under ``jax.jit`` and ``torch.compile``.

    Cost, counted as jaxpr equations (elementwise operations): 361 in float64, 301 in
    float32, of which 2 ``pow``, 1 ``log2``, 1 ``round``, 1 ``floor``, 3 ``take``, 5
    divisions, the rest additions and multiplications (TwoProducts of 19 operations each
    are most of it).  Fused (``jax.jit``) this is cheap; eagerly each is a pass over the
    data.

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


_WORDS_OF_NUMBERS: dict[tuple[float, bool], tuple[float, float, float] | None] = {}


def log_words_of_number(value: float, is_float64: bool) -> tuple[float, float, float] | None:
    """``log(value)`` for a Python number, rounded first to the dtype, as three words of the
    dtype (decimal, 60 digits); None where it is not finite and positive.

    Pure Python on constants: ``torch.compile`` calls it while tracing and keeps the result
    as a constant (``_dynamo_marked_constant``, what ``torch._dynamo.assume_constant_result``
    sets), since it cannot trace into ``decimal``.
    """
    if not math.isfinite(value) or value <= 0:
        return None  # (not cached: NaN keys never compare equal)
    key = (value, is_float64)
    if key not in _WORDS_OF_NUMBERS:
        if len(_WORDS_OF_NUMBERS) >= 4096:  # a bound for callers that sweep many numbers
            _WORDS_OF_NUMBERS.clear()
        try:
            rounded = _to_dtype(Decimal(value), is_float64)
        except OverflowError:  # beyond the float32 range: infinite in the dtype
            rounded = math.inf
        words = None
        if math.isfinite(rounded) and rounded > 0:
            with decimal.localcontext() as context:
                context.prec = 60
                words = _three_words_of(Decimal(rounded).ln(), is_float64)
        _WORDS_OF_NUMBERS[key] = words
    return _WORDS_OF_NUMBERS[key]


log_words_of_number._dynamo_marked_constant = True  # type: ignore[attr-defined]


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

    ``leading`` is exact and the largest; ``small`` is below the target precision.  See
    :func:`log_difference`.
    """
    dtype = scale.dtype
    is_float64 = dtype == xp.float64
    digits = 53 if is_float64 else 24
    factor = float(2 ** ((digits + 1) // 2) + 1)  # Veltkamp's splitter
    ln2 = _LN2_FLOAT64 if is_float64 else _LN2_FLOAT32
    # A constant scale (a Python scalar under jax.jit) would let XLA fold and simplify the
    # error-free transformations below: its log is computed at run time instead.
    scale = _namespace.opaque(scale, xp)
    # k in [smallest exponent - 1, largest]: finite for s = 0 and s = inf (which then give
    # m = 0 and m = inf); 2**-k in two factors, neither of which overflows.
    lowest = -float(digits + 1021 if is_float64 else digits + 125)
    k = _namespace.clip(xp.round(xp.log2(scale)), lowest, 1024.0 if is_float64 else 128.0, xp)
    k_half = xp.floor(0.5 * k)
    down, up = 2.0 ** (-k_half), 2.0 ** (k_half - k)
    # 256 m; the clips change no value (NaN stays NaN), but let XLA fuse a multiply-used
    # result of pow or of a division into one loop (see special.fusable_clip)
    scaled = fusable_clip(((scale * down) * up) * float(_TABLE_SCALE), 0.0, math.inf, xp)
    # XLA folds (x + c) - c to x for a literal c, which would cancel the error terms of the
    # TwoSums below: constants that enter one are made opaque by adding this zero.
    zero = 0.0 * scaled
    # The index is clipped as an integer: a NaN (negative or NaN scale) cast to an integer
    # is some integer on every backend, and the NaN reaches the result through delta.
    last = _TABLE_LAST - _TABLE_FIRST
    index = _namespace.clip(xp.astype(xp.round(scaled), xp.int32) - _TABLE_FIRST, 0, last, xp)
    nearest = xp.astype(index, dtype) + (_TABLE_FIRST + zero)  # i, exact
    delta = scaled - nearest  # exact (Sterbenz): |delta| <= 1/2 where the table is not clipped
    # f = delta / (256 m + i) in three words; the denominator is the double word (d, d_error)
    denominator, denominator_error = _two_sum(scaled, nearest)
    f1 = fusable_clip(delta / denominator, -1.0, 1.0, xp)  # |f1| <= 1/720 (1 for s = 0)
    product, product_error = _two_product(f1, denominator, factor, zero)
    correction, correction_error = _two_product(f1, denominator_error, factor, zero)
    # delta - f1 (d + d_error): delta - product is exact (Sterbenz), the rest kept in two words
    residual, residual_error = _two_sum(delta - product, -product_error)
    residual, error = _two_sum(residual, -correction)
    residual_error = (residual_error + error) - correction_error
    f2 = fusable_clip(residual / denominator, -1.0, 1.0, xp)
    quotient, quotient_error = _two_product(f2, denominator, factor, zero)
    f3 = fusable_clip(
        (((residual - quotient) - quotient_error) + (residual_error - f2 * denominator_error))
        / denominator,
        -1.0,
        1.0,
        xp,
    )
    w1, w2 = _two_product(f1, f1, factor, zero)
    w2 = w2 + 2.0 * (f1 * (f2 + f3))
    # R(w): plain Horner for the small terms, then double words (r1 + r2)
    double, plain = _SERIES[is_float64]
    series = plain[-1] + zero
    for c in plain[-2::-1]:
        series = series * w1 + c
    r1, r2 = series, zero
    for c_hi, c_lo in double[::-1]:
        p1, p2 = _two_product(w1, r1, factor, zero)
        s1, s2 = _fast_two_sum(c_hi + zero, p1)  # |c| > |w R|
        r1, r2 = _fast_two_sum(s1, s2 + (p2 + (w1 * r2 + w2 * r1)) + c_lo)
    # f w, then f w R: the series part of log m (below 2**-28)
    a1, a2 = _two_product(f1, w1, factor, zero)
    a2 = a2 + (f1 * w2 + (f2 + f3) * w1)
    t1, t2 = _two_product(a1, r1, factor, zero)
    t2 = t2 + (a1 * r2 + a2 * r1)
    # take() wants one-dimensional indices (the standard has no integer array indexing);
    # a one-dimensional index is used as it is (Dask cannot reshape an unknown length)
    device = _namespace.device_of(scale)
    flat_index = index if index.ndim == 1 else xp.reshape(index, (-1,))
    table = []
    for words in _LOG_TABLE[is_float64]:
        entries = xp.take(xp.asarray(words, dtype=dtype, device=device), flat_index)
        table.append(entries if index.ndim == 1 else xp.reshape(entries, index.shape))
    large = (table[0], 2.0 * f1, t1, k * ln2[1], table[1], 2.0 * f2)
    if is_float64:
        small = ((t2 + 2.0 * f3) + table[2]) + k * ln2[2]
    else:
        large = (*large, k * ln2[2])
        small = ((t2 + 2.0 * f3) + table[2]) + k * ln2[3]
    # s = 0: -inf (the finite pieces are meaningless there); s < 0 is already NaN
    positive = mask(scale > 0, dtype, xp)
    return k * ln2[0], large, small, (positive - 1.0) / positive


def _capped(log_scale: Any, xp: Any) -> Any:
    """``-L`` with ``L = +-inf`` capped at the largest float (``r = -+max``): an infinite
    ``L`` would make the TwoSums NaN."""
    largest = float(xp.finfo(log_scale.dtype).max)
    return -_namespace.clip(log_scale, -largest, largest, xp)


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
