"""Entry point for `python -m runtime` (the logic lives in cli.py)."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
