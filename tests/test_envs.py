"""envs/*.yaml name the same packages, with the same bounds, as pyproject.toml; the light plotting
env has no torch, and its rules import only modules that load without it (tests/test_layout.py)."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAMES = {"torch": "pytorch", "netcdf4": "netcdf4", "snakemake": "snakemake-minimal"}
# what the rules on envs/plot.yaml may import from the package (all load without torch: test_layout)
LIGHT_MODULES = ["eosflow.figures.fig1", "eosflow.figures.fig2", "eosflow.figures.fig3", "eosflow.figures.fig4",
                 "eosflow.figures.fig5", "eosflow.figures.eos", "eosflow.plans", "eosflow.summary", "eosflow.cubes",
                 "eosflow.files", "eosflow.logs", "eosflow.config", "eosflow.similarity", "eosflow.instability",
                 "eosflow.claims", "eosflow.config.optimizers", "eosflow.figures.sgd_flattening",
                 "eosflow.figures.clipped_ada", "eosflow.stability", "eosflow.figures.ablation",
                 "eosflow.figures.generalization_map", "eosflow.figures.sweep_stats", "eosflow.figures.fig7",
                 "eosflow.figures.fig8", "eosflow.figures.fig9", "eosflow.config.flattening",
                 "eosflow.figures.flattening", "eosflow.config.tags", "eosflow.jobs.spec",
                 "eosflow.figures.spectrum", "eosflow.figures.layers"]


def _split(req: str):
    m = re.match(r"([A-Za-z0-9_.\-\[\]]+)\s*(.*)", req)
    name = re.sub(r"\[.*\]", "", m.group(1)).lower()
    return name, m.group(2).replace(" ", "")


def _env(name):
    listed = yaml.safe_load((ROOT / "envs" / name).read_text())["dependencies"]
    return dict(_split(d) for d in listed if isinstance(d, str) and not d.startswith("python"))


def _expected():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {CONDA_NAMES.get(n, n): spec for n, spec in map(_split, deps)}


def test_compute_env_agrees_with_pyproject():
    got, expected = _env("eosflow.yaml"), _expected()
    assert got == expected, f"eosflow.yaml disagrees with pyproject.toml: {set(got.items()) ^ set(expected.items())}"


def test_plot_env_is_a_torch_free_part_of_pyproject():
    got, expected = _env("plot.yaml"), _expected()
    assert "pytorch" not in got and "torchvision" not in got
    assert got.items() <= expected.items(), set(got.items()) - set(expected.items())
    assert sorted(p.name for p in (ROOT / "envs").glob("*.yaml")) == ["eosflow.yaml", "plot.yaml"]


def test_rules_on_the_plot_env_use_it_only_for_light_scripts():
    """Every rule on plot.yaml runs a script whose eosflow imports are among LIGHT_MODULES."""
    for smk in (ROOT / "workflow/rules").glob("*.smk"):
        for rule in re.split(r"\n(?=[ \t]*(?:rule|checkpoint)[ :])", smk.read_text()):
            if "envs/plot.yaml" not in rule or "script:" not in rule:
                continue
            script = ROOT / "workflow" / re.search(r'script:\s*"\.\./([^"]+)"', rule).group(1)
            mods = re.findall(r"^from (eosflow[\w.]*) import", script.read_text(), flags=re.M)
            assert mods and set(mods) <= set(LIGHT_MODULES), (script.name, mods)
