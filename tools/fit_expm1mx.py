"""Fit the near-zero polynomial of ``expm1mx``; paste the output into ``special.py``.

On -1 <= x <= 2 the library evaluates (e**x - 1 - x)/2 = h + h*x*S(x) with h = x**2/4 (at x
itself for |x| < 1, and at x - n, n = 1 or 2, for expm1 in 1 <= x <= 4), so only the
correction S(x) = (2*(e**x - 1 - x)/x**2 - 1)/x = 1/3 + x/12 + ... is approximated.  The
constant 1 of the bracket is then exact and the rounding of S enters at most
|x*S(x)| <= 1.2 times.  For each dtype this prints the max relative error of the whole
evaluation (Horner in that dtype, coefficients rounded to it) for increasing degrees; the
lowest degree below one unit of roundoff is used.
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 60


def S(x):
    x = mp.mpf(x)
    if abs(x) < mp.mpf("1e-20"):
        return mp.mpf(1) / 3 + x / 12
    return (2 * (mp.expm1(x) - x) / x**2 - 1) / x


LOWER, UPPER = -1, 2


def fit(degree):
    poly, _ = mp.chebyfit(S, [LOWER, UPPER], degree + 1, error=True)
    return [float(c) for c in poly[::-1]]  # ascending


def max_error(coefficients, dtype):
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


if __name__ == "__main__":
    for dtype, degrees in ((np.float32, range(6, 10)), (np.float64, range(13, 17))):
        for d in degrees:
            c = fit(d)
            print(dtype.__name__, d, f"max error {max_error(c, dtype):.2f} units of roundoff", c)
