"""The benchmark's quick mode end to end (CLI, JSON), and that its agreement check can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eosflow.bench.references import hessian_eigenthings_available
from eosflow.bench.runner import METHOD_ORDER, agreement

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    assert hessian_eigenthings_available() == "1.0.0a5", \
        "the bench compares against hessian-eigenthings==1.0.0a5: pip install -e '.[test]'"
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, "-m", "eosflow", "bench", "--quick", "--out", str(out), "--threads", "1"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "top-1" in p.stdout and "tracking" in p.stdout  # the printed table
    return json.loads((out / "bench_quick.json").read_text())


def test_quick_report_structure(quick_report):
    r = quick_report
    assert r["quick"] is True and r["device"] == "cpu" and r["tol"] == 1e-3
    assert set(r["workloads"]) == {"mlp", "vgg"}
    mlp = r["workloads"]["mlp"]
    assert mlp["info"]["n_params"] > 1000 and mlp["info"]["n_examples"] == 300
    assert set(mlp["cold"]) == {"top1", "top3"}
    vgg = r["workloads"]["vgg"]
    assert vgg["info"]["model"]["batch_norm"] is True and vgg["info"]["hvp_mode_objective"] == "revrev"
    for w in r["workloads"].values():
        for name, cold in w["cold"].items():
            k = cold["k"]
            assert name == f"top{k}"
            expected = [m for m in METHOD_ORDER if not (w is vgg and m == "eosflow_lanczos")]
            assert list(cold["methods"]) == expected
            for m, e in cold["methods"].items():
                assert len(e["eigvals"]) == k and len(e["residuals"]) == k, m
                assert e["eigvals"] == sorted(e["eigvals"], reverse=True), m
                assert e["time_s"] > 0 and e["n_matvec"] >= k and e["peak_rss_mb"] > 0, m
                # every method meets the tolerance, checked with fresh HVPs
                assert e["meets_tol"] and e["max_residual"] <= cold["tol"], m
            assert cold["methods"]["hessian_eigenthings"]["calibration"]["m"] == \
                cold["methods"]["hessian_eigenthings"]["n_matvec"]
            assert set(cold["speedup_eosflow_vs"]) == set(expected) - {"eosflow"}
    t = mlp["tracking"]
    assert t["steps"] == 6 and t["k"] == 2 and t["all_converged"] and t["max_residual"] <= 1e-3
    assert t["lr"] > 2 / t["sharpness_theta0"]  # above the stability limit
    assert [c["step"] for c in t["compare_scipy"]] == [1, 5]  # warm-started steps
    assert t["median_measure_s"] > 0 and t["median_gd_step_s"] > 0 and t["ratio_same_steps_median"] > 0
    assert "cpu_tracking_5x_vs_scipy" in r["targets"]


def test_quick_methods_agree_on_eigenvalues(quick_report):
    """All four solvers find the same top-k eigenvalues (to 1e-4 relative) at residual ≤ 1e-3."""
    for w in quick_report["workloads"].values():
        for cold in w["cold"].values():
            a = cold["agreement"]
            assert a["reference"] == "scipy_eigsh" and a["ok"], a
            assert max(a["max_rel_diff"].values()) <= 1e-4, a
            # recompute from the raw eigenvalues rather than trusting the flag
            ref = cold["methods"]["scipy_eigsh"]["eigvals"]
            for m, e in cold["methods"].items():
                assert max(abs(x - y) / abs(y) for x, y in zip(e["eigvals"], ref)) <= 1e-4, m
    for c in quick_report["workloads"]["mlp"]["tracking"]["compare_scipy"]:
        assert c["max_rel_diff"] <= 1e-4 and c["scipy_max_residual"] <= 1e-3


def test_agreement_flags_disagreement():
    good = {"scipy_eigsh": [10.0, 5.0], "eosflow": [10.0 + 1e-5, 5.0]}
    assert agreement(good)["ok"]
    assert not agreement({"scipy_eigsh": [10.0, 5.0], "eosflow": [10.0, 4.999]})["ok"]  # 2e-4 off
    assert not agreement({"scipy_eigsh": [10.0, 5.0], "eosflow": [5.0, 10.0]})["ok"]  # wrong order
    assert not agreement({"scipy_eigsh": [10.0, 5.0], "eosflow": [10.0]})["ok"]  # missing one
