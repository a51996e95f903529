"""The harness's command line is built in one place, and the operator's copy of the harness's
fixed allowances is the harness's own."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from autoresearch_operator.harness_cli import harness_args
from autoresearch_operator.spec import EVALUATION_SECONDS, EXPORT_SECONDS

TRAINER_DIR = Path(__file__).resolve().parents[2] / "trainer-image"


def args(**extra) -> list[str]:
    base = dict(data_dir="/d", output_dir="/o", profile="tiny", time_budget=15,
                startup_seconds=10, seed=3, sandbox="bwrap")  # fmt: skip
    return harness_args(**{**base, **extra})


def test_the_window_and_seed_are_passed_and_grace_is_gone():
    command = args(train_py="/c/train.py", device="cpu")
    assert command == [
        "--train-py", "/c/train.py", "--data-dir", "/d", "--output-dir", "/o",
        "--profile", "tiny", "--time-budget", "15", "--startup-seconds", "10", "--seed", "3",
        "--sandbox", "bwrap", "--device", "cpu",
    ]  # fmt: skip


def test_the_test_split_is_scored_only_when_asked_and_never_by_the_train_phase():
    assert "--test-if-val-below" not in args()
    assert args(test_if_val_below=math.inf)[-2:] == ["--test-if-val-below", "inf"]
    assert args(test_if_val_below=1.25)[-2:] == ["--test-if-val-below", "1.25"]
    assert "--test-if-val-below" not in args(phase="train", test_if_val_below=math.inf)
    assert args(phase="evaluate", test_if_val_below=0.5)[:2] == ["--phase", "evaluate"]


def test_the_operators_allowances_are_the_harnesses():
    sys.path.insert(0, str(TRAINER_DIR))
    try:
        import harness
    finally:
        sys.path.remove(str(TRAINER_DIR))
    assert harness.EXPORT_SECONDS == EXPORT_SECONDS
    assert harness.EVALUATION_SECONDS == EVALUATION_SECONDS
