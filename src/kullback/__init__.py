"""kullback: exact, never-negative Kullback–Leibler divergences for every array framework.

Functions take arrays of NumPy, CuPy, PyTorch, JAX, Dask or array-api-strict (or Python
scalars) and return arrays of the same framework, dtype and device.
"""

from . import _pairs, special
from ._registry import kl_divergence, register_kl
from .distributions import Bernoulli, Categorical, Distribution, Normal
from .estimators import sample_kl

__all__ = [
    "Bernoulli",
    "Categorical",
    "Distribution",
    "Normal",
    "kl_divergence",
    "register_kl",
    "sample_kl",
    "special",
]
__version__ = "0.1.0"

del _pairs
