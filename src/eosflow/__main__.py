"""Command line: ``python -m eosflow check-config [FILE ...]`` and ``python -m eosflow bench [...]``.

Validates ``config/config.yaml`` merged with the given files (as ``snakemake --configfile``
merges them) and prints the first problems with the file, line and key, or ``ok``. Snakemake's
own message for malformed YAML does not name the file; this does.

``bench`` times the Hessian eigen-solvers against scipy and hessian-eigenthings (see
:mod:`eosflow.bench`; ``--quick`` for a tiny run, ``--memory`` for the 50,000-image memory check).
"""

from __future__ import annotations

import argparse
import sys
from .config import ConfigError, read_yaml, validate_config


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_config(files: list[str], default: str = "config/config.yaml") -> dict:
    """Merge ``default`` and ``files`` key by key and validate; raises ConfigError naming the file."""
    cfg: dict = {}
    for f in [default, *files]:
        cfg = _merge(cfg, read_yaml(f))
    return validate_config(cfg)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eosflow")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-config", help="validate config/config.yaml merged with FILEs")
    c.add_argument("files", nargs="*")
    c.add_argument("--default", default="config/config.yaml")
    b = sub.add_parser("bench", help="benchmark the Hessian eigen-solvers (writes results/bench/)")
    from .bench import add_arguments, run_args

    add_arguments(b)
    args = p.parse_args(argv)
    if args.cmd == "bench":
        return run_args(args)
    try:
        check_config(args.files, args.default)
    except ConfigError as e:
        print(f"eosflow: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
