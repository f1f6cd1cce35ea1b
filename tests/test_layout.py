"""The package's layering: figure and summary code load without torch, the runtime never imports the
benchmark, the workflow's schemas are the package's, and the training and spectral code keep their
functions short."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_envs import LIGHT_MODULES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "eosflow"
RUNTIME = ["eosflow.pipeline", "eosflow.landscape", "eosflow.runs", "eosflow.spectral", "eosflow.training",
           "eosflow.data", "eosflow.dln", "eosflow.__main__"] + LIGHT_MODULES


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_light_modules_import_without_torch():
    assert _python(f"""
        import importlib, sys
        class NoTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is not in the plotting env")
        sys.meta_path.insert(0, NoTorch())
        for m in {LIGHT_MODULES!r}:
            importlib.import_module(m)
        print("torch" in sys.modules)
    """) == "False"


def test_runtime_does_not_import_the_benchmark():
    assert _python(f"""
        import importlib, sys
        for m in {RUNTIME!r}:
            importlib.import_module(m)
        print(sorted(m for m in sys.modules if m.startswith("eosflow.bench")))
    """) == "[]"


def test_workflow_schemas_are_the_packages():
    for name in ("config", "claims"):
        link = ROOT / "workflow/schemas" / f"{name}.schema.yaml"
        assert link.resolve() == (SRC / "schemas" / f"{name}.schema.yaml").resolve()


@pytest.mark.parametrize("package", ["training", "spectral"])
def test_functions_stay_short(package):
    """No function of the training loop or the eigensolvers runs over 80 lines (docstrings included)."""
    long = []
    for path in sorted((SRC / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long


def test_no_read_in_the_package_can_run_code():
    """Every torch.load passes weights_only=True, and nothing calls pickle.load/loads (CIFAR-10
    batches go through a restricted Unpickler)."""
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)):
                continue
            call = f"{node.func.value.id}.{node.func.attr}"
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if call == "torch.load" and not safe or call in ("pickle.load", "pickle.loads"):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno} {call}")
    assert not bad, bad
