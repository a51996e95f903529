"""benchmarks/gpu_check.py (`make gpu-check`): the same script that proves the GPU path on one
H200 runs here on the CPU with the tiny profile, so it cannot rot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

CORPUS = Path(os.environ.get("AUTORESEARCH_CORPUS", gpu_check.DEFAULT_CORPUS))
REPORT_FIELDS = [
    "status", "device_name", "torch_version", "peak_flops", "time_budget", "startup_allowance",
    "tokens_per_second", "mfu_percent", "peak_vram_mb", "claimed", "startup_seconds",
    "startup_seconds_source", "val_bpb", "test_bpb", "training_seconds", "total_seconds",
    "harness_wall_seconds", "duty_cycle", "targets", "meets_targets",
]  # fmt: skip


def test_a_corpus_missing_here_is_read_from_its_staged_copy(tmp_path: Path) -> None:
    corpus = tmp_path / "shared" / "corpus.txt"
    corpus.parent.mkdir()
    corpus.write_text("To be, or not to be\n")
    cache = tmp_path / "cache"

    staged = gpu_check.stage_corpus(str(corpus), cache)
    corpus.unlink()  # on the device machine: only the carried cache is there

    assert gpu_check.stage_corpus(str(corpus), cache) == staged
    assert Path(staged).read_text() == "To be, or not to be\n"
    with pytest.raises(SystemExit, match="--stage-only"):
        gpu_check.stage_corpus(str(tmp_path / "elsewhere.txt"), cache)


def test_startup_is_train_py_s_claim_else_the_observed_first_step_else_the_allowance(
    tmp_path: Path,
) -> None:
    streamed = [(0.5, "harness: training train.py"), (4.0, "step 00001 | loss 9.0"),
                (9.0, "step 00010 | loss 7.0")]  # fmt: skip
    log = "step 00001 | loss 9.0\nstep 00010 | loss 7.0\n"

    def startup(output_dir: Path, log: str, lines: list) -> tuple[float, str]:
        seconds, source = gpu_check.startup_seconds(output_dir, log, lines, 120.0)
        return seconds, source.split(":")[0]

    assert startup(tmp_path, log, streamed) == (3.5, "observed")
    assert startup(tmp_path, log + "first_step_seconds: 2.5\n", streamed) == (
        2.5,
        "train.py's claim",
    )
    (tmp_path / "verdict").mkdir()
    (tmp_path / "verdict" / "stats.json").write_text('{"first_step_seconds": 7.25}')
    assert startup(tmp_path, log, streamed) == (7.25, "train.py's claim")
    burst = [(30.0, line) for _, line in streamed]  # output not streamed live: timestamps void
    assert startup(tmp_path / "elsewhere", log, burst) == (120.0, "the allowance")


def test_targets_are_judged_only_for_the_full_profile_on_a_known_gpu() -> None:
    result = {"status": "ok", "mfu_percent": 41.0, "claimed": ["mfu_percent"]}
    h200 = {"device_name": "NVIDIA H200", "torch_version": "2.11.0", "peak_flops": 989e12}

    def report(profile: str, facts: dict, wall: float) -> dict:
        args = Namespace(profile=profile, device="cuda", time_budget=300.0)
        return gpu_check.build_report(args, result, facts, wall, 5.0, (30.0, "observed"), {})

    full = report("full", h200, 400.0)
    assert full["duty_cycle"] == 0.75
    assert full["meets_targets"] == {"mfu_percent": True, "duty_cycle": False}
    cpu = {"device_name": "x86_64 CPU", "torch_version": "2.11.0", "peak_flops": None}
    assert report("full", cpu, 310.0)["meets_targets"] == {"mfu_percent": None, "duty_cycle": None}
    assert report("tiny", h200, 310.0)["meets_targets"] == {"mfu_percent": None, "duty_cycle": None}


def run_gpu_check(
    tmp_path: Path, cache: Path, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    if not CORPUS.is_file():
        pytest.skip(f"corpus {CORPUS} not found (set AUTORESEARCH_CORPUS)")
    report = tmp_path / "gpu-check.json"
    command = [
        sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--corpus", str(CORPUS),
        "--data-cache", str(cache), "--report", str(report), "--profile", "tiny",
        "--time-budget", "3", "--device", "cpu", "--startup-seconds", "10", "--vocab-size", "512",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two shared cores: one BLAS thread is faster
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(report.read_text())


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu-check-cache")  # prepared once, shared by the runs


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_number_with_sane_values(tmp_path: Path, cache: Path) -> None:
    done, report = run_gpu_check(tmp_path, cache)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [field for field in REPORT_FIELDS if field not in report] == []
    assert report["status"] == "ok"
    assert math.isfinite(report["val_bpb"]) and report["val_bpb"] > 0
    assert math.isfinite(report["test_bpb"]) and report["test_bpb"] > 0  # asked with "inf"
    assert 0 < report["duty_cycle"] <= 1
    assert report["time_budget"] <= report["training_seconds"] <= report["harness_wall_seconds"]
    assert report["total_seconds"] <= report["harness_wall_seconds"]
    assert report["tokens_per_second"] > 0 and "tokens_per_second" in report["claimed"]
    assert report["startup_seconds"] > 0 and report["startup_seconds_source"]
    assert report["meets_targets"] == {"mfu_percent": None, "duty_cycle": None}  # tiny, CPU
    assert "duty cycle" in done.stdout and "val_bpb" in done.stdout  # the table was printed


@pytest.mark.slow
def test_a_crashed_run_exits_non_zero_and_reports_why(tmp_path: Path, cache: Path) -> None:
    crashing = tmp_path / "train.py"
    crashing.write_text("raise SystemExit('crashing on purpose')\n")

    done, report = run_gpu_check(tmp_path, cache, "--train-py", str(crashing))

    assert done.returncode == 1
    assert report["status"] == "crash" and report["reason"] == "exception"
    assert "crash" in done.stdout
