"""Damaged inputs are named with their fix; a full disk is named; no partial file is ever left.

Fault injection: truncated and random-byte outputs of the train and hessian rules, an ENOSPC
raised inside each writer, and (as root) a real, small tmpfs that fills up.
"""
import errno
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_pipeline import fake_data, small_config

from eosflow.cubes import CubeError, open_cube, write_netcdf
from eosflow.files import DiskFull, UnreadableFile, load_torch, read_json, save_torch, write_json
from eosflow.logs import rule_logging
from eosflow.jobs.hessian import run_hessian
from eosflow.jobs.spec import RunSpec
from eosflow.jobs.train import run_train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    """A finished tiny run: data, metrics.nc, snapshots.pt, cube.nc."""
    d = tmp_path_factory.mktemp("run")
    fake_data(d / "d.pt", 30, 10, 3, 3, seed=1)
    cfg = small_config({"arch": "mlp", "widths": [5], "activation": "tanh"},
                       train={"max_epochs": 10, "snapshot_every": 5, "acc_goal": 1.0}, hessian={"k": 1})
    run_train(RunSpec.from_settings(cfg, "s", 0.5, 0), d / "d.pt", d / "metrics.nc", d / "snapshots.pt", progress=False)
    run_hessian(cfg, "s", d / "d.pt", d / "metrics.nc", d / "snapshots.pt", d / "cube.nc", progress=False)
    return cfg, d


def damage(path: Path, how: str, into: Path) -> Path:
    """A damaged copy of ``path`` in ``into``: cut to half its length, or random bytes."""
    out = into / path.name
    good = path.read_bytes()
    out.write_bytes(good[: len(good) // 2] if how == "truncated" else np.random.default_rng(1).bytes(len(good)))
    return out


@pytest.mark.parametrize("how", ["truncated", "random"])
def test_damaged_outputs_are_named_with_the_fix(run_files, tmp_path, how):
    cfg, d = run_files
    metrics, snaps, cube = (damage(d / n, how, tmp_path) for n in ("metrics.nc", "snapshots.pt", "cube.nc"))
    fix = "delete it and rerun snakemake"
    with pytest.raises(CubeError, match=f"run metrics {metrics} cannot be read.*{fix}"):
        run_hessian(cfg, "s", d / "d.pt", metrics, d / "snapshots.pt", tmp_path / "c.nc", progress=False)
    with pytest.raises(UnreadableFile, match=f"run snapshots {snaps} cannot be read.*{fix}"):
        run_hessian(cfg, "s", d / "d.pt", d / "metrics.nc", snaps, tmp_path / "c.nc", progress=False)
    with pytest.raises(CubeError, match=f"run cube {cube} cannot be read.*{fix}"):
        open_cube(cube)
    assert not (tmp_path / "c.nc").exists()


def test_json_and_torch_readers_name_missing_and_damaged_files(tmp_path):
    with pytest.raises(UnreadableFile, match="fig2 plan .*plan.json does not exist"):
        read_json(tmp_path / "plan.json", "fig2 plan")
    (tmp_path / "plan.json").write_text('{"vector_steps": [1, 2')
    with pytest.raises(UnreadableFile, match="fig2 plan .*plan.json cannot be read.*delete it and rerun"):
        read_json(tmp_path / "plan.json", "fig2 plan")
    with pytest.raises(UnreadableFile, match="run snapshots .*s.pt does not exist"):
        load_torch(tmp_path / "s.pt", "run snapshots")


def test_a_rule_ends_with_the_message_not_a_traceback(tmp_path, capsys):
    log = tmp_path / "rule.log"
    with pytest.raises(SystemExit) as exc:
        with rule_logging(log):
            open_cube(tmp_path / "nope" / "cube.nc")
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("eosflow: run cube ") and "does not exist" in err and "Traceback" not in err
    assert "rule failed: run cube" in log.read_text()


# -- a full disk ------------------------------------------------------------------------------------

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


WRITERS = {
    "torch": lambda p: save_torch({"x": torch.arange(10.0)}, p),
    "netcdf": lambda p: write_netcdf(xr.Dataset({"a": ("x", np.arange(10.0))}), p),
    "json": lambda p: write_json({"a": 1}, p),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_enospc_inside_a_writer_is_named_and_leaves_nothing(tmp_path, monkeypatch, writer):
    target = tmp_path / f"out.{writer}"
    WRITERS[writer](target)  # an earlier good file stays as it was
    before = target.read_bytes()
    where = {"torch": (torch, "save"), "netcdf": (xr.Dataset, "to_netcdf"), "json": (Path, "write_text")}[writer]
    monkeypatch.setattr(*where, _enospc)
    with pytest.raises(DiskFull, match=f"no space left on device while writing {target}") as exc:
        WRITERS[writer](target)
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert target.read_bytes() == before and os.listdir(tmp_path) == [target.name]  # no temporary file left
    WRITERS[writer](target)  # once there is space again, the write succeeds


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("NetCDF: HDF error")
    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(RuntimeError, match="HDF error"):  # plenty of space here: not a DiskFull
        WRITERS["netcdf"](tmp_path / "x.nc")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], check=False)  # lazy: HDF5 may still hold a handle


@pytest.mark.parametrize("writer", ["torch", "netcdf"])
def test_a_real_full_disk_is_named_and_the_rerun_completes(small_disk, writer):
    """torch and netCDF report a full disk in their own words ("unexpected pos", "HDF error")."""
    filler = small_disk / f"filler-{uuid.uuid4().hex}"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 64 * 1024))  # 64 KiB left
    target = small_disk / "big.out"
    big = {"torch": lambda p: save_torch({"x": torch.randn(200_000)}, p),
           "netcdf": lambda p: write_netcdf(xr.Dataset({"a": ("x", np.random.default_rng(0).random(200_000))}),
                                            p, float32=False)}[writer]
    with pytest.raises(DiskFull, match=f"no space left on device while writing {target}"):
        big(target)
    assert sorted(os.listdir(small_disk)) == [filler.name]  # no partial file, no temporary file
    filler.unlink()
    big(target)
    assert target.stat().st_size > 100_000
