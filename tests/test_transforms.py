"""The public functions under jax.jit / vmap / grad and torch.compile / torch.func.vmap."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest

import kullback as kb
from tests.conftest import ulp_bound
from tests.reference.normal import kl_normal, ulp_errors
from tests.test_normal import refuse_the_array_path
from tests.test_special import BOUND, accuracy_inputs, assert_expm1mx_within

# the dtypes of the compiled expm1mx checks: a half dtype at every one of its inputs
EXPM1MX_DTYPES = ["float32", "float64", "float16", "bfloat16"]
HALF_DTYPES = ["float16", "bfloat16"]


def reference(loc_p, log_p, loc_q, log_q):
    return np.asarray(
        kb.kl_divergence(
            kb.Normal(loc_p, log_scale=log_p), kb.Normal(loc_q, log_scale=log_q), axis=-1
        )
    )


def data():
    rng = np.random.default_rng(3)
    return [rng.normal(size=(4, 5)) for _ in range(4)]


@pytest.fixture
def jax_backend(backend):
    if backend.name != "jax":
        pytest.skip("jax transformations")
    import jax

    return jax


@pytest.fixture
def torch_backend(backend):
    if backend.name != "torch":
        pytest.skip("torch transformations")
    import torch

    return torch


def test_jit_with_distributions_crossing_the_boundary(jax_backend):
    jax = jax_backend
    arrays = [jax.numpy.asarray(a) for a in data()]
    p = kb.Normal(arrays[0], log_scale=arrays[1])
    q = kb.Normal(arrays[2], arrays[3] ** 2 + 0.5)

    @jax.jit
    def f(p, q):
        return kb.kl_divergence(p, q, axis=-1)

    expected = np.asarray(kb.kl_divergence(p, q, axis=-1))
    np.testing.assert_allclose(np.asarray(f(p, q)), expected, rtol=1e-14)
    # pytrees: the parameters are the leaves
    assert len(jax.tree_util.tree_leaves(p)) == 2


def test_vmap_and_grad_under_jit(jax_backend):
    jax = jax_backend
    loc_p, log_p, loc_q, log_q = (jax.numpy.asarray(a) for a in data())

    def kl_row(a, la, b, lb):
        return kb.kl_divergence(kb.Normal(a, log_scale=la), kb.Normal(b, log_scale=lb), axis=-1)

    batched = jax.jit(jax.vmap(kl_row))(loc_p, log_p, loc_q, log_q)
    np.testing.assert_allclose(
        np.asarray(batched), reference(*map(np.asarray, (loc_p, log_p, loc_q, log_q))), rtol=1e-14
    )
    grad = jax.jit(jax.grad(lambda la: kl_row(loc_p, la, loc_q, log_q).sum()))(log_p)
    np.testing.assert_allclose(
        np.asarray(grad), np.expm1(2 * (np.asarray(log_p) - np.asarray(log_q))), rtol=1e-13
    )
    grad_at_equal = jax.jit(jax.grad(lambda la: kl_row(loc_p, la, loc_p, log_p).sum()))(log_p)
    np.testing.assert_array_equal(np.asarray(grad_at_equal), 0.0)


@pytest.mark.parametrize("name", EXPM1MX_DTYPES)
def test_expm1mx_under_jit_is_accurate(jax_backend, name):
    """Compiled code may fuse differently from eager code: it must meet the same bound (the
    documented 2.5 ulp; 1 ulp of a half dtype, whose float32 computation and casts are
    compiled too)."""
    jax = jax_backend
    x, exact = accuracy_inputs(name)
    got = np.asarray(jax.jit(kb.special.expm1mx)(jax.numpy.asarray(x)))
    assert got.dtype == x.dtype
    assert_expm1mx_within(got, x, ulp_bound(name, BOUND), exact=exact, flushes=True)


def test_torch_compile_fullgraph(torch_backend):
    torch = torch_backend
    loc_p, log_p, loc_q, log_q = (torch.tensor(a) for a in data())

    def f(a, la, b, lb):
        return kb.kl_divergence(kb.Normal(a, log_scale=la), kb.Normal(b, lb.exp()), axis=-1)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    expected = f(loc_p, log_p, loc_q, log_q)
    torch.testing.assert_close(compiled(loc_p, log_p, loc_q, log_q), expected, rtol=0, atol=0)


def test_torch_compile_on_the_first_call(torch_backend, monkeypatch):
    """A compiled training step may be the first caller of kl_divergence: the pair lookup is
    then traced too (it once used ``min`` with a key function, which broke fullgraph)."""
    import kullback._registry as registry

    torch = torch_backend
    monkeypatch.setattr(registry, "_LOOKUP_CACHE", {})
    loc, log_scale = (torch.tensor(a) for a in data()[:2])

    def f(a, ls):
        return kb.kl_divergence(kb.Normal(a, log_scale=ls), kb.Normal(0.0, 1.0), axis=-1)

    compiled = torch.compile(f, fullgraph=True, backend="eager")(loc, log_scale)
    torch.testing.assert_close(compiled, f(loc, log_scale), rtol=0, atol=0)


def test_vae_prior_under_torch_compile_inductor(torch_backend, monkeypatch):
    """The README's VAE term, the prior by a Python-number scale, compiled by inductor with
    fullgraph: its log enters as constants made in Python (the array path is refused), so
    inductor compiles a short graph (it took over 7 minutes when the constant's multi-word
    log went through it)."""
    refuse_the_array_path(monkeypatch)
    torch = torch_backend
    loc, log_scale = (torch.tensor(a, dtype=torch.float32) for a in data()[:2])

    def f(a, ls):
        return kb.kl_divergence(kb.Normal(a, log_scale=ls), kb.Normal(0.0, 1.7), axis=-1)

    compiled = torch.compile(f, fullgraph=True)(loc, log_scale)
    torch.testing.assert_close(compiled, f(loc, log_scale), rtol=4e-7, atol=0)


@pytest.mark.parametrize("name", EXPM1MX_DTYPES)
def test_torch_compile_inductor_is_accurate(backend, torch_backend, name):
    """Inductor-compiled code (which lowers expm1 to exp(x) - 1) meets the eager bound (the
    documented 2.5 ulp; 1 ulp of a half dtype)."""
    torch = torch_backend
    x, exact = accuracy_inputs(name)
    compiled = torch.compile(kb.special.expm1mx, fullgraph=True)
    result = compiled(backend.asarray(x, name))
    assert result.dtype == getattr(torch, name)
    assert_expm1mx_within(backend.to_numpy(result), x, ulp_bound(name, BOUND), exact=exact)


def test_torch_compile_inductor_normal_kl(torch_backend):
    torch = torch_backend
    loc_p, log_p, loc_q, log_q = (torch.tensor(a) for a in data())

    def f(a, s, b, t):
        return kb.kl_divergence(kb.Normal(a, s), kb.Normal(b, t), axis=-1)

    compiled = torch.compile(f, fullgraph=True)
    args = (loc_p, log_p.exp(), loc_q, log_q.exp())
    torch.testing.assert_close(compiled(*args), f(*args), rtol=4 * 2.0**-52, atol=0)


def half_data(name, q_by_log):
    """:func:`data` rounded to a half dtype: loc_p, log_scale_p, loc_q, and q's log-scale or
    its scale."""
    loc_p, log_p, loc_q, log_q = data()
    q_param = log_q if q_by_log else np.exp(log_q)
    return [np.asarray(a, dtype=name) for a in (loc_p, log_p, loc_q, q_param)]


def kl_by_log_scales(a, ls, b, lt):
    return kb.kl_divergence(kb.Normal(a, log_scale=ls), kb.Normal(b, log_scale=lt))


def mixed_kl(a, ls, b, t):
    """p by its log-scale, q by its scale: through the multi-word log-ratio."""
    return kb.kl_divergence(kb.Normal(a, log_scale=ls), kb.Normal(b, t))


def assert_half_kl_within_1_ulp(kl, grads, arrays, q_by_log):
    """A half-precision KL of p by its log-scale and its gradients by ``loc_p`` and
    ``log_scale_p`` (NumPy, the half dtype), ``(a - b)/t**2`` and ``expm1(2 (ls - lt))``:
    within 1 ulp of mpmath's on the exact half inputs (the contract for half dtypes)."""
    dtype = arrays[0].dtype
    columns = zip(*(v.astype(np.float64).ravel().tolist() for v in arrays), strict=True)
    exact_kl, exact_grads = [], ([], [])
    with mpmath.workdps(50):
        for a, ls, b, q_param in columns:
            lt = mpmath.mpf(q_param) if q_by_log else mpmath.log(q_param)
            exact_kl.append(kl_normal(a, b, log_scale_p=ls, log_scale_q=lt))
            exact_grads[0].append((a - b) / mpmath.exp(2 * lt))
            exact_grads[1].append(mpmath.expm1(2 * (ls - lt)))
    for got, exact in ((kl, exact_kl), *zip(grads, exact_grads, strict=True)):
        assert got.dtype == dtype
        assert np.max(ulp_errors(got.ravel(), exact, dtype)) <= 1.0


@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_precision_kl_under_jit(jax_backend, name):
    """Half inputs under jax.jit: the casts to float32 and back compile with the kernel, and
    the KL and its gradients are the half dtype's, within 1 ulp (q by log-scale and by
    scale)."""
    jax = jax_backend
    for kl, q_by_log in ((kl_by_log_scales, True), (mixed_kl, False)):
        arrays = half_data(name, q_by_log)
        args = [jax.numpy.asarray(v) for v in arrays]
        value = jax.jit(kl)(*args)
        grads = jax.jit(jax.grad(lambda *v, kl=kl: kl(*v).sum(), argnums=(0, 1)))(*args)
        grads = [np.asarray(g) for g in grads]
        assert_half_kl_within_1_ulp(np.asarray(value), grads, arrays, q_by_log)


@pytest.mark.parametrize("name", HALF_DTYPES)
def test_half_precision_kl_under_torch_compile(backend, torch_backend, name):
    """Half inputs under torch.compile with fullgraph: the casts to float32 and back trace
    with the kernel, and the KL and its gradients are the half dtype's, within 1 ulp.  Two
    log-scales through inductor (forward and backward); q by its scale through AOTAutograd's
    graphs run eagerly (inductor takes over a minute on the multi-word log-ratio)."""
    torch = torch_backend
    for kl, q_by_log, compiler in (
        (kl_by_log_scales, True, "inductor"),
        (mixed_kl, False, "aot_eager"),
    ):
        arrays = half_data(name, q_by_log)
        args = [backend.asarray(v, name) for v in arrays]
        for v in args[:2]:
            v.requires_grad_(True)
        value = torch.compile(kl, fullgraph=True, backend=compiler)(*args)
        value.sum().backward()
        grads = [backend.to_numpy(v.grad) for v in args[:2]]
        assert_half_kl_within_1_ulp(backend.to_numpy(value), grads, arrays, q_by_log)


# scale_p, scale_q: infinite, zero, negative, NaN and two zero scales; with equal locations
# every row is NaN except the zero scale_p (+inf).
SPECIAL_SCALES = (
    [1.0, np.inf, 0.0, 1.0, -1.0, -1.0, 1.0, np.nan, 0.0, 0.0],
    [np.inf, 1.0, 1.0, 0.0, 1.0, -1.0, -1.0, 1.0, -1.0, 0.0],
)


def special_value_kl(a, s, b, t):
    return kb.kl_divergence(kb.Normal(a, s), kb.Normal(b, t))


def test_special_values_under_jit(jax_backend):
    """XLA may rewrite a product with a 0/1 mask as a selection: NaN and inf must survive."""
    jax = jax_backend
    scale_p, scale_q = (jax.numpy.asarray(np.array(v)) for v in SPECIAL_SCALES)
    loc = jax.numpy.zeros(len(SPECIAL_SCALES[0]))
    expected = np.asarray(special_value_kl(loc, scale_p, loc, scale_q))
    assert np.isnan(expected).sum() == 9
    assert expected[2] == np.inf
    got = np.asarray(jax.jit(special_value_kl)(loc, scale_p, loc, scale_q))
    np.testing.assert_array_equal(got, expected)


def test_special_values_under_torch_compile(torch_backend):
    torch = torch_backend
    scale_p, scale_q = (torch.tensor(v, dtype=torch.float64) for v in SPECIAL_SCALES)
    loc = torch.zeros(len(SPECIAL_SCALES[0]), dtype=torch.float64)
    expected = special_value_kl(loc, scale_p, loc, scale_q).numpy()
    assert np.isnan(expected).sum() == 9
    assert expected[2] == np.inf
    got = torch.compile(special_value_kl, fullgraph=True)(loc, scale_p, loc, scale_q).numpy()
    np.testing.assert_array_equal(got, expected)


def test_torch_func_vmap(torch_backend):
    torch = torch_backend
    loc_p, log_p, loc_q, log_q = (torch.tensor(a) for a in data())

    def kl_row(a, la, b, lb):
        return kb.kl_divergence(kb.Normal(a, log_scale=la), kb.Normal(b, log_scale=lb), axis=-1)

    batched = torch.func.vmap(kl_row)(loc_p, log_p, loc_q, log_q)
    np.testing.assert_allclose(
        batched.numpy(), reference(*(t.numpy() for t in (loc_p, log_p, loc_q, log_q))), rtol=1e-14
    )


def log_difference_errors(got, name):
    from tests.reference.normal import log_difference_sweep, ulp_errors

    return ulp_errors(got, list(log_difference_sweep(name)[2]), np.dtype(name).type)


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_log_difference_under_jit_is_accurate(jax_backend, name):
    """XLA reassociates sums with literal constants and contracts products into FMAs inside
    fusions: the error-free transformations of the mixed log-ratio must survive both."""
    from kullback._double_word import log_difference
    from tests.reference.normal import log_difference_sweep

    jax = jax_backend
    scale, log_scale, _ = log_difference_sweep(name)
    f = jax.jit(lambda s, t: log_difference(s, t, jax.numpy))
    got = np.asarray(f(jax.numpy.asarray(scale), jax.numpy.asarray(log_scale)))
    assert np.max(log_difference_errors(got, name)) <= 1


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_log_difference_under_torch_compile_is_accurate(torch_backend, xp, name):
    from kullback._double_word import log_difference
    from tests.reference.normal import log_difference_sweep

    torch = torch_backend
    scale, log_scale, _ = log_difference_sweep(name)
    f = torch.compile(lambda s, t: log_difference(s, t, xp), fullgraph=True)
    got = f(torch.from_numpy(scale), torch.from_numpy(log_scale)).numpy()
    assert np.max(log_difference_errors(got, name)) <= 1


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_log_difference_with_a_constant_scale_under_jit(jax_backend, name):
    """A Python-scalar scale inside a jitted function (a prior N(0, s)) is a constant: XLA
    folds its log words at compile time, and must not simplify away their error terms."""
    from kullback._double_word import log_difference
    from tests.reference.normal import log_difference_sweep, ulp_errors

    jax = jax_backend
    scale, log_scale, exact = log_difference_sweep(name)
    rows = np.linspace(0, len(scale) - 1, 12).astype(int)
    for i in rows:
        constant = float(scale[i])
        f = jax.jit(
            lambda t, c=constant: log_difference(jax.numpy.asarray(c, t.dtype), t, jax.numpy)
        )
        got = np.asarray(f(jax.numpy.asarray(np.full(3, log_scale[i]))))
        errors = ulp_errors(got, [exact[i]] * 3, np.dtype(name).type)
        assert np.max(errors) <= 1, (constant, log_scale[i], got)


def test_vae_prior_with_a_python_number_scale_under_jit(jax_backend, monkeypatch):
    """The prior by a Python-number scale inside jax.jit: its log words are constants behind
    an optimization barrier (the array path is refused); equal to eager to an ulp,
    gradients included."""
    refuse_the_array_path(monkeypatch)
    jax = jax_backend
    loc, log_scale = (jax.numpy.asarray(a) for a in data()[:2])

    def f(a, ls):
        return kb.kl_divergence(kb.Normal(a, log_scale=ls), kb.Normal(0.0, 2.7357420), axis=-1)

    np.testing.assert_allclose(jax.jit(f)(loc, log_scale), f(loc, log_scale), rtol=4e-16)
    for got, want in zip(
        jax.jit(jax.grad(lambda a, ls: f(a, ls).sum(), argnums=(0, 1)))(loc, log_scale),
        jax.grad(lambda a, ls: f(a, ls).sum(), argnums=(0, 1))(loc, log_scale),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-14)


def test_mixed_kl_under_jit_and_grad(jax_backend):
    """Scale vs log-scale under jit, value and gradients, equal to eager."""
    jax = jax_backend
    loc_p, log_p, loc_q, log_q = (jax.numpy.asarray(a) for a in data())

    def kl(a, s, b, lt):
        return kb.kl_divergence(kb.Normal(a, s), kb.Normal(b, log_scale=lt), axis=-1).sum()

    args = (loc_p, jax.numpy.exp(log_p), loc_q, log_q)
    np.testing.assert_allclose(jax.jit(kl)(*args), kl(*args), rtol=1e-14)
    eager = jax.grad(kl, argnums=(1, 3))(*args)
    for got, want in zip(jax.jit(jax.grad(kl, argnums=(1, 3)))(*args), eager, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-13)


# --- Categorical, Bernoulli, sample_kl ----------------------------------------------------


def categorical_data():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(4, 7)) * 3
    a[0, 2] = -np.inf
    b = a + 0.01 * rng.normal(size=a.shape)
    mask = np.array([True, True, False, True])
    return a, b, mask


def categorical_reference(a, b, mask):
    """Per-row KLs, masked mean, k3 and Bernoulli KLs, computed eagerly with NumPy."""
    p, q = kb.Categorical(a), kb.Categorical(b)
    return (
        np.asarray(kb.kl_divergence(p, q)),
        np.asarray(kb.kl_divergence(p, q, axis=0, where=mask, reduction="mean")),
        np.asarray(kb.sample_kl(a[:, 0], b[:, 1])),
        np.asarray(kb.kl_divergence(kb.Bernoulli(a[:, 1]), kb.Bernoulli(probs=0.3))),
    )


def categorical_losses(a, b, mask):
    p, q = kb.Categorical(a), kb.Categorical(b)
    return (
        kb.kl_divergence(p, q),
        kb.kl_divergence(p, q, axis=0, where=mask, reduction="mean"),
        kb.sample_kl(a[:, 0], b[:, 1]),
        kb.kl_divergence(kb.Bernoulli(a[:, 1]), kb.Bernoulli(probs=0.3)),
    )


def test_categorical_under_jit_vmap_and_grad(jax_backend):
    """Categorical and Bernoulli cross the jit boundary as pytrees; vmap over rows."""
    jax = jax_backend
    a, b, mask = categorical_data()
    expected = categorical_reference(a, b, mask)
    got = jax.jit(categorical_losses)(*map(jax.numpy.asarray, (a, b, mask)))
    for value, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(np.asarray(value), want, rtol=1e-13)

    @jax.jit
    def kl(p, q):
        return kb.kl_divergence(p, q)

    p, q = kb.Categorical(jax.numpy.asarray(a)), kb.Categorical(jax.numpy.asarray(b))
    np.testing.assert_allclose(np.asarray(kl(p, q)), expected[0], rtol=1e-13)
    assert len(jax.tree_util.tree_leaves(p)) == 1
    rows = jax.vmap(lambda x, y: kb.kl_divergence(kb.Categorical(x), kb.Categorical(y)))
    np.testing.assert_allclose(np.asarray(rows(p.logits, q.logits)), expected[0], rtol=1e-13)
    grad = jax.jit(jax.grad(lambda x: kb.kl_divergence(kb.Categorical(x), q).sum()))(p.logits)
    assert np.all(np.isfinite(np.asarray(grad)))
    at_equal = jax.jit(jax.grad(lambda x: kb.kl_divergence(kb.Categorical(x), p).sum()))
    np.testing.assert_array_equal(np.asarray(at_equal(p.logits)), 0.0)


def test_categorical_under_torch_compile_fullgraph(torch_backend):
    """One graph (dynamo, fullgraph=True) for the Categorical, masked-mean, k3 and Bernoulli
    losses; inductor's code generation is tested on the Categorical KL alone below (it
    takes minutes for all four)."""
    torch = torch_backend
    a, b, mask = categorical_data()
    expected = categorical_reference(a, b, mask)
    compiled = torch.compile(categorical_losses, fullgraph=True, backend="eager")
    got = compiled(torch.tensor(a), torch.tensor(b), torch.tensor(mask))
    for value, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(value.numpy(), want, rtol=1e-13)


def test_categorical_kl_under_torch_compile_inductor(torch_backend):
    """Inductor fuses the kernel differently (and lowers expm1 to exp - 1, which the kernel
    never uses): the compiled KL of near-equal float32 rows meets the same bound."""
    from tests.reference.categorical import kl_categorical
    from tests.reference.normal import ulp_errors

    torch = torch_backend
    rng = np.random.default_rng(12)
    a = rng.normal(size=(6, 50)).astype(np.float32)
    b = (a + 1e-3 * rng.normal(size=a.shape)).astype(np.float32)
    compiled = torch.compile(
        lambda x, y: kb.kl_divergence(kb.Categorical(x), kb.Categorical(y)), fullgraph=True
    )
    got = compiled(torch.tensor(a), torch.tensor(b)).numpy()
    exact = [
        kl_categorical(p_logits=x.tolist(), q_logits=y.tolist()) for x, y in zip(a, b, strict=True)
    ]
    assert np.max(ulp_errors(got, exact, np.float32)) <= 8
