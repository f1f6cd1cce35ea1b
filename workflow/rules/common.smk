# Configuration validation, the shared constants and the global wildcard constraints (the input
# functions are in inputs.smk). Parsing the workflow imports no torch (tests/test_workflow.py).
import os
import sys
from pathlib import Path

_SRC = str(Path(workflow.basedir) / "src")
# Use this checkout's package, here and in every job (scripts, conda envs and cluster jobs inherit
# PYTHONPATH). Only prepended to: nothing is required of the user's environment.
sys.path.insert(0, _SRC)
_env = os.environ
_env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC, _env.get("PYTHONPATH", "")) if p)

from snakemake.exceptions import WorkflowError  # noqa: E402
from eosflow.config import ConfigError, EXPERIMENTS, load_schema, validate_config  # noqa: E402
from eosflow.config.datasets import DATASET_TAG_PATTERN  # noqa: E402
from eosflow.config.optimizers import OPT_FIGURES  # noqa: E402
from eosflow.config.tags import WILDCARDS  # noqa: E402
from eosflow.heap import HEAP_ENV  # noqa: E402

# glibc heap settings under which jobs reuse freed tensor memory (eosflow.heap.HEAP_ENV: the
# Hessian jobs of convolutional nets run up to 1.7x faster); a user's own values win
for _k, _v in HEAP_ENV.items():
    _env.setdefault(_k, _v)

try:
    _validated = validate_config(config, load_schema())  # the schema the package ships
except ConfigError as _err:
    raise WorkflowError(f"eosflow: {_err}\nFix the key in config/config.yaml (or your --configfile).") from None
config.clear()
config.update(_validated)


def _deep_check(cfg):
    """A user's network, loss and data checked with torch before any job: in a subprocess, as
    parsing imports no torch (python -m eosflow check-config --deep; eosflow.jobs.check)."""
    import subprocess
    import tempfile

    import yaml

    from eosflow.config.usercode import needs_deep_check

    if not needs_deep_check(cfg):
        return
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)  # YAML floats (1.0e-08), which the YAML reader takes back as numbers
    try:
        r = subprocess.run([sys.executable, "-m", "eosflow", "check-config", "--deep", "--default", f.name],
                           capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if r.returncode == 0:
        return
    if "No module named 'torch'" in r.stderr:
        print("eosflow: torch is not importable here; the user settings are checked by their first job", file=sys.stderr)
        return
    raise WorkflowError((r.stderr.strip() or r.stdout.strip()) + "\nFix the key in config/config.yaml (or your --configfile).")


_deep_check(config)

IMPLEMENTED = ["fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8", "fig9", "fig12", "ext/eos",
               "ext/mse_flattening", "ext/instability_ablation", "ext/generalization_map"]
IMPLEMENTED += [f"ext/{f}" for f in OPT_FIGURES]
IMPLEMENTED += ["ext/layers"]
IMPLEMENTED += ["ext/spectrum"]
# The paper's figures that no public text describes: never produced (they fail with a message).
UNDESCRIBED = ["fig10", "fig11", "fig13"]
# One directory per run: {exp} is its group (sweep: fig5's grid under the top-level train/hessian
# blocks; fig2, fig4, eos: those figures' runs under their own overrides).
RUNS = "results/runs/{exp}/{setting}/{sched}/lr{lr}/seed{seed}"
# One directory per optimizer run: {optfig} is the figure block whose train/hessian overrides apply,
# {opt} the optimizer's path name (eosflow.config.tags.opt_tag).
OPT_RUNS = "results/runs/{optfig}/{setting}/{opt}/lr{lr}/seed{seed}"


wildcard_constraints:
    exp="|".join(EXPERIMENTS),
    optfig="|".join(OPT_FIGURES),
    dataset=DATASET_TAG_PATTERN,
    **WILDCARDS,
