"""Shared test set-up: `tests/` is importable, so test support code lives in tests/support/."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
