"""Command line: ``python -m eosflow check-config [FILE ...]``.

Validates ``config/config.yaml`` merged with the given files (as ``snakemake --configfile``
merges them) and prints the first problems with the file, line and key, or ``ok``. Snakemake's
own message for malformed YAML does not name the file; this does.
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
    args = p.parse_args(argv)
    try:
        check_config(args.files, args.default)
    except ConfigError as e:
        print(f"eosflow: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
