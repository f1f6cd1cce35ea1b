"""Per-layer Hessian spectra: the top eigenpairs of diagonal blocks of the Hessian
(:func:`layer_spectra`), one block per group of parameters (by default one per module that owns
parameters: :func:`parameter_groups`).

The block ``H_gg`` of a group ``g`` (its parameters' rows and columns of the Hessian) acts through
:class:`RestrictedOperator`: a vector of the group's size is zero-padded to the full parameter
vector, multiplied by the whole operator, and the group's part of the product is kept. Each
product is one full Hessian-vector product, so a group costs what a whole-network solve of the same
number of steps costs; :func:`layer_spectra` reuses one Hessian operator (and the graphs it keeps)
for all groups and counts the products per group and in all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .block import block_lanczos
from .krylov import EigResult
from .operators import DEFAULT_GRAPH_CACHE_BYTES, LinearOperator

__all__ = ["RestrictedOperator", "parameter_groups", "group_indices", "LayerSpectra", "layer_spectra"]


class RestrictedOperator:
    """The principal block ``A[index][:, index]`` of an operator ``op``: ``matvec(v)`` scatters
    ``v`` (length ``len(index)``) into a zero vector of ``op.dim``, applies ``op`` and gathers
    ``index``. ``n_matvec`` counts the products of ``op``; ``product`` is ``op``'s."""

    def __init__(self, op: LinearOperator, index: Tensor):
        self.op = op
        self.index = torch.as_tensor(index, dtype=torch.long).to(op.device)
        if self.index.ndim != 1 or self.index.numel() == 0:
            raise ValueError("index: need a non-empty 1-d index")
        self.dim, self.dtype, self.device = int(self.index.numel()), op.dtype, op.device
        self.product = getattr(op, "product", None)
        self.n_matvec = 0

    def matvec(self, v: Tensor) -> Tensor:
        return self.matvec_batch(v[None])[0]

    def matvec_batch(self, V: Tensor) -> Tensor:
        full = torch.zeros(V.shape[0], self.op.dim, dtype=self.dtype, device=self.device)
        full[:, self.index] = V.to(self.dtype)
        out = self.op.matvec_batch(full) if V.shape[0] > 1 else self.op.matvec(full[0])[None]
        self.n_matvec += V.shape[0]
        return out[:, self.index]


def _owner_names(model: nn.Module) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for mod_name, mod in model.named_modules():
        own = [f"{mod_name}.{p}" if mod_name else p for p, _ in mod.named_parameters(recurse=False)]
        if own:
            groups[mod_name or "<root>"] = own
    return groups


def parameter_groups(model_or_objective) -> dict[str, list[str]]:
    """One group per module that owns parameters directly: ``{module name: [its parameter names]}``
    in the model's parameter order, e.g. ``{"0": ["0.weight", "0.bias"], "2": [...]}`` for a
    ``Sequential``, dotted names for nested modules (``"block.fc"``); parameters of the root module
    itself form the group ``"<root>"``. Takes a model or an objective (its ``model``). Shared
    parameters appear once, under the first module that owns them, as in ``named_parameters``."""
    model = getattr(model_or_objective, "model", model_or_objective)
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module or an objective with a model, got {type(model).__name__}")
    names = {n for n, _ in model.named_parameters()}
    out: dict[str, list[str]] = {}
    for g, ps in _owner_names(model).items():
        ps = [p for p in ps if p in names]
        if ps:
            out[g] = ps
    return out


def group_indices(objective, groups: dict[str, list[str]]) -> dict[str, Tensor]:
    """The positions in the flat parameter vector of each group's parameters (``objective.names``,
    ``objective.sizes``), in the objective's parameter order."""
    offsets, start = {}, 0
    for n, s in zip(objective.names, objective.sizes):
        offsets[n] = (start, start + s)
        start += s
    out = {}
    for g, params in groups.items():
        if isinstance(params, str):
            params = [params]
        missing = [p for p in params if p not in offsets]
        if missing:
            raise ValueError(f"groups[{g!r}]: unknown parameter(s) {missing}; the objective's are "
                             f"{list(objective.names)}")
        if not params:
            raise ValueError(f"groups[{g!r}]: no parameters")
        ranges = sorted(offsets[p] for p in dict.fromkeys(params))
        out[g] = torch.cat([torch.arange(a, b) for a, b in ranges])
    return out


@dataclass
class LayerSpectra:
    """The result of :func:`layer_spectra`: ``results[group]`` (an
    :class:`~eosflow.spectral.EigResult` of the group's block; its ``eigvecs`` are ``(k, group
    dim)``, None unless asked for), ``index[group]`` (where the group sits in ``θ``), products
    ``n_matvec`` in all, ``k`` asked for, ``dim`` of ``θ``, the ``groups``."""

    results: dict[str, EigResult]
    index: dict[str, Tensor]
    n_matvec: int
    k: int
    dim: int
    groups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def eigvals(self) -> dict[str, Tensor]:
        return {g: r.eigvals for g, r in self.results.items()}

    def padded_eigvecs(self, group: str) -> Tensor:
        """The group's eigenvectors as rows of the full parameter dimension (zeros elsewhere)."""
        r = self.results[group]
        if r.eigvecs is None:
            raise ValueError("eigenvectors were not kept: call layer_spectra(..., eigvecs=True)")
        out = r.eigvecs.new_zeros(r.eigvecs.shape[0], self.dim)
        out[:, self.index[group].to(out.device)] = r.eigvecs
        return out

    def to_dataset(self):
        """An ``xarray.Dataset``: ``layer_eigval(group, eig)`` (NaN where a group has fewer than
        ``k`` eigenvalues), ``layer_residual(group, eig)``, ``layer_n_matvec(group)``,
        ``layer_dim(group)``; attributes ``k`` and ``n_matvec``."""
        import numpy as np
        import xarray as xr

        names = list(self.results)
        ev = np.full((len(names), self.k), np.nan)
        rs = np.full((len(names), self.k), np.nan)
        for i, g in enumerate(names):
            r = self.results[g]
            ev[i, :r.eigvals.numel()] = r.eigvals.double().cpu().numpy()
            rs[i, :r.residuals.numel()] = r.residuals.double().cpu().numpy()
        ds = xr.Dataset(
            {"layer_eigval": (("group", "eig"), ev, {"long_name": "top eigenvalues of the group's Hessian block"}),
             "layer_residual": (("group", "eig"), rs, {"long_name": "relative residual ||H v - lambda v|| / |lambda|"}),
             "layer_n_matvec": ("group", np.array([self.results[g].n_matvec for g in names])),
             "layer_dim": ("group", np.array([self.index[g].numel() for g in names]))},
            coords={"group": np.array(names, dtype=str), "eig": np.arange(self.k)})
        ds.attrs.update({"k": int(self.k), "n_matvec": int(self.n_matvec)})
        return ds


def layer_spectra(objective, theta: Tensor | None = None, groups: dict[str, list[str]] | None = None, k: int = 1,
                  *, eigvecs: bool = False, tol: float = 1e-3, max_iter: int = 200, seed: int = 0,
                  block_size: int = 1, hvp: str = "auto", operator: LinearOperator | None = None,
                  graph_cache_bytes: int = DEFAULT_GRAPH_CACHE_BYTES) -> LayerSpectra:
    """Top-``k`` eigenpairs of each group's diagonal Hessian block of ``objective`` at ``theta``.

    ``groups``: ``{name: [parameter names]}`` (default :func:`parameter_groups`: one per module
    owning parameters). ``k`` is capped at each group's size. Each block is solved by
    :func:`~eosflow.spectral.block_lanczos` (``tol``, ``max_iter``, ``seed``, ``block_size``) over a
    :class:`RestrictedOperator` of one Hessian operator (:func:`~eosflow.spectral.hvp_operator`
    with ``hvp``, or ``operator`` if given: any operator on the objective's flat parameters).
    ``eigvecs``: keep the eigenvectors (``(k, group dim)`` rows; :meth:`LayerSpectra.padded_eigvecs`
    places them in the full vector). ``n_matvec``: full Hessian-vector products, in all and per group.
    """
    if operator is None:
        if theta is None:
            raise ValueError("theta: needed unless an operator is given")
        from .tracker import hvp_operator
        operator = hvp_operator(objective, theta, hvp, graph_cache_bytes=graph_cache_bytes)
    if int(operator.dim) != int(objective.dim):
        raise ValueError(f"operator: dim {operator.dim} differs from the objective's {objective.dim}")
    groups = parameter_groups(objective) if groups is None else dict(groups)
    if not groups:
        raise ValueError("groups: empty")
    index = group_indices(objective, groups)
    results, total = {}, 0
    for g, idx in index.items():
        rop = RestrictedOperator(operator, idx)
        kk = min(int(k), rop.dim)
        r = block_lanczos(rop, kk, tol=tol, max_iter=max(max_iter, kk + 1), seed=seed, block_size=block_size)
        if not eigvecs:
            r.eigvecs = None
        r.guard = None
        total += rop.n_matvec
        results[g] = r
    return LayerSpectra(results=results, index=index, n_matvec=total, k=int(k), dim=int(objective.dim), groups=groups)
