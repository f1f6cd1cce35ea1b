"""ext/layers: the claims' statistics and verdict directions on constructed runs (diverged and
at-limit runs included), the layer_spectra job's file against dense Hessian blocks of a tiny model,
and the workflow target on the tiny config."""
import json
import math

import numpy as np
import pytest
import torch
import xarray as xr

from eosflow.figures.layers import final_log, layer_labels, layers_claims, make_layers, run_table, seed_table

LAYERS = ["1", "3"]  # an MLP's two Linear modules; "3" is the output layer


def fake_layers(lr, seed, eos, final, status="converged", steps=(0, 50, 100)):
    """A layer_spectra file: the top eigenvalue of each layer rises linearly to ``final`` ({layer: value})."""
    n = len(steps)
    ev = np.zeros((n, len(LAYERS), 2))
    for j, L in enumerate(LAYERS):
        ev[:, j, 0] = np.linspace(1.0, final[L], n)
        ev[:, j, 1] = ev[:, j, 0] / 2
    ds = xr.Dataset({"layer_eigval": (("step", "layer", "eig"), ev),
                     "layer_residual": (("step", "layer", "eig"), np.full(ev.shape, 1e-4)),
                     "layer_dim": ("layer", [100, 10]), "layer_type": ("layer", ["Linear", "Linear"])},
                    coords={"step": list(steps), "layer": LAYERS, "eig": [1, 2], "lr": float(lr), "seed": int(seed)})
    ds.attrs.update(status=status, eta_eos=float(eos), output_layer="3", skipped_steps="[]")
    return ds


def fake_cube(lr, seed, final_s, steps=(0, 50, 100)):
    return xr.Dataset({"sharpness": ("hstep", np.linspace(2.0, final_s, len(steps)))},
                      coords={"hstep": list(steps), "lr": float(lr), "seed": int(seed)})


RATIOS = (0.5, 0.7, 1.005, 1.4, 2.0)  # 1.005: within at_limit (1 %) of the limit, on neither side


def sweep(n_seeds, final_of, status_of=lambda r, s: "converged"):
    """Per seed (limit 0.1 + 0.01 seed) one run per ratio, final values ``final_of(ratio, seed)``."""
    layers, cubes = [], []
    for seed in range(n_seeds):
        eos = 0.1 + 0.01 * seed
        for r in RATIOS:
            layers.append(fake_layers(r * eos, seed, eos, final_of(r, seed), status_of(r, seed)))
            cubes.append(fake_cube(r * eos, seed, 2 * max(final_of(r, seed).values())))
    return layers, cubes


def decide(layers, cubes, tmp_path):
    claims = make_layers(layers, cubes, tmp_path / "l.pdf", tmp_path / "l.png", tmp_path / "l.json")
    data = json.loads((tmp_path / "l.json").read_text())
    assert (tmp_path / "l.pdf").read_bytes()[:4] == b"%PDF"
    assert [c["verdict"] for c in data["claims"]] == [c.verdict for c in claims]
    assert data["figure"] == "ext/layers" and data["registry"]["version"] >= 5
    return {c.id: c for c in claims}, data


def FLATTER(r, seed):
    """Above the limit every layer ends lower; the output layer carries the top."""
    return {"1": 2.0 if r > 1 else 4.0, "3": 5.0 if r > 1 else 10.0}


def test_statistics_of_the_constructed_table():
    def final(r, seed):  # an at-limit run with a huge value: it must not count on either side
        return {"1": 100.0 if r == 1.005 else 2.0 + r, "3": 3.0 * r}
    layers, _ = sweep(1, final)
    rows = run_table(layers)
    assert [r["side"] for r in rows] == ["below", "below", None, "above", "above"]
    (t,) = seed_table(rows, LAYERS)
    assert (t["runs_below"], t["runs_above"]) == (2, 2)
    up1, down1 = np.median(np.log([3.4, 4.0])), np.median(np.log([2.5, 2.7]))
    assert t["flatter"]["1"] == pytest.approx(up1 - down1)
    assert t["flatter"]["3"] == pytest.approx(np.mean(np.log([4.2, 6.0])) - np.mean(np.log([1.5, 2.1])))
    # above: 1.4 -> {1: 3.4, 3: 4.2} (output largest), 2.0 -> {1: 4.0, 3: 6.0} (output largest)
    assert t["output_fraction"] == 1.0


def test_diverged_runs_count_against_both_claims():
    def status(r, seed):
        return "diverged" if r == 2.0 else "converged"
    layers, _ = sweep(1, FLATTER, status)
    rows = run_table(layers)
    blown = [r for r in rows if r["status"] == "diverged"][0]
    assert final_log(blown, "1") == math.inf  # above the limit: +inf, against "flatter"
    below_blown = dict(blown, side="below")
    assert final_log(below_blown, "1") == -math.inf  # below it: -inf, against the claim too
    (t,) = seed_table(rows, LAYERS)
    assert t["flatter"]["1"] == math.inf  # median of {log 2, +inf} is +inf
    assert t["output_fraction"] == 0.5  # the diverged run above is not carried by the output layer
    assert t["diverged_above"] == 1


def test_flatter_and_output_carry_hold_with_eight_seeds(tmp_path):
    c, data = decide(*sweep(8, FLATTER), tmp_path)
    fl, out = c["layers.flatter_above"], c["layers.output_carries"]
    assert fl.verdict == "holds" and fl.family["rule"] == "every"
    assert set(fl.family["options"]) == set(data["layers"].values())
    assert all(o["verdict"] == "holds" for o in fl.family["options"].values())
    assert fl.name.startswith("every layer:")
    assert out.verdict == "holds" and out.values == [1.0] * 8
    assert len(data["seeds"]) == 8 and data["runs"][2]["side"] is None


def test_sharper_above_fails_and_a_sharper_layer_breaks_every(tmp_path):
    def sharper(r, seed):  # the first layer ends sharper above; the output layer flatter
        return {"1": 8.0 if r > 1 else 2.0, "3": 5.0 if r > 1 else 10.0}
    c, _ = decide(*sweep(8, sharper), tmp_path)
    fl = c["layers.flatter_above"]
    assert fl.family["options"][layer_labels(sweep(1, sharper)[0][0])["1"]]["verdict"] == "fails"
    assert fl.verdict == "fails"  # one layer fails at 2.5 %/2 (Holm): the "every" family fails
    # the first layer holds the largest block above the limit: the output layer does not carry it
    assert c["layers.output_carries"].verdict == "fails"


def test_every_run_above_diverging_fails_both(tmp_path):
    c, _ = decide(*sweep(8, FLATTER, lambda r, s: "diverged" if r > 1.01 else "converged"), tmp_path)
    assert c["layers.flatter_above"].verdict == "fails"
    assert c["layers.output_carries"].verdict == "fails"
    assert c["layers.output_carries"].values == [0.0] * 8


def test_three_seeds_are_undetermined_with_seeds_needed(tmp_path):
    c, _ = decide(*sweep(3, FLATTER), tmp_path)
    for cl in c.values():
        assert cl.verdict == "undetermined" and cl.needed is not None and cl.needed >= 6


# -- the job ---------------------------------------------------------------------------------------
def test_layer_spectra_job_against_dense_hessian_blocks(tmp_path):
    from eosflow.jobs.hessian import run_hessian
    from eosflow.jobs.layers import run_layer_spectra
    from eosflow.jobs.train import run_train
    from eosflow.models import build_model
    from eosflow.objective import Objective
    from eosflow.spectral.layers import group_indices, parameter_groups
    from test_pipeline import fake_data, small_config, spec

    data = fake_data(tmp_path / "d.pt", 40, 10, 3, 3, seed=1)
    cfg = small_config({"arch": "mlp", "widths": [5], "activation": "tanh"}, "ce",
                       train={"max_epochs": 30, "snapshot_every": 10, "acc_goal": 1.0, "dtype": "float64",
                              "sharpness_every": 0, "diverge_loss": 50.0},
                       hessian={"k": 2, "tol": 1e-8, "max_iter": 80, "n_samples": 30})
    run_train(spec(cfg, 0.3, 0), tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt", progress=False)
    run_hessian(cfg, "s", tmp_path / "d.pt", tmp_path / "m.nc", tmp_path / "s.pt", tmp_path / "c.nc", progress=False)
    lc = {"every": 2, "k": 3, "tol": 1e-9, "max_iter": 80}
    run_layer_spectra(lc, "s", tmp_path / "d.pt", tmp_path / "c.nc", tmp_path / "s.pt", tmp_path / "l.nc",
                      progress=False)
    ds = xr.load_dataset(tmp_path / "l.nc")
    assert ds["layer_eigval"].dims == ("step", "layer", "eig")
    assert list(ds["step"].values) == [0, 20, 30]  # every second snapshot of 0, 10, 20, 30, and the last
    assert ds.attrs["output_layer"] == ds["layer"].values[-1] and ds.attrs["status"] == "max_epochs"
    assert (ds["n_matvec"].values == ds["layer_n_matvec"].values.sum(axis=1)).all() and ds["n_matvec"].min() > 0
    cube = xr.load_dataset(tmp_path / "c.nc")
    assert ds.attrs["eta_eos"] == pytest.approx(cube.attrs["eta_eos"])
    # oracle: the dense Hessian of the loss over the first n_samples examples, its diagonal blocks
    model = build_model(cfg["settings"]["s"]["model"], (1, 3, 3), 3, seed=0).double()
    obj = Objective(model, data["x_train"][:30].double(), data["y_train"][:30], "ce")
    idx = group_indices(obj, parameter_groups(obj))
    assert list(idx) == list(ds["layer"].values)
    snaps = torch.load(tmp_path / "s.pt")
    for j, t in enumerate(ds["step"].values):
        theta = snaps["theta"][snaps["steps"].tolist().index(int(t))].double()
        H = torch.func.hessian(lambda p: obj.sum_loss(p, obj.x, obj.y) / obj.n)(theta)
        for li, (g, ix) in enumerate(idx.items()):
            top = torch.linalg.eigvalsh(H[ix][:, ix]).flip(0)[:3].numpy()
            np.testing.assert_allclose(ds["layer_eigval"].values[j, li], top, rtol=1e-6, atol=1e-9)
            assert ds["layer_dim"].values[li] == ix.numel()
        # interlacing: no block's top eigenvalue exceeds the whole Hessian's S(theta)
        s = cube["sharpness"].sel(hstep=int(t)).item()
        assert ds["layer_eigval"].values[j, :, 0].max() <= s * (1 + 1e-6)

    # a diverged run: the snapshot where the loss blew up is not measured, the file says so
    run_train(spec(cfg, 400.0, 0), tmp_path / "d.pt", tmp_path / "dm.nc", tmp_path / "ds.pt", progress=False)
    run_hessian(cfg, "s", tmp_path / "d.pt", tmp_path / "dm.nc", tmp_path / "ds.pt", tmp_path / "dc.nc",
                progress=False)
    run_layer_spectra(lc, "s", tmp_path / "d.pt", tmp_path / "dc.nc", tmp_path / "ds.pt", tmp_path / "dl.nc",
                      progress=False)
    dl, dm = xr.load_dataset(tmp_path / "dl.nc"), xr.load_dataset(tmp_path / "dm.nc")
    assert dl.attrs["status"] == dm.attrs["status"] == "diverged"
    skipped = json.loads(dl.attrs["skipped_steps"])
    assert skipped and skipped[-1] == int(torch.load(tmp_path / "ds.pt")["steps"][-1])
    assert not set(skipped) & set(dl["step"].values.tolist()) and np.isfinite(dl["layer_eigval"].values).all()
    loss = dm["train_loss"].values
    assert all(not np.isfinite(loss[s]) or loss[s] > 50.0 for s in skipped[:1])


# -- the workflow target ---------------------------------------------------------------------------
@pytest.mark.workflow
def test_workflow_builds_ext_layers_on_the_tiny_config(tmp_path):
    from test_workflow import check_claims, copy_workflow, snakemake

    wd = copy_workflow(tmp_path)
    snakemake(wd, "figures/ext/layers.pdf")
    assert (wd / "figures/ext/layers.pdf").read_bytes()[:4] == b"%PDF"
    assert (wd / "figures/ext/layers.png").stat().st_size > 10_000
    data = check_claims(wd / "figures/ext/layers.claims.json", "ext/layers")
    assert [c["id"] for c in data["claims"]] == ["layers.flatter_above", "layers.output_carries"]
    files = sorted((wd / "results/runs/sweep/fmnist_mlp").rglob("layers.nc"))
    assert len(files) == 3  # tiny.yaml's fig5 grid: 3 eta, one seed
    statuses = set()
    for p in files:
        ds = xr.load_dataset(p)
        assert ds.sizes["layer"] == 2 and ds.attrs["output_layer"] == ds["layer"].values[-1]
        assert np.isfinite(ds["layer_eigval"].values[:, :, 0]).all()
        statuses.add(ds.attrs["status"])
    assert "diverged" in statuses  # eta 500 blows up at once
    assert (wd / "results/logs/layer_spectra").is_dir()
