"""Fit the near-zero polynomial of ``expm1mx`` (minimax-like, by Chebyshev fit).

expm1mx(x) = x**2 * P(x) for |x| <= 1, P(x) = (e**x - 1 - x) / x**2.
Prints, for each degree, the max relative error of P in exact arithmetic and after
rounding the coefficients to the target dtype.  The chosen coefficients are pasted into
``src/kullback/special.py``.
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 60


def P(x):
    x = mp.mpf(x)
    if x == 0:
        return mp.mpf(1) / 2
    return (mp.expm1(x) - x) / x**2


def fit(degree):
    # Chebyshev interpolation at degree+1 nodes, then convert to monomial coefficients.
    poly, err = mp.chebyfit(P, [-1, 1], degree + 1, error=True)
    return poly[::-1], err  # ascending


def maxrel(coeffs, dtype):
    xs = np.linspace(-1, 1, 4001)
    worst = 0
    c = [dtype(float(a)) for a in coeffs]
    for x in xs:
        x = dtype(x)
        acc = c[-1]
        for a in c[-2::-1]:
            acc = dtype(acc * x + a)
        exact = P(mp.mpf(float(x)))
        worst = max(worst, abs((mp.mpf(float(acc)) - exact) / exact))
    return float(worst)


if __name__ == "__main__":
    for dtype, degrees in ((np.float32, range(6, 10)), (np.float64, range(11, 16))):
        for d in degrees:
            c, err = fit(d)
            print(dtype.__name__, d, "max rel (fit)", mp.nstr(err / mp.mpf("0.36"), 3),
                  "rounded Horner", maxrel(c, dtype), "u", np.finfo(dtype).eps / 2)
