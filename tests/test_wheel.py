"""The package as a researcher installs it: a wheel built from this checkout, installed into a fresh
virtual environment outside the repository, used from a folder that is not a checkout."""
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow  # slow: builds and installs


def run(cmd, cwd, env=None, check=True):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and out.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, a work folder outside the repository)."""
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(ROOT)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("eosflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eosflow/schemas/config.schema.yaml" in names and "eosflow/schemas/claims.schema.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "workflow/", "oracles"))], names
    # the venv sees torch & co. from this interpreter's site-packages; eosflow comes from the wheel
    run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")], cwd=tmp)
    python = tmp / "venv" / "bin" / "python"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=tmp)
    work = tmp / "work"
    work.mkdir()
    return python, work


def _env():
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_the_installed_package_is_the_wheel(installed):
    python, work = installed
    out = run([str(python), "-c", "import eosflow; print(eosflow.__file__)"], cwd=work, env=_env())
    path = Path(out.stdout.strip())
    assert str(path).startswith(str(python.parents[1])), path
    assert ROOT not in path.parents


def test_check_config_from_the_wheel(installed):
    python, work = installed
    # a whole config of one's own (no config/config.yaml here: the schema fills in the defaults)
    (work / "mine.yaml").write_text(textwrap.dedent("""
        settings:
          fmnist_mlp:
            dataset: fashion-mnist
            n_train: 500
            n_test: 200
            model: {arch: mlp, widths: [16], activation: tanh}
            loss: ce
        fig5: {lrs: [0.05, 0.1]}
    """))
    out = run([str(python), "-m", "eosflow", "check-config", "mine.yaml"], cwd=work, env=_env())
    assert out.stdout.strip() == "ok"
    (work / "bad.yaml").write_text("fig5:\n  lrs: [0.05, -1]\n")
    out = run([str(python), "-m", "eosflow", "check-config", "mine.yaml", "bad.yaml"], cwd=work, env=_env(),
              check=False)
    assert out.returncode == 1 and "config key fig5.lrs[1]" in out.stderr
    # with the workflow's own config as the base
    out = run([str(python), "-m", "eosflow", "check-config", "--default", str(ROOT / "config/config.yaml"),
               "bad.yaml"], cwd=work, env=_env(), check=False)
    assert out.returncode == 1 and "config key fig5.lrs[1]" in out.stderr
    out = run([str(python), "-m", "eosflow", "check-config", "--default", str(ROOT / "config/config.yaml")],
              cwd=work, env=_env())
    assert out.stdout.strip() == "ok"


def test_top_eigenpairs_from_the_wheel(installed):
    python, work = installed
    code = textwrap.dedent("""
        import torch
        from eosflow.models import build_model
        from eosflow.objective import Objective
        from eosflow.spectral import top_eigenpairs
        torch.manual_seed(0)
        model = build_model({"arch": "mlp", "widths": [6], "activation": "tanh"}, (1, 3, 3), 3, seed=0).double()
        x, y = torch.randn(30, 1, 3, 3, dtype=torch.float64), torch.arange(30) % 3
        obj = Objective(model, x, y, "ce", chunk_size=12)
        theta = obj.flatten()
        H = torch.func.hessian(lambda t: sum(obj.sum_loss(t, xc, yc) for xc, yc in obj.chunks()) / obj.n)(theta)
        exact = torch.linalg.eigvalsh(H).flip(0)[:3]
        r = top_eigenpairs(obj, theta, 3, tol=1e-8, max_iter=obj.dim)
        assert r.converged, r
        err = float(((r.eigvals - exact).abs() / exact.abs()).max())
        assert err < 1e-6, err
        print("ok", obj.dim, err)
    """)
    out = run([str(python), "-c", code], cwd=work, env=_env())
    assert out.stdout.startswith("ok"), out.stdout
