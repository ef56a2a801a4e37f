"""Test matrix: one session per array backend, plus lint, docs, demo and bench.

``nox`` runs lint and every test session (the cupy session skips itself without a CUDA
device).  ``nox -s bench`` runs the benchmark, ``nox -s demo`` the README demonstration.
The backend under test is passed to the suite by ``KULLBACK_BACKEND``; a backend that fails
to import fails its session (it never silently skips).
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True

# A pinned torch: on machines with a local CPU wheel this resolves to it; an unpinned
# "torch" would pull the multi-GB CUDA build.
TORCH = "torch==2.13.0"

BACKENDS: dict[str, list[str]] = {
    "numpy": [],
    "array_api_strict": [],
    "torch": [TORCH],
    "jax": ["jax>=0.4.30"],
    "dask": ["dask[array]>=2024.8"],
    "cupy": ["cupy-cuda12x>=13"],
}

nox.options.sessions = ["lint", *(f"tests-{name}" for name in BACKENDS)]


def _has_cuda() -> bool:
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


def _make_tests_session(backend: str, requirements: list[str]) -> None:
    @nox.session(name=f"tests-{backend}")
    def tests(session: nox.Session) -> None:
        if backend == "cupy" and not _has_cuda():
            session.skip("no CUDA device on this machine: the cupy session runs on a GPU machine")
        if requirements:
            session.install(*requirements)
        session.install("-e", ".[test]")
        args = session.posargs or ["-q", "-p", "no:cacheprovider"]
        paths = ["tests"]
        if backend == "numpy":
            paths += ["--doctest-modules", "src/kullback"]
        session.run("pytest", *paths, *args, env={"KULLBACK_BACKEND": backend})

    tests.__doc__ = f"The conformance suite on {backend}."


for _backend, _requirements in BACKENDS.items():
    _make_tests_session(_backend, _requirements)


@nox.session
def demo(session: nox.Session) -> None:
    """The README's demonstration: a naive Normal KL next to kullback's, in float32."""
    session.install(".[numpy]")
    session.run("python", "-m", "kullback.demo")


@nox.session
def bench(session: nox.Session) -> None:
    """Interleaved benchmark against the naive formula and torch.distributions."""
    session.install(TORCH, "jax>=0.4.30", ".[numpy]")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the Sphinx documentation, warnings as errors."""
    session.install(".[docs]")
    session.run("sphinx-build", "-W", "-b", "html", "docs", "docs/_build/html")
