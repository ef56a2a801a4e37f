"""Fit the near-zero polynomial of ``expm1mx``; paste the output into ``special.py``.

The library evaluates e**w - 1 - w only for |w| < 1/4 (w = x itself, or x less the nearest
multiple of 1/4 towards 0, whose tabulated e**a does the rest), as h + h*w*S(w) with
h = w**2/2 (or w**2/4 for the half), so only the correction
S(w) = (2*(e**w - 1 - w)/w**2 - 1)/w = 1/3 + w/12 + ... is approximated, on [-1/4, 1/4].
The constant 1 of the bracket is then exact and the rounding of S enters at most
|w*S(w)| <= 0.09 times.  For each dtype this prints, for increasing degrees, the max
relative error of the whole evaluation (Horner in that dtype, coefficients rounded to it)
in units of roundoff, and the max relative error of the polynomial's derivative against
expm1(w) (its approximation error alone, in units of roundoff: what autodiff adds to the
rounding of the gradient).  The lowest degree whose approximation errors are a small
fraction of a unit of roundoff is used.
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 60

LOWER, UPPER = -0.25, 0.25


def S(x):
    x = mp.mpf(x)
    if abs(x) < mp.mpf("1e-20"):
        return mp.mpf(1) / 3 + x / 12
    return (2 * (mp.expm1(x) - x) / x**2 - 1) / x


def fit(degree):
    poly, _ = mp.chebyfit(S, [LOWER, UPPER], degree + 1, error=True)
    return [float(c) for c in poly[::-1]]  # ascending


def max_error(coefficients, dtype):
    """Max relative error of h + h*w*S(w) evaluated in ``dtype``, in units of roundoff."""
    worst = 0.0
    c = [dtype(a) for a in coefficients]
    for x in np.linspace(LOWER, UPPER, 3001).astype(dtype):
        s = c[-1]
        for a in c[-2::-1]:
            s = dtype(s * x + a)
        h = dtype(dtype(x * x) * dtype(0.25))
        value = dtype(h + dtype(h * dtype(x * s)))
        exact = (mp.expm1(mp.mpf(float(x))) - mp.mpf(float(x))) / 2
        if exact != 0:
            worst = max(worst, float(abs((mp.mpf(float(value)) - exact) / exact)))
    return worst / (np.finfo(dtype).eps / 2)


def max_derivative_error(coefficients, dtype):
    """Max relative error of d/dw (w**2/2 (1 + w P(w))) against expm1(w), with the
    coefficients rounded to ``dtype`` but evaluated exactly, in units of roundoff."""
    worst = mp.mpf(0)
    c = [mp.mpf(float(dtype(a))) for a in coefficients]
    for x in np.linspace(LOWER, UPPER, 1001):
        w = mp.mpf(float(x))
        if w == 0:
            continue
        p = sum(a * w**k for k, a in enumerate(c))
        dp = sum(k * a * w ** (k - 1) for k, a in enumerate(c) if k)
        derivative = w * (1 + w * p) + w**2 / 2 * (p + w * dp)
        worst = max(worst, abs(derivative / mp.expm1(w) - 1))
    return float(worst) / (np.finfo(dtype).eps / 2)


if __name__ == "__main__":
    for dtype, degrees in ((np.float32, range(3, 6)), (np.float64, range(7, 11))):
        for d in degrees:
            c = fit(d)
            print(
                dtype.__name__,
                d,
                f"max error {max_error(c, dtype):.2f},",
                f"derivative {max_derivative_error(c, dtype):.3f} units of roundoff",
                c,
            )
