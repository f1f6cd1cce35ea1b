"""envs/*.yaml name the same packages, with the same bounds, as pyproject.toml."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# PyPI name -> conda-forge name where they differ
CONDA_NAMES = {"torch": "pytorch", "netcdf4": "netcdf4", "snakemake": "snakemake-minimal"}


def _split(req: str):
    m = re.match(r"([A-Za-z0-9_.\-\[\]]+)\s*(.*)", req)
    name = re.sub(r"\[.*\]", "", m.group(1)).lower()
    return name, m.group(2).replace(" ", "")


def test_envs_agree_with_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {CONDA_NAMES.get(n, n): spec for n, spec in map(_split, deps)}
    envs = sorted((ROOT / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        listed = yaml.safe_load(env.read_text())["dependencies"]
        got = dict(_split(d) for d in listed if isinstance(d, str) and not d.startswith("python"))
        assert got == expected, f"{env.name} disagrees with pyproject.toml: {set(got.items()) ^ set(expected.items())}"
