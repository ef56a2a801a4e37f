"""Checks of the mpmath references in tests/reference/categorical.py (no kullback code).

Identities the references must satisfy, and a comparison with the textbook formula
``sum p_i log(p_i / q_i)`` evaluated at 160 digits (where its cancellation is harmless).
"""

from __future__ import annotations

import math

import ml_dtypes
import mpmath
import numpy as np
import pytest

from tests.reference import categorical as ref

INF = float("inf")


def textbook(p_by, p_row, q_by, q_row, digits=160):
    """sum p_i log(p_i/q_i) at 160 digits, with the rules of kl_categorical."""
    with mpmath.workdps(digits):

        def normalized(by, row):
            row = [mpmath.mpf(x) for x in row]
            if by == "logits":
                if any(mpmath.isnan(x) or x == mpmath.inf for x in row):
                    return None
                if all(x == -mpmath.inf for x in row):
                    return None
                top = max(row)
                row = [mpmath.exp(x - top) for x in row]
            elif any(mpmath.isnan(x) or x < 0 or x == mpmath.inf for x in row) or sum(row) == 0:
                return None
            total = mpmath.fsum(row)
            return [x / total for x in row]

        p, q = normalized(p_by, p_row), normalized(q_by, q_row)
        if p is None or q is None:
            return mpmath.nan
        if any(pi > 0 and qi == 0 for pi, qi in zip(p, q, strict=True)):
            return mpmath.inf
        return mpmath.fsum(pi * mpmath.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


TOLERANCE = mpmath.mpf(10) ** -55
DTYPES = ("float32", "float64", "float16", "bfloat16")


def same(a, b, rel=TOLERANCE):
    if mpmath.isnan(a) or mpmath.isnan(b):
        return mpmath.isnan(a) and mpmath.isnan(b)
    if a == b:
        return True
    return mpmath.isfinite(a) and abs(a - b) <= rel * abs(b)


@pytest.mark.parametrize("K", [2, 3, 10, 100])
@pytest.mark.parametrize("parameterization", ref.PARAMETERIZATIONS)
def test_categorical_sweep_against_the_textbook_formula(K, parameterization):
    for dtype_name in DTYPES:
        s = ref.categorical_sweep(dtype_name, K, parameterization)
        assert s.p.dtype == np.dtype(dtype_name)
        assert s.p.shape == (len(s.exact), K)
        if not ref.keeps_subnormals(dtype_name):  # float16 keeps them (float32 normals)
            for x in (s.p, s.q):
                assert not np.any((x != 0) & (np.abs(x) < ml_dtypes.finfo(x.dtype).tiny))
        for i, (p_row, q_row) in enumerate(zip(s.p.tolist(), s.q.tolist(), strict=True)):
            expected = textbook(s.p_by, p_row, s.q_by, q_row)
            assert same(s.exact[i], expected), (s.labels[i], s.exact[i], expected)
            assert s.exact[i] >= 0 or mpmath.isnan(s.exact[i])


@pytest.mark.parametrize("dtype_name", ["float64", "float16", "bfloat16"])
def test_bernoulli_sweep_against_closed_forms(dtype_name):
    for parameterization in ref.PARAMETERIZATIONS:
        s = ref.bernoulli_sweep(dtype_name, parameterization)
        assert s.p.dtype == np.dtype(dtype_name)
        for p, q, exact in zip(
            s.p.astype(np.float64).tolist(), s.q.astype(np.float64).tolist(), s.exact,
            strict=True,
        ):  # fmt: skip
            p_row = [0.0, p] if s.p_by == "logits" else [mpmath.fsub(1, p, exact=True), p]
            q_row = [0.0, q] if s.q_by == "logits" else [mpmath.fsub(1, q, exact=True), q]
            # probabilities down to 1e-300: log(1 - p) needs 300 more digits
            assert same(exact, textbook(s.p_by, p_row, s.q_by, q_row, 700)), (p, q)
    # logits: p (x - y) + softplus(y) - softplus(x), at 300 digits
    for x, y in [(1.0, 1.0 + 2.0**-40), (-80.0, -79.9), (30.0, -30.0), (0.25, 0.25)]:
        with mpmath.workdps(300):
            x_, y_ = mpmath.mpf(x), mpmath.mpf(y)
            sp = lambda t: mpmath.log1p(mpmath.exp(t))  # noqa: E731
            closed = (x_ - y_) / (1 + mpmath.exp(-x_)) + sp(y_) - sp(x_)
        assert same(ref.kl_bernoulli(p_logit=x, q_logit=y), closed)
        assert same(
            ref.kl_bernoulli(p_logit=x, q_logit=y), ref.kl_categorical([0.0, x], None, [0.0, y])
        )


def test_special_values():
    kl, kb = ref.kl_categorical, ref.kl_bernoulli
    assert kl(p_logits=[0.0, 1.0], q_logits=[0.0, 1.0]) == 0
    assert kl(p_logits=[0.0, 1.0], q_logits=[2.0, 3.0]) == 0  # exact shift
    assert kl(p_probs=[0.25, 0.5], q_probs=[0.5, 1.0]) == 0  # exact scaling
    with mpmath.workdps(80):
        log2 = mpmath.log(2)
    assert same(kl(p_logits=[-INF, 0.0], q_logits=[0.0, 0.0]), log2)
    assert kl(p_logits=[-INF, 0.0], q_logits=[-INF, 1.0]) == 0
    assert kl(p_logits=[0.0, 0.0], q_logits=[-INF, 0.0]) == mpmath.inf
    assert kl(p_probs=[0.0, 1.0], q_probs=[0.0, 2.0]) == 0
    for bad in ([INF, 0.0], [math.nan, 0.0], [-INF, -INF]):
        assert mpmath.isnan(kl(p_logits=bad, q_logits=[0.0, 0.0]))
        assert mpmath.isnan(kl(p_logits=[0.0, 0.0], q_logits=bad))
    for bad in ([-1.0, 2.0], [0.0, 0.0], [INF, 1.0], [math.nan, 1.0]):
        assert mpmath.isnan(kl(p_probs=bad, q_probs=[1.0, 1.0]))
        assert mpmath.isnan(kl(p_probs=[1.0, 1.0], q_probs=bad))
    assert kb(p_prob=0.0, q_prob=0.0) == 0
    assert kb(p_prob=1.0, q_prob=1.0) == 0
    assert kb(p_prob=0.3, q_prob=1.0) == mpmath.inf
    assert kb(p_prob=0.3, q_prob=0.0) == mpmath.inf
    assert same(kb(p_prob=1.0, q_prob=0.5), log2)
    assert mpmath.isnan(kb(p_prob=1.5, q_prob=0.5))
    assert mpmath.isnan(kb(p_prob=-0.5, q_prob=0.5))
    # 1 - p is kept exactly: KL = p log(p/q) + (q - p) + O(1e-600) for p, q near 1e-300
    p, q = 1e-300, 2e-300
    with mpmath.workdps(80):
        expected = mpmath.mpf(p) * mpmath.log(mpmath.mpf(p) / q) + (mpmath.mpf(q) - p)
    assert same(kb(p_prob=p, q_prob=q), expected)  # with 1 - p rounded: off by (q - p)
    with pytest.raises(TypeError, match="exactly one"):
        kl(p_logits=[0.0], p_probs=[1.0], q_logits=[0.0])


def test_shift_invariance_of_logits():
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 3, 20), rng.normal(0, 3, 20)
    b_near = a + 1e-9 * rng.normal(size=20)
    for q in (b, b_near):
        base = ref.kl_categorical(p_logits=a, q_logits=q)
        for shift_p, shift_q in [(7.0, 0.0), (0.0, -3.0), (1e3, 1e3)]:
            # the shifted logits are floats: compare with mpf shifts of the exact inputs
            shifted = ref.kl_categorical(
                p_logits=[mpmath.fadd(x, shift_p, exact=True) for x in a],
                q_logits=[mpmath.fadd(x, shift_q, exact=True) for x in q],
            )
            assert same(shifted, base)


def test_sample_estimators():
    for dtype_name in DTYPES:
        s = ref.sample_kl_sweep(dtype_name)
        for log_p, log_q, k1, k2, k3 in zip(
            s.log_p.astype(np.float64).tolist(), s.log_q.astype(np.float64).tolist(),
            s.k1, s.k2, s.k3, strict=True,
        ):  # fmt: skip
            if log_q == -INF:
                assert k1 == k2 == k3 == mpmath.inf
                continue
            x = mpmath.fsub(log_q, log_p, exact=True)
            assert k1 == -x
            assert k3 >= 0
            with mpmath.workdps(80):
                assert same(k2, x * x / 2)
            if x == 0:
                assert k3 == 0
            elif abs(x) < 1e-3:  # series of e**x - 1 - x up to x**20
                with mpmath.workdps(100):
                    series = mpmath.fsum(x**n / mpmath.factorial(n) for n in range(2, 21))
                assert same(k3, series)
            else:
                with mpmath.workdps(200):
                    assert same(k3, mpmath.exp(x) - 1 - x)
        assert s.log_p.dtype == np.dtype(dtype_name)


def test_gradient_against_central_differences():
    rng = np.random.default_rng(7)
    a, b = rng.normal(0, 2, 6), rng.normal(0, 2, 6)
    a[2] = -INF
    grad_a, grad_b = ref.kl_categorical_gradient(a, b)
    h = mpmath.mpf(10) ** -25
    for j in range(6):
        for grad, which in ((grad_a, "p"), (grad_b, "q")):
            if which == "p" and a[j] == -INF:
                assert grad[j] == 0
                continue
            rows = []
            for sign in (1, -1):
                x = [mpmath.mpf(v) for v in (a if which == "p" else b)]
                x[j] = mpmath.fadd(x[j], sign * h, exact=True)
                other = {"q_logits": b} if which == "p" else {"p_logits": a}
                rows.append(ref.kl_categorical(**{f"{which}_logits": x}, **other))
            with mpmath.workdps(80):
                numeric = (rows[0] - rows[1]) / (2 * h)
            assert abs(grad[j] - float(numeric)) <= 1e-15 * abs(float(numeric)) + 1e-300, (which, j)
    assert abs(grad_b.sum()) < 1e-15
    assert abs(grad_a.sum()) < 1e-15


def test_fisher_information():
    logits = np.array([0.0, 1.0, -2.0, -INF, 60.0])
    fisher = ref.fisher_information(logits)
    with mpmath.workdps(200):
        w = [mpmath.exp(mpmath.mpf(x)) for x in logits]
        p = [x / mpmath.fsum(w) for x in w]
        expected = np.array(
            [[float((p[i] if i == j else 0) - p[i] * p[j]) for j in range(5)] for i in range(5)]
        )
    assert np.array_equal(fisher, expected)
    assert fisher[4, 4] > 0  # p (1 - p) with p = 1 - 1e-26


def test_mixed_allowance():
    # q given by probabilities 1/2 (|log 1/2| eps/2 each): p = (0.75, 0.25)
    allowance = ref.mixed_allowance_ulps("float64", p_logits=[math.log(3), 0.0], q_probs=[0.5, 0.5])
    with mpmath.workdps(50):
        e = mpmath.exp(mpmath.mpf(math.log(3)))  # the exact float log(3), not log 3
        p = [e / (e + 1), 1 / (e + 1)]
        kl = ref.kl_categorical(p_logits=[math.log(3), 0.0], q_probs=[0.5, 0.5])
        # sum |q_i - p_i| |log Q_i| eps/2, in units of ulp(KL) = 2**(floor(log2 KL) - 52)
        total = sum(abs(mpmath.mpf(0.5) - pi) * mpmath.log(2) for pi in p) * mpmath.mpf(2) ** -53
        unit = mpmath.mpf(2) ** (mpmath.floor(mpmath.log(kl, 2)) - 52)
    assert allowance == pytest.approx(float(total / unit), rel=1e-12)
    assert ref.mixed_allowance_ulps("float64", p_logits=[0.0, 0.0], q_probs=[1.0, 1.0]) == 0
    assert ref.mixed_allowance_ulps("float32", p_logits=[0.0, -INF], q_probs=[1.0, 0.0]) == 0
    for parameterization in ("logits-probs", "probs-logits"):
        s = ref.categorical_sweep("float32", 10, parameterization)
        assert np.all(s.allowance >= 0)
        assert np.any(s.allowance > 1e6)
    assert np.all(ref.categorical_sweep("float32", 10, "probs-probs").allowance == 0)
    # the half dtypes round log(prob) in float32: float32's allowance in their ulps
    rows = {"p_logits": [0.3, -1.25, 2.0], "q_probs": [0.25, 0.125, 0.625]}
    float32 = ref.mixed_allowance_ulps("float32", **rows)
    assert float32 > 0
    assert ref.mixed_allowance_ulps("float16", **rows) == float32 * 2.0**-13
    assert ref.mixed_allowance_ulps("bfloat16", **rows) == float32 * 2.0**-16


def test_half_sweeps_are_meaningful():
    """In the half dtypes the near-equal rows stay near-equal pairs after rounding, the
    rows Q = 2P are twice P exactly, and float16's probabilities reach its subnormals."""
    for dtype_name in ("float16", "bfloat16"):
        info = ml_dtypes.finfo(dtype_name)
        for parameterization in ref.PARAMETERIZATIONS:
            s = ref.categorical_sweep(dtype_name, 100, parameterization)
            for label, p, q, exact in zip(s.labels, s.p, s.q, s.exact, strict=True):
                differ = label.startswith(("Q = P(1", "sigma=1 eps=0."))
                if parameterization == "logits-logits":  # (probs of sigma 20 round alike)
                    differ |= "eps=0." in label or label.startswith(("shift", "-inf in both"))
                if differ:
                    assert np.any(p != q), (dtype_name, parameterization, label)
                if parameterization == "logits-logits" and label.startswith("sigma=1 eps=0."):
                    assert 0 < exact < 1, (dtype_name, label)
                if label == "Q = 2P":
                    assert np.array_equal(q.astype(np.float64), 2 * p.astype(np.float64))
                    assert exact == 0
            if parameterization == "probs-probs" and dtype_name == "float16":
                assert np.any((s.p > 0) & (s.p < info.smallest_normal))
        assert ref.sample_kl_sweep(dtype_name).log_p.dtype == np.dtype(dtype_name)
