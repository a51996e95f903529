"""The real train.py under the harness: it trains on the CPU at tiny scale and gets a sane val_bpb,
and the edits a careless or cheating agent could make are caught."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness
from autoresearch_operator.core.records import TrainResult

TRAINER_DIR = Path(__file__).resolve().parents[2] / "trainer-image"

# The knobs an offline proposer perturbs by regex, each a plain literal on its own line.
KNOB_LINE = re.compile(r"^([A-Z][A-Z0-9_]*) = (-?[0-9][0-9_.e+-]*)\s+#", re.MULTILINE)
KNOBS = ["DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "MATRIX_LR",
         "EMBEDDING_LR", "UNEMBEDDING_LR", "WEIGHT_DECAY", "WARMUP_RATIO", "WARMDOWN_RATIO"]  # fmt: skip


def edited(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, f"train.py should contain {old!r} exactly once"
    return source.replace(old, new)


def test_every_knob_is_one_literal_line_a_proposer_can_perturb(baseline_train_py: str) -> None:
    found = [name for name, _ in KNOB_LINE.findall(baseline_train_py)]
    for knob in KNOBS:
        assert found.count(knob) == 1, knob
    assert len(found) == len(set(found))


@pytest.mark.slow
def test_baseline_trains_on_cpu_and_the_harness_reports_a_sane_val_bpb(
    data_dir: Path, tmp_path: Path
) -> None:
    output_dir = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(TRAINER_DIR / "harness.py"), "--train-py", str(TRAINER_DIR / "train.py"),
         "--data-dir", str(data_dir), "--output-dir", str(output_dir), "--profile", "tiny",
         "--time-budget", "5", "--startup-seconds", "5", "--device", "cpu", "--seed", "7",
         "--test-if-val-below", "inf"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((output_dir / "result.json").read_text())
    assert result["status"] == "ok", result
    assert set(result) == {f.name for f in dataclasses.fields(TrainResult)}
    # ln(512) nats per token at random init is ~4.5 bits per byte on this corpus; training must beat it
    assert 1.0 < result["val_bpb"] < 4.0 and 1.0 < result["test_bpb"] < 4.5
    # the baseline trains until the harness's deadline: its window, measured by the harness
    assert 10 <= result["training_seconds"] < 10 + harness.EXPORT_SECONDS["tiny"]
    assert result["num_steps"] > 10 and "num_steps" in result["claimed"]
    assert result["num_params_M"] > 0.1 and result["mfu_percent"] is None  # no MFU on a CPU
    assert result["seed"] == 7 and "seed 7" in proc.stdout

    summary = proc.stdout.split("\n---\n")[-1].splitlines()
    values = dict(line.split(":", 1) for line in summary)
    assert list(values)[:10] == ["val_bpb", "test_bpb", "training_seconds", "total_seconds",
                                 "peak_vram_mb", "mfu_percent", "total_tokens_M",
                                 "tokens_per_second", "num_steps", "num_params_M"]  # fmt: skip
    assert float(values["val_bpb"]) == pytest.approx(result["val_bpb"], abs=1e-6)
    assert re.search(r"^step \d{5} \| loss \d+\.\d{4} \| lr ", proc.stdout, re.MULTILINE)
    assert (output_dir / "verdict" / "model.json").is_file() and (
        output_dir / "train.log"
    ).is_file()


@pytest.mark.slow
def test_attention_that_sees_the_future_is_rejected(run_train_py, baseline_train_py: str) -> None:
    result, _ = run_train_py(edited(baseline_train_py, "is_causal=True", "is_causal=False"))
    assert (result["status"], result["reason"]) == ("crash", "rejected-by-harness"), result[
        "detail"
    ]
    assert "sees the future" in result["detail"]
    assert result["val_bpb"] is None


@pytest.mark.slow
def test_a_nan_loss_fails_fast_with_reason_nan(run_train_py, baseline_train_py: str) -> None:
    nan_loss = edited(
        baseline_train_py, "loss = train_model(x, y)", "loss = train_model(x, y) * float('nan')"
    )
    result, _ = run_train_py(nan_loss, time_budget=30)
    assert (result["status"], result["reason"]) == ("crash", "nan"), result["detail"]
    assert "FAIL: loss diverged" in result["log_tail"]
    assert result["total_seconds"] < 60  # at the first step, not after the 30 s budget


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_full_profile_on_a_gpu_reports_mfu_and_memory(data_dir: Path, tmp_path: Path) -> None:
    result = harness.run_harness(str(TRAINER_DIR / "train.py"), str(data_dir), str(tmp_path / "out"),
                                 time_budget=60, profile="full", device="cuda")  # fmt: skip
    assert result["status"] == "ok", result["detail"]
    assert math.isfinite(result["val_bpb"])
    assert result["peak_vram_mb"] > 0 and result["mfu_percent"] > 1
