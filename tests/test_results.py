"""Every number in the README has a source: the README's generated blocks equal a fresh rendering of
the committed results (the default build's snapshot, the calibration, the benchmark JSONs), the
sections that report measurements carry numbers only inside generated blocks, and the snapshot
collects a build's claims files with its commit, machine and wall time."""
import json
import re
from pathlib import Path

import jsonschema
import pytest

from eosflow.claims import claim, decide, write_claims
from eosflow.config import load_schema
from eosflow.results import (BENCH, BLOCKS, HVP_CHOICE, SNAPSHOT, _where_time_goes, check_readme, render_clamp_floor,
                             render_readme, snapshot)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_BLOCK = re.compile(r"<!-- results:([a-z_-]+) -->\n.*?<!-- /results:\1 -->", re.S)
#: A measured quantity: a number with a unit of time, size, speed ratio or a percentage.
MEASURED = re.compile(r"(?<![\w.])\d[\d,]*(\.\d+)?\s?(x\b|×|s\b|ms\b|min\b|h\b|GB\b|MB\b|GiB\b|%|CPU-hours|GPU-hours)")


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = re.search(r"\n## ", text[start + len(heading):])
    return text[start:start + len(heading) + (nxt.start() if nxt else len(text))]


def test_readme_blocks_equal_the_committed_results():
    """`python -m eosflow results --check`: every generated block equals its rendering from
    docs/results/ and benchmarks/results/."""
    text = README.read_text()
    names = set(re.findall(r"<!-- results:([a-z_-]+) -->", text))
    assert {"status", "claims", "calibration", "power", "speed"} <= names <= set(BLOCKS)
    assert check_readme(README, ROOT) == []


@pytest.mark.parametrize("heading", ["## Speed", "### What the default scale shows", "## Figures"])
def test_measured_numbers_appear_only_in_generated_blocks(heading):
    """Speed figures, wall times and claim values in these sections come from committed files: outside
    the generated blocks the prose carries none."""
    prose = _BLOCK.sub("", _section(README.read_text(), heading))
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)  # commands and code examples
    found = [m.group(0) for m in MEASURED.finditer(prose)]
    assert not found, f"numbers with units outside generated blocks in {heading!r}: {found}"


def test_the_snapshot_names_its_build(tmp_path):
    figs = tmp_path / "figures"
    (figs / "ext").mkdir(parents=True)
    write_claims([claim("fig5.gain", [0.1, 0.2, 0.3, 0.1, 0.2, 0.3], fmt={"setting": "s"})], figs / "fig5.claims.json",
                 "fig5")
    write_claims([claim("eos.lower", [1.0, 1.1, 0.9])], figs / "ext" / "eos.claims.json", "ext/eos")
    (tmp_path / "results" / "benchmarks" / "train").mkdir(parents=True)
    (tmp_path / "results" / "benchmarks" / "train" / "a.tsv").write_text("s\th:m:s\n12.5\t0:00:12\n")
    (tmp_path / "results" / "benchmarks" / "train" / "sweep").mkdir()
    (tmp_path / "results" / "benchmarks" / "train" / "sweep" / "lrx2_seed0.tsv").write_text("s\th:m:s\n30.25\t0:00:30\n")
    (tmp_path / "results" / "benchmarks" / "hessian").mkdir()
    (tmp_path / "results" / "benchmarks" / "hessian" / "b.tsv").write_text("s\th:m:s\n2.5\t0:00:02\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("a: 1\n")
    s = snapshot(figs, tmp_path / "default.json", wall_time_s=5400.0, command="snakemake --cores 2", config=cfg,
                 results=tmp_path / "results", start_s=2.0)
    saved = json.loads((tmp_path / "default.json").read_text())
    assert saved == json.loads(json.dumps(s))
    assert set(saved["figures"]) == {"fig5", "ext/eos"} and saved["build"]["wall_time_s"] == 5400.0
    assert saved["job_seconds_by_rule"] == {"train": 42.8, "hessian": 2.5} and saved["machine"]["cores"] >= 1
    assert saved["jobs_by_rule"]["train"] == {"jobs": 2, "seconds": 42.8, "longest_s": 30.25,
                                              "longest": "train/sweep/lrx2_seed0", "shortest_s": 12.5}
    assert saved["job_start_s"] == 2.0
    # the README's line on where the time went: each rule's jobs and longest job, and the start-up
    where = _where_time_goes(saved)
    assert "train 0.7 (2 jobs, the longest 30 s: `train/sweep/lrx2_seed0`); hessian 0.0 (1 job," in where
    assert "3 jobs spend about 0.1 job-minutes starting, 13 % of the 0.8 job-minutes" in where
    assert saved["figures"]["fig5"]["claims"][0]["verdict"] == "holds"
    assert saved["figures"]["ext/eos"]["claims"][0]["needed"] == 12
    assert saved["registry"]["hash"] and len(saved["config_sha256"]) == 64


def test_a_jobs_start_up_is_measured_by_importing_what_a_job_imports():
    from eosflow.results import JOB_IMPORTS, job_start_seconds

    assert "eosflow.jobs.train" in JOB_IMPORTS and "snakemake.script" in JOB_IMPORTS
    assert 0 < job_start_seconds(reps=1) < 60  # the imports succeed (a broken one raises)


def test_the_committed_snapshot_is_a_full_default_build():
    """docs/results/default.json: every figure of rule all, claims that follow the schema's claim rows,
    a wall time within the issue's budget, and the registry it was decided under."""
    s = json.loads((ROOT / SNAPSHOT).read_text())
    expected = {"fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig12", "ext/eos",
                "ext/instability_ablation", "ext/generalization_map", "ext/sgd_flattening", "ext/clipped_ada",
                "ext/mse_flattening", "ext/spectrum", "ext/layers"}
    assert set(s["figures"]) == expected
    assert 0 < s["build"]["wall_time_s"] <= 100 * 60 and s["commit"] and not s["dirty"]
    schema = load_schema(name="claims")["properties"]["claims"]["items"]["properties"]
    for fig in s["figures"].values():
        for c in fig["claims"]:
            jsonschema.validate(c["verdict"], schema["verdict"])
            assert c["verdict"] != "undetermined" or c["needed"] is not None or c["needed_note"]


def test_rendering_replaces_only_the_blocks():
    text = "before\n<!-- results:paper-scale -->\nstale\n<!-- /results:paper-scale -->\nafter\n"
    out = render_readme(text, ROOT)
    assert out.startswith("before\n<!-- results:paper-scale -->\n") and out.endswith("<!-- /results:paper-scale -->\nafter\n")
    assert "stale" not in out and "CPU-hours" in out
    with pytest.raises(ValueError, match="unknown README block"):
        render_readme("<!-- results:nope -->\n<!-- /results:nope -->\n", ROOT)


def test_the_clamp_floor_is_the_shared_pass_plus_the_solves_products(tmp_path):
    """A clamped step costs its pass (gradient shared with the solve) plus p products: with a pass at
    1.1 and a product at 1.3 gradients, 3 products a solve make 5.0, and 3x a plain step allows
    (3 − 1.1) / 1.3 = 1.46 products (1.5 to two digits); a row without its hvp-choice costs is left out."""
    clamp = lambda p, r: {"n_matvec_per_measurement": {"mean": p}, "ratio_clamped_vs_plain": r}  # noqa: E731
    bench = {"workloads": {"mlp": {"clamp": clamp(3.0, 5.2)}, "vgg": {"clamp": clamp(11.0, 18.0)}}}
    costs = lambda g, r: {"products": {"grad_rop": {"x_grad": g}, "rop": {"x_grad": r}}}  # noqa: E731
    choice = {"n_images": 10, "torch_threads": 2, "workloads": {"mlp_199k": costs(1.1, 1.3)}}
    for path, d in ((BENCH, bench), (HVP_CHOICE, choice)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(d))
    rows = [line for line in render_clamp_floor(tmp_path).splitlines() if line.startswith("| 5_")]
    assert rows == ["| 5_mlp_clamp | 3 | 1.3 | 1.1 | 5 | 5.2 | 1.5 |"]


def test_the_readme_example_of_decide():
    """The README's example call, with the values it prints."""
    d = decide([0.012, 0.020, -0.003, 0.015, 0.031, 0.008], ">", 0, kind="paired")
    assert (d.verdict, d.interval, d.p_holds) == ("undetermined", (-0.003, 0.031), 0.03125)
    assert "d = decide([0.012, 0.020, -0.003, 0.015, 0.031, 0.008], \">\", 0, kind=\"paired\")" in README.read_text()


def test_robustness_rows_accept_only_changes_that_more_seeds_would_settle():
    def snap(verdict, needed, seeds=3):
        return {"figures": {"fig4": {"claims": [{"id": "x.y", "name": "n", "verdict": verdict, "needed": needed,
                                                 "evidence": {"seeds": seeds}}]}}}
    from eosflow.results import verdict_changes
    assert verdict_changes(snap("holds", None), snap("holds", None))[0]["acceptable"]
    assert not verdict_changes(snap("holds", None), snap("fails", None))[0]["acceptable"]
    assert verdict_changes(snap("holds", None), snap("undetermined", 6))[0]["acceptable"]  # 6 > 3 seeds had
    assert not verdict_changes(snap("holds", None), snap("undetermined", 3))[0]["acceptable"]
    assert verdict_changes(snap("holds", None), {"figures": {}})[0]["b"] == "missing"
