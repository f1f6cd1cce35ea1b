"""eosflow: full-batch gradient descent, Hessian spectra through instabilities, and the figures
of Wang & Roberts (arXiv 2412.17613)."""

__version__ = "0.1.0"

#: Names importable from ``eosflow`` itself, loaded on first use (``import eosflow`` stays torch-free).
_LAZY = {"SharpnessMonitor": "eosflow.monitor", "StabilityClamp": "eosflow.monitor",
         "preconditioned_sharpness": "eosflow.monitor"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'eosflow' has no attribute {name!r}")
