"""Top Hessian eigenpairs from Hessian-vector products.

- :mod:`~eosflow.spectral.operators`: the operator protocol (``dim``, ``dtype``, ``device``,
  ``matvec``, ``matvec_batch``) and its Hessian implementations (:class:`ObjectiveHVP`,
  :class:`CachedHVP`), plus :class:`FunctionOperator` for any ``v ↦ A v``;
- :mod:`~eosflow.spectral.block`: block Lanczos with stored products, the default engine;
- :mod:`~eosflow.spectral.lanczos`: single-vector Lanczos, half the basis memory;
- :mod:`~eosflow.spectral.tracker`: :func:`top_eigenpairs` of an objective at ``θ`` and
  :class:`SpectrumTracker`, warm-started along a trajectory.
"""

from .block import block_lanczos, block_lanczos_topk
from .krylov import EigResult
from .lanczos import lanczos, lanczos_topk
from .operators import CachedHVP, ChunkedLoss, FunctionOperator, LinearOperator, ObjectiveHVP
from .tracker import METHODS, SpectrumTracker, hvp_operator, top_eigenpairs

__all__ = ["EigResult", "LinearOperator", "ChunkedLoss", "FunctionOperator", "ObjectiveHVP", "CachedHVP",
           "block_lanczos", "block_lanczos_topk", "lanczos", "lanczos_topk", "hvp_operator", "top_eigenpairs",
           "SpectrumTracker", "METHODS"]
