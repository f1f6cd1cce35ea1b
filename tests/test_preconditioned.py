"""Preconditioned sharpness (issue 12): P^(-1/2) H P^(-1/2) from HVPs against a dense eigensolve."""
import pytest
import torch
from torch import nn

from eosflow.objective import Objective
from eosflow.spectral.operators import FunctionOperator
from eosflow.spectral.preconditioned import PreconditionedOperator, preconditioned_eigenpairs
from eosflow.training import TrainConfig, train
from oracles import dense_hessian

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    return Objective(model, x, torch.arange(30) % 3, "ce", chunk_size=11)


def test_preconditioned_sharpness_against_dense_eigensolve():
    obj = tiny()
    # a trained point and the Adam preconditioner there, as a run records it
    res = train(obj, obj.flatten(), TrainConfig(lr=0.01, max_epochs=30, acc_goal=None, snapshot_every=30,
                                                optimizer="clipped_adam", clip=0.02, beta2=0.99), progress=False)
    p = res.optimizer["preconditioner"][30]
    assert (p <= 0.02 + 1e-8).all() and (p < 0.019).any()  # the cap binds somewhere, not everywhere
    H = dense_hessian(obj, res.theta)
    dense = torch.linalg.eigvals(torch.diag(1 / p) @ H).real.sort(descending=True).values  # P^-1 H, not symmetric
    sym = torch.linalg.eigvalsh(torch.diag(p.rsqrt()) @ H @ torch.diag(p.rsqrt())).flip(0)
    torch.testing.assert_close(dense[:3], sym[:3], rtol=1e-9, atol=0)
    got = preconditioned_eigenpairs(obj, res.theta, p, k=2, tol=1e-8, max_iter=300)
    torch.testing.assert_close(got.eigvals, sym[:2], rtol=1e-7, atol=0)
    assert got.converged and float(got.eigvals[0]) > float(torch.linalg.eigvalsh(H)[-1])  # P < 1: larger than S


def test_operator_is_symmetric_and_checks_its_preconditioner():
    A = torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    op = FunctionOperator(lambda v: A @ v, 2, torch.float64, matvec_batch=lambda V: V @ A.T)
    P = PreconditionedOperator(op, torch.tensor([4.0, 1.0], dtype=torch.float64))
    M = torch.stack([P.matvec(e) for e in torch.eye(2, dtype=torch.float64)])
    torch.testing.assert_close(M, M.T)
    torch.testing.assert_close(P.matvec_batch(torch.eye(2, dtype=torch.float64)), M)
    with pytest.raises(ValueError, match="positive and finite; 1 entries"):
        PreconditionedOperator(op, torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="3 entries"):
        PreconditionedOperator(op, torch.ones(3, dtype=torch.float64))
