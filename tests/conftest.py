import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op torch thread is many times faster than two on a busy 2-core
    machine. Restores the previous setting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class _Marker:
    """Unpickling this calls ``os.system("touch <path>")``: a stand-in for any code in a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture
def code_marker(tmp_path):
    """``(obj, path)``: an object whose unpickling would create ``path``; no read may create it."""
    path = tmp_path / "marker"
    return _Marker(path), path


def pytest_collection_modifyitems(config, items):
    """The full calibration (marker ``calibration``, 20,000 trials a cell) runs only when asked for with
    ``-m calibration``; the default run has its fast version."""
    if "calibration" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="the full calibration runs with -m calibration")
    for item in items:
        if "calibration" in item.keywords:
            item.add_marker(skip)
