"""Command line: ``python -m eosflow check-config [FILE ...]``, ``python -m eosflow bench [...]`` and
``python -m eosflow results [...]``.

``check-config`` validates ``config/config.yaml`` (when the current folder has one, as in a
checkout of the workflow; ``--default`` names another) merged with the given files, as
``snakemake --configfile`` merges them, and prints the first problems with the file, line and
key, or ``ok``; ``--deep`` also builds each user setting's network and runs it with its loss on
its dataset's shapes (:mod:`eosflow.jobs.check`). Snakemake's own message for malformed YAML does not name the file; this does.

``bench`` times the Hessian eigen-solvers against scipy and hessian-eigenthings (see
:mod:`eosflow.bench`, imported only by this command; ``--quick`` for a tiny run, ``--memory``
for the 50,000-image memory check).

``results`` regenerates the README's tables from the committed results (:mod:`eosflow.results`:
``snapshot`` and ``calibration`` write them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, read_yaml, validate_config

DEFAULT_CONFIG = "config/config.yaml"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def check_config(files: list[str], default: str | None = DEFAULT_CONFIG) -> dict:
    """Merge ``default`` and ``files`` key by key and validate; raises ConfigError naming the file.
    ``default=None``: the files alone (the schema fills in the defaults)."""
    cfg: dict = {}
    for f in ([default] if default else []) + list(files):
        cfg = _merge(cfg, read_yaml(f))
    return validate_config(cfg)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["results"]:  # the README's tables from the committed results
        from .results import main as results_main

        return results_main(argv[1:])
    if argv[:1] == ["bench"]:  # the benchmark and its heavy imports only when asked for
        from .bench.cli import main as bench_main

        return bench_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m eosflow")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check-config", help="validate config/config.yaml merged with FILEs")
    c.add_argument("files", nargs="*")
    c.add_argument("--deep", action="store_true",
                   help="also build each user setting's network and run it with its loss on its data's shapes (torch)")
    c.add_argument("--default", default=None,
                   help=f"the base config (default: {DEFAULT_CONFIG} when it exists here, else none)")
    sub.add_parser("bench", help="benchmark the Hessian eigen-solvers (python -m eosflow bench --help)")
    sub.add_parser("results", help="regenerate the README's tables from docs/results/ and benchmarks/results/ "
                                   "(python -m eosflow results --help)")
    args = p.parse_args(argv)
    default = args.default or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    try:
        cfg = check_config(args.files, default)
    except ConfigError as e:
        print(f"eosflow: {e}", file=sys.stderr)
        return 1
    if args.deep:
        from .jobs.check import check_settings

        problems = check_settings(cfg)
        if problems:
            print("eosflow: invalid configuration:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
