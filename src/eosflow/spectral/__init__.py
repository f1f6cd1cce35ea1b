"""Top Hessian eigenpairs from Hessian-vector products.

- :mod:`~eosflow.spectral.operators`: the operator protocol (``dim``, ``dtype``, ``device``,
  ``matvec``, ``matvec_batch``), the base of every Hessian-vector product (:class:`HessianOperator`)
  and two of them (:class:`ObjectiveHVP`, :class:`CachedHVP`; the R-operator's is
  :mod:`~eosflow.spectral.rop`), plus :class:`FunctionOperator` for any ``v ↦ A v``;
- :mod:`~eosflow.spectral.block`: block Lanczos with stored products, the default engine;
- :mod:`~eosflow.spectral.lanczos`: single-vector Lanczos, half the basis memory;
- :mod:`~eosflow.spectral.tracker`: :func:`top_eigenpairs` of an objective at ``θ`` and
  :class:`SpectrumTracker`, warm-started along a trajectory;
- :mod:`~eosflow.spectral.density`: the spectral density by stochastic Lanczos quadrature (:func:`slq`);
- :mod:`~eosflow.spectral.trace`: the trace by Hutchinson and Hutch++ (:func:`hessian_trace`);
- :mod:`~eosflow.spectral.layers`: top eigenpairs of per-layer Hessian blocks (:func:`layer_spectra`).
"""

from .block import block_lanczos, block_lanczos_topk
from .density import SpectralDensity, slq, spectral_density, wasserstein1
from .krylov import EigResult
from .layers import LayerSpectra, RestrictedOperator, layer_spectra, parameter_groups
from .lanczos import lanczos, lanczos_topk
from .operators import CachedHVP, ChunkedLoss, FunctionOperator, HessianOperator, LinearOperator, ObjectiveHVP
from .tracker import METHODS, SpectrumTracker, hvp_operator, top_eigenpairs
from .trace import TraceEstimate, hessian_trace, hutchinson, hutchpp

__all__ = ["EigResult", "LinearOperator", "ChunkedLoss", "FunctionOperator", "HessianOperator", "ObjectiveHVP",
           "CachedHVP", "block_lanczos", "block_lanczos_topk", "lanczos", "lanczos_topk", "hvp_operator",
           "top_eigenpairs", "SpectrumTracker", "METHODS", "SpectralDensity", "slq", "spectral_density", "wasserstein1",
           "TraceEstimate", "hutchinson", "hutchpp", "hessian_trace", "LayerSpectra", "RestrictedOperator",
           "layer_spectra", "parameter_groups"]
