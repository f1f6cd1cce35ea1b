"""The benchmark's quick mode end to end (CLI, JSON: every row and target), and that its agreement
check can fail."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eosflow.bench.references import hessian_eigenthings_available
from eosflow.bench.runner import DEFAULT_METHODS, agreement
from eosflow.bench.targets import TARGET_LABELS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    assert hessian_eigenthings_available() == "1.0.0a5", \
        "the bench compares against hessian-eigenthings==1.0.0a5: pip install -e '.[test]'"
    out = tmp_path_factory.mktemp("bench")
    # a config of its own: no CIFAR-10 folder (synthetic images), and a clamp_tol that is not the
    # schema's default, so the clamp row shows that it reads the config
    (out / "config.yaml").write_text("data: {cifar10_dir: null}\ntrain: {clamp_tol: 2.0e-3}\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, "-m", "eosflow", "bench", "--quick", "--out", str(out), "--threads", "1",
                        "--config", str(out / "config.yaml")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "top-1" in p.stdout and "tracking" in p.stdout and "clamped GD" in p.stdout  # the printed tables
    assert "bare torch" in p.stdout and "targets (quick run" in p.stdout and "synthetic" in p.stdout
    return json.loads((out / "bench_quick.json").read_text())


def test_quick_report_structure(quick_report):
    r = quick_report
    assert r["quick"] is True and r["device"] == "cpu" and r["tol"] == 1e-3
    assert set(r["workloads"]) == {"mlp", "vgg", "mlp_default", "residual"}
    assert r["rows"] == ["cold", "tracking", "clamp", "gd"]
    res = r["workloads"]["residual"]  # a user's model through a DataLoader, against the peers
    assert set(res["cold"]) == {"top1", "top3"} and res["info"]["batch_size"] == 32 and res["hvp_cost"]["x_grad"] > 0
    assert list(res["cold"]["top1"]["methods"]) == ["eosflow", "eosflow_lean", "pyhessian", "hessian_eigenthings",
                                                    "curvlinops"]
    mlp = r["workloads"]["mlp"]
    assert mlp["info"]["n_params"] > 1000 and mlp["info"]["n_examples"] == 300
    assert set(mlp["cold"]) == {"top1", "top10"}
    vgg = r["workloads"]["vgg"]
    assert vgg["info"]["model"]["batch_norm"] is True and vgg["info"]["hvp_mode_objective"] == "revrev"
    # no CIFAR-10 folder given: synthetic images, and the JSON says so
    assert vgg["info"]["data_real"] is False and vgg["info"]["data"].startswith("synthetic")
    assert set(vgg["cold"]) == {"top1", "top3"}
    for w in (mlp, vgg):
        for name, cold in w["cold"].items():
            k = cold["k"]
            assert name == f"top{k}"
            expected = list(DEFAULT_METHODS)  # every default method on both workloads, in order
            assert list(cold["methods"]) == expected
            for m, e in cold["methods"].items():
                assert len(e["eigvals"]) == k and len(e["residuals"]) == k, m
                assert e["eigvals"] == sorted(e["eigvals"], reverse=True), m
                assert e["time_s"] > 0 and e["n_matvec"] >= k and e["peak_rss_mb"] > 0, m
                # every method meets the tolerance, checked with fresh HVPs
                assert e["meets_tol"] and e["max_residual"] <= cold["tol"], m
                # the engine's rows say which Hessian-vector product they used (None until it says)
                assert ("product" in e) == m.startswith("eosflow"), m
            # what the engine kept between products: everything (within its budget), or nothing
            full, none = cold["methods"]["eosflow"]["primal_cache"], cold["methods"]["eosflow_nocache"]["primal_cache"]
            assert none["cached_chunks"] == 0 and none["cache_mb"] == 0 and none["budget_mb"] == 0
            assert full["cached_chunks"] == full["chunks"] == -(-w["info"]["n_examples"] // (w["info"]["chunk_size"]
                                                                                           or w["info"]["n_examples"]))
            assert 0 < full["cache_mb"] <= full["budget_mb"]
            assert cold["methods"]["hessian_eigenthings"]["calibration"]["m"] == \
                cold["methods"]["hessian_eigenthings"]["n_matvec"]
            assert set(cold["speedup_eosflow_vs"]) == set(expected) - {"eosflow"}
    t = mlp["tracking"]
    assert t["steps"] == 6 and t["k"] == 2 and t["all_converged"] and t["max_residual"] <= 1e-3
    assert t["lr"] > 2 / t["sharpness_theta0"]  # above the stability limit
    assert [c["step"] for c in t["compare_scipy"]] == [1, 5]  # warm-started steps
    assert t["median_measure_s"] > 0 and t["median_gd_step_s"] > 0 and t["ratio_same_steps_median"] > 0
    tv = vgg["tracking"]
    assert tv["steps"] == 4 and tv["k"] == 1 and [c["step"] for c in tv["compare_scipy"]] == [1, 3]
    assert tv["lr"] > 2 / tv["sharpness_theta0"] and "product" in tv and "product" in t
    for tr in (t, tv):  # where the catapult ended: the first step with S below 2/η, and the steps after it
        c = tr["catapult_end_step"]
        assert c is None or (tr["steps_past_catapult"] == tr["steps"] - c
                             and tr["compared_past_catapult"] == all(x["step"] >= c for x in tr["compare_scipy"]))
    assert set(r["targets"]) == set(TARGET_LABELS) - {"gpu_top10_le_30ms", "gpu_step_plus_top10_le_20ms"}
    for key, entry in r["targets"].items():  # every target measured in the quick run, each with its row
        assert entry["ratio"] is not None and entry["compare"] in (">=", "<="), key
        assert {"ratio", "target", "met", "note"} <= set(entry), key
    # the target row keeps 5 significant digits of the measured ratio
    assert r["targets"]["4_vgg_tracking"]["ratio"] == pytest.approx(tv["ratio_same_steps_median"], rel=1e-4)
    assert r["targets"]["eigvals_and_residuals"]["met"] is True
    assert "chunks kept" in r["targets"]["1_vgg_top1_cold"]["note"]


def test_quick_clamp_rows_follow_the_clamp_and_hold(quick_report):
    """The clamp row steps as a clamped run does: η_t = min(η, clamp·2/U_t) from its recorded bound
    U_t (a solve's S·(1+clamp_tol), or the predicted one), and η_t·S ≤ 2·clamp with S recomputed
    to 1e-6; the default MLP's row also at every step by a float64 tracker."""
    for name in ("mlp", "vgg", "mlp_default"):
        w = quick_report["workloads"][name]
        c = w["clamp"]
        assert c["status"] == "ran" and c["steps"] == {"mlp": 6, "vgg": 4, "mlp_default": 12}[name]
        assert c["clamp"] == 0.95 and c["clamp_tol"] == 2e-3  # the default clamp, the config's clamp_tol
        assert c["clamp_margin"] == 0 and c["predicted_steps"] == 0  # the schema's default: the exact clamp
        assert c["max_iter"] == 100  # hessian.max_iter: the schema's default (the config has none)
        assert c["lr"] > 2 / w["sharpness_theta0"] and c["binding_steps"] >= 1  # above the limit: it binds
        assert c["solves"] + c["predicted_steps"] == c["steps"] and c["misses"] == 0
        assert c["solves"] >= min(c["steps"], 8)  # three pairs of solves per parity before any prediction
        for lr_t, s, u in zip(c["lr_t"], c["sharpness_inloop"], c["bound_inloop"]):
            assert lr_t == pytest.approx(min(c["lr"], 0.95 * 2 / u), rel=1e-12)
            assert math.isnan(s) or u == pytest.approx(s * 1.002, rel=1e-12)
        assert c["all_converged"] and c["max_residual"] <= 2e-3
        n = c["n_matvec_per_measurement"]
        assert n["first"] >= 2 and n["median"] >= 2 and n["max"] <= c["max_iter"] + 10
        assert c["median_measure_s"] > 0 and c["median_clamped_step_s"] > c["median_measure_s"]
        assert c["ratio_clamped_vs_plain"] == pytest.approx(sum(c["clamped_step_times_s"]) / sum(c["gd_step_times_s"]),
                                                            rel=1e-2)  # amortised: totals, not medians
        v = c["validity"]
        assert v["exact_tol"] == 1e-6 and v["checks"] and v["ok"]
        for chk in v["checks"]:
            assert chk["exact_converged"] and chk["exact_residual"] <= 1e-6
            assert chk["lr_t"] == c["lr_t"][chk["step"]]
            assert chk["lr_t"] * chk["s_exact"] <= 2 * 0.95 * (1 + 1e-6)
            if not math.isnan(chk["s_inloop"]):
                assert chk["s_exact"] == pytest.approx(chk["s_inloop"], rel=2e-3)  # in-loop S good to clamp_tol
        # the steps checked are ones where the clamp was binding, when there are any
        assert all(chk["binding"] for chk in v["checks"])
        every = v["every_step"]
        if name == "mlp_default":
            assert every["steps"] == c["steps"] and every["ok"] and every["unconverged"] == 0
            assert max(every["lr_s_over_2clamp"]) <= 1 + 1e-5
        else:
            assert every is None
        assert v["max_lr_s_exact_over_2clamp"] == max([chk["lr_s_exact_over_2clamp"] for chk in v["checks"]]
                                                      + ([every["max_lr_s_over_2clamp"]] if every else []))


def test_quick_gd_rows_time_the_same_update(quick_report):
    for name, w in ((n, quick_report["workloads"][n]) for n in ("mlp", "vgg")):
        g = w["gd_vs_torch"]
        assert g["steps"] == 3 and len(g["bare_times_s"]) == len(g["eosflow_times_s"]) == 3
        assert g["lr"] == pytest.approx(1 / w["sharpness_theta0"])
        # bare torch and eosflow compute the same GD update from the same θ0 (float32 rounding apart)
        assert g["same_update"] and g["first_update_rel_diff"] <= 1e-5, name
        assert g["n_chunks"] == {"mlp": 1, "vgg": 2}[name]
        assert g["ratio_eosflow_vs_bare"] == pytest.approx(g["median_eosflow_s"] / g["median_bare_s"])


def test_quick_methods_agree_on_eigenvalues(quick_report):
    """All four solvers find the same top-k eigenvalues (to 1e-4 relative) at residual ≤ 1e-3."""
    for name, w in quick_report["workloads"].items():
        if name == "residual":  # compared with a float64 reference instead (tests/test_bench_peers.py)
            continue
        for cold in w["cold"].values():
            a = cold["agreement"]
            assert a["reference"] == "scipy_eigsh" and a["ok"], a
            assert max(a["max_rel_diff"].values()) <= 1e-4, a
            # recompute from the raw eigenvalues rather than trusting the flag
            ref = cold["methods"]["scipy_eigsh"]["eigvals"]
            for m, e in cold["methods"].items():
                assert max(abs(x - y) / abs(y) for x, y in zip(e["eigvals"], ref)) <= 1e-4, m
    for w in (quick_report["workloads"]["mlp"], quick_report["workloads"]["vgg"]):
        for c in w["tracking"]["compare_scipy"]:
            assert c["max_rel_diff"] <= 1e-4 and c["scipy_max_residual"] <= 1e-3


def test_agreement_flags_disagreement():
    good = {"scipy_eigsh": [10.0, 5.0], "eosflow": [10.0 + 1e-5, 5.0]}
    assert agreement(good)["ok"]
    assert not agreement({"scipy_eigsh": [10.0, 5.0], "eosflow": [10.0, 4.999]})["ok"]  # 2e-4 off
    assert not agreement({"scipy_eigsh": [10.0, 5.0], "eosflow": [5.0, 10.0]})["ok"]  # wrong order
    assert not agreement({"scipy_eigsh": [10.0, 5.0], "eosflow": [10.0]})["ok"]  # missing one


def test_command_line_overrides_shorten_each_workloads_trajectory_rows():
    """``--clamp-steps``/``--track-steps`` (the MLPs) and ``--vgg-*-steps`` (the VGGs) cut a row to n steps
    and keep its check steps below n (else the last); 0 drops the row; other workloads' rows stay."""
    from eosflow.bench.runner import _with_overrides, configs

    specs = {s["name"]: s for s in configs(quick=False)}
    o = {"clamp_steps": 120, "track_steps": 0, "vgg_clamp_steps": 50, "vgg_track_steps": 100}
    mlp, default, small = (_with_overrides(specs[n], o) for n in ("mlp", "mlp_default", "vgg_small"))
    assert mlp["clamp"] == {**specs["mlp"]["clamp"], "steps": 120, "check_at": [50]} and mlp["track"] is None
    assert default["clamp"]["steps"] == 120 and default["clamp"]["check_at"] == [100]
    assert default["clamp"]["every_step"] is True
    assert small["clamp"] == {"steps": 50, "check_at": [49], "every_step": "predicted"}
    assert small["track"]["steps"] == 100 and small["track"]["compare_at"] == [60]
    assert _with_overrides(specs["residual"], o) == specs["residual"]
    assert _with_overrides(specs["vgg"], {})["clamp"] == specs["vgg"]["clamp"]


def test_a_clamp_rows_float64_check_can_be_kept_to_its_predicted_steps():
    """``check_every_step="predicted"`` (the VGG's row): the float64 tracker visits exactly the steps
    whose bound was predicted, in order, and says so."""
    import torch

    from eosflow.bench.steps import bench_clamp
    from eosflow.models import build_model
    from eosflow.objective import Objective
    from eosflow.spectral import top_eigenpairs

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 1, 6, 6, generator=g), torch.arange(200) % 10
    obj = Objective(build_model({"arch": "mlp", "widths": [16], "activation": "tanh"}, (1, 6, 6), 10, 0), x, y, "ce")
    theta0 = obj.flatten()
    s0 = float(top_eigenpairs(obj, theta0, 1, tol=1e-6, max_iter=300).eigvals[0])
    r = bench_clamp(obj, theta0, 3 * 2 / s0, 0.95, 1e-3, 100, 60, [59], torch.device("cpu"), margin=0.02,
                    check_every_step="predicted")
    every = r["validity"]["every_step"]
    predicted = [t for t, s in enumerate(r["sharpness_inloop"]) if s != s]
    assert len(predicted) == r["predicted_steps"] > 5
    assert every["at"] == predicted and every["steps"] == len(predicted) and every["which"] == "the predicted steps"
    assert every["ok"] and every["max_lr_s_over_2clamp"] <= 1 + 1e-5


def _load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_batched_sweep_jobs_compares_a_group_with_its_runs(tmp_path):
    """benchmarks/batched_sweep_jobs.py: per setting and seed, the group's seconds against its own
    seed's runs summed (another seed's runs, and another setting's, not counted)."""
    script = _load_script("batched_sweep_jobs")

    def tsv(path: Path, s: float):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tcpu_time\n{s}\t0:00:01\t{s}\n")

    runs, groups = tmp_path / "a", tmp_path / "b"
    for tag, s in (("lrx0.5", 10.0), ("lrx1", 20.0), ("lrx2", 5.5)):
        tsv(runs / f"results/benchmarks/train/sweep/cnn/const/{tag}_seed0.tsv", s)
        tsv(runs / f"results/benchmarks/train/sweep/cnn/const/{tag}_seed1.tsv", 100.0)
        tsv(runs / f"results/benchmarks/train/sweep/mlp/const/{tag}_seed0.tsv", 1000.0)
    tsv(groups / "results/benchmarks/train_group/sweep/cnn/seed0.tsv", 14.2)
    (row,) = script.compare(runs, groups)
    assert row == {"setting": "cnn", "seed": 0, "runs": 3, "one_job_per_run_s": 35.5, "group_s": 14.2,
                   "saved_s": 21.3, "ratio": 2.5}
    tsv(runs / "results/benchmarks/hessian/fig4/a.tsv", 8.0)
    tsv(groups / "results/benchmarks/hessian/fig4/a.tsv", 6.0)
    tsv(runs / "results/benchmarks/hessian/fig4/only_in_one.tsv", 50.0)
    same = script.same_jobs(runs, groups)
    assert (same["jobs"], same["runs_build_s"], same["groups_build_s"], same["ratio"]) == (1, 8.0, 6.0, 0.75)
