"""Fit the near-equality polynomial of the Normal KL's variance term; paste into ``_pairs/normal.py``.

For two scales ``s``, ``t`` with ``e = s/t - 1`` and ``u = e/(2 + e) = (s - t)/(s + t)``,
``log(1 + e) = 2 atanh(u)``, and the variance term ``(s**2/t**2 - 1)/2 - log(s/t)`` is

    V = e**2 * G(u),   G(u) = 1 - u * (1/2 + (1 - u)**2 * Q(u**2)),

with ``Q(w) = (atanh(sqrt(w))/sqrt(w) - 1)/(2 w) = 1/6 + w/10 + w**2/14 + ...``.  The library
uses this form for ``|u| <= 1/3`` (``s/t'`` within a factor 2 of 1, where ``t'`` is ``t``
or ``2t``, depending on the window), so only ``Q`` on ``[0, 1/9]`` is
approximated, and its error enters ``G`` at most ``|u| (1 - u)**2 Q / G <= 0.09`` times.  For each dtype this prints, per degree, the largest
relative error of the whole evaluation of ``V`` from an exact ``e`` (Horner in that dtype,
coefficients rounded to it) in units of roundoff; the lowest degree whose error is within
one unit of that of an exact ``Q`` is used.
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 60


def atanh_correction(w):
    w = mp.mpf(w)
    if w < mp.mpf("1e-30"):
        return mp.mpf(1) / 6 + w / 10
    root = mp.sqrt(w)
    return (mp.atanh(root) / root - 1) / (2 * w)


def fit(degree):
    poly, _ = mp.chebyfit(atanh_correction, [0, mp.mpf(1) / 9], degree + 1, error=True)
    return [float(c) for c in poly[::-1]]  # ascending


def evaluate(e, coefficients, dtype):
    """V from e, in dtype, as the library computes it (e exact)."""
    e = dtype(e)
    u = dtype(e / dtype(dtype(2) + e))
    w = dtype(u * u)
    c = [dtype(a) for a in coefficients]
    q = c[-1]
    for a in c[-2::-1]:
        q = dtype(dtype(q * w) + a)
    one_minus_u = dtype(dtype(1) - u)
    inner = dtype(dtype(dtype(one_minus_u * one_minus_u) * q) + dtype(0.5))
    g = dtype(dtype(1) - dtype(u * inner))
    return dtype(dtype(e * e) * g)


def max_error(coefficients, dtype):
    worst = 0.0
    for e in np.linspace(-0.5, 1.0, 3001).astype(dtype):
        if e == 0:
            continue
        exact = mp.mpf(float(e)) - mp.log1p(mp.mpf(float(e))) + mp.mpf(float(e)) ** 2 / 2
        value = mp.mpf(float(evaluate(e, coefficients, dtype)))
        worst = max(worst, float(abs(value / exact - 1)))
    return worst / (np.finfo(dtype).eps / 2)


if __name__ == "__main__":
    for dtype, degrees in ((np.float32, range(2, 6)), (np.float64, range(7, 12))):
        for d in degrees:
            c = fit(d)
            print(dtype.__name__, d, f"max error {max_error(c, dtype):.2f} units of roundoff", c)
