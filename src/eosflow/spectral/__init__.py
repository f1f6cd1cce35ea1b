"""Top Hessian eigenpairs from Hessian-vector products.

- :mod:`~eosflow.spectral.operators`: the operator protocol (``dim``, ``dtype``, ``device``,
  ``matvec``, ``matvec_batch``), the base of every Hessian-vector product (:class:`HessianOperator`)
  and two of them (:class:`ObjectiveHVP`, :class:`CachedHVP`; the R-operator's is
  :mod:`~eosflow.spectral.rop`), plus :class:`FunctionOperator` for any ``v ↦ A v``;
- :mod:`~eosflow.spectral.block`: block Lanczos with stored products, the default engine;
- :mod:`~eosflow.spectral.lanczos`: single-vector Lanczos, half the basis memory;
- :mod:`~eosflow.spectral.tracker`: :func:`top_eigenpairs` of an objective at ``θ`` and
  :class:`SpectrumTracker`, warm-started along a trajectory.
"""

from .block import block_lanczos, block_lanczos_topk
from .krylov import EigResult
from .lanczos import lanczos, lanczos_topk
from .operators import CachedHVP, ChunkedLoss, FunctionOperator, HessianOperator, LinearOperator, ObjectiveHVP
from .tracker import METHODS, SpectrumTracker, hvp_operator, top_eigenpairs

__all__ = ["EigResult", "LinearOperator", "ChunkedLoss", "FunctionOperator", "HessianOperator", "ObjectiveHVP",
           "CachedHVP", "block_lanczos", "block_lanczos_topk", "lanczos", "lanczos_topk", "hvp_operator",
           "top_eigenpairs", "SpectrumTracker", "METHODS"]
