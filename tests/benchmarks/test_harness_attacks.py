"""benchmarks/harness_attacks.py (`make bench`): honest runs next to attacking candidates, and a
non-zero exit when an attack gains anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import harness_attacks  # noqa: E402

CORPUS = Path(os.environ.get("AUTORESEARCH_CORPUS", harness_attacks.DEFAULT_CORPUS))


def attack_row(outcome: str, val_bpb: float | None, expected: str = "ok") -> dict:
    return {"outcome": outcome, "expected": expected, "val_bpb": val_bpb}


def test_an_attack_fails_the_bench_when_it_beats_the_best_honest_run_or_ends_otherwise() -> None:
    def judge(row: dict, marker_left: bool = False) -> list[str]:
        return harness_attacks.judge_attack(row, best_honest=3.0, tolerance=0.05,
                                            marker_left=marker_left)  # fmt: skip

    assert judge(attack_row("ok", 3.02)) == []
    assert judge(attack_row("ok", 2.97)) == []  # within the tolerance: noise
    assert "beats the best honest" in judge(attack_row("ok", 0.01))[0]
    assert judge(attack_row("timeout", None, expected="timeout")) == []
    assert "expected timeout" in judge(attack_row("ok", 3.1, expected="timeout"))[0]
    assert "outside its sandbox" in judge(attack_row("ok", 3.1), marker_left=True)[0]


@pytest.mark.slow
def test_the_bench_prints_honest_and_attacking_runs_side_by_side(tmp_path: Path) -> None:
    if not CORPUS.is_file():
        pytest.skip(f"corpus {CORPUS} not found (set AUTORESEARCH_CORPUS)")
    report = tmp_path / "report.json"
    command = [
        sys.executable, str(REPO / "benchmarks" / "harness_attacks.py"), "--corpus", str(CORPUS),
        "--data-cache", str(tmp_path / "data"), "--workdir", str(tmp_path / "runs"),
        "--report", str(report), "--attacks", "pickle-export", "--honest", "1",
        "--time-budget", "2", "--startup-seconds", "5",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {row["candidate"]: row for row in json.loads(report.read_text())["rows"]}
    assert rows["honest-seed0"]["outcome"] == "ok" and rows["honest-seed0"]["val_bpb"] > 1.0
    assert rows["honest-seed0"]["training_seconds"] >= 2  # the harness's clock, whole window
    assert rows["pickle-export"]["outcome"] == "rejected-by-harness"
    assert rows["pickle-export"]["ok"] and rows["pickle-export"]["val_bpb"] is None
    assert "pickle-export" in done.stdout and "✓" in done.stdout and "(claimed)" in done.stdout
