"""The package's layering: figure and summary code load without torch, the runtime never imports the
benchmark, the workflow's schemas are the package's, and the training, spectral, jobs, config and
benchmark code keep their functions short."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_envs import LIGHT_MODULES

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "eosflow"
RUNTIME = ["eosflow.jobs.train", "eosflow.jobs.branches", "eosflow.jobs.hessian", "eosflow.jobs.slices",
           "eosflow.jobs.optimizers", "eosflow.jobs.run", "eosflow.spectral", "eosflow.training", "eosflow.data",
           "eosflow.dln", "eosflow.device", "eosflow.heap", "eosflow.__main__"] + LIGHT_MODULES


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


@pytest.mark.parametrize("package", ["training", "spectral", "jobs", "config", "bench"])
def test_functions_stay_short(package):
    """No function of the training loop, the eigensolvers, the jobs, the config or the benchmark runs
    over 80 lines (docstrings included)."""
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


def _imports() -> dict[str, set[str]]:
    """Module → the package's modules it imports (anywhere in it: lazy imports count too)."""
    modules = {".".join(("eosflow", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            out |= {t for t in targets if t in modules and t != name}
        graph[name] = out
    return graph


def test_no_import_circles():
    """No module reaches itself through the package's imports (a package's face excepted: it only
    hands its modules' names on)."""
    graph = _imports()
    faces = {m for m in graph if (SRC / m.removeprefix("eosflow").replace(".", "/").lstrip("/") / "__init__.py").exists()}
    circles = []
    for start in graph:
        seen, todo = set(), [(start, (start,))]
        while todo:
            node, path = todo.pop()
            for nxt in graph[node] - faces:
                if nxt == start:
                    circles.append(" -> ".join(path + (start,)))
                elif nxt not in seen:
                    seen.add(nxt)
                    todo.append((nxt, path + (nxt,)))
    assert not circles, circles[:5]
