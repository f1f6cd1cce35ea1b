"""``python -m eosflow.bench``: the benchmark's command line (``python -m eosflow bench`` calls it too)."""
import sys

from .cli import main

sys.exit(main())
