"""The harness' verdicts on candidates that cheat or break, without training a model: the window,
the sandbox, the result, and the two phases an experiment pod runs. (The metric and the causality
check are in test_evaluation.py; candidates that attack the harness in test_attacks.py.)"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness
import sandbox
from autoresearch_operator.core.records import TrainResult

TRAINER_DIR = Path(__file__).resolve().parents[2] / "trainer-image"


def test_a_printed_score_is_rejected(run_train_py) -> None:
    result, _ = run_train_py(
        "import time\n"
        "print('step 00001 | loss 2.0000', flush=True)\n"
        "print('val_bpb:          0.123456', flush=True)\n"
        "time.sleep(60)\n"
    )
    assert (result["status"], result["reason"]) == ("crash", "rejected-by-harness")
    assert "printed its own score" in result["detail"]
    assert result["val_bpb"] is None
    assert result["total_seconds"] < 30  # killed on the spot, not after the sleep


@pytest.mark.parametrize("line", ["val_bpb = 0.5", "  val_bpb:0.5", "val_bpb : 0.5"])
def test_every_spelling_of_a_score_line_counts(line: str) -> None:
    assert sandbox.SCORE_LINE.match(line)


def test_a_run_past_its_window_is_killed_as_a_timeout_and_charged(run_train_py) -> None:
    result, _ = run_train_py(
        "import time\nprint('training forever', flush=True)\nwhile True:\n    time.sleep(1)\n",
        time_budget=1,
        startup_seconds=1,
    )
    assert (result["status"], result["reason"]) == ("crash", "timeout")
    assert "training forever" in result["log_tail"]
    assert "end of its window" in result["detail"]
    window = 1 + 1 + harness.EXPORT_SECONDS["tiny"]
    # the harness's own clock: the whole window is charged, and nothing ran past it
    assert window <= result["training_seconds"] < window + 5
    assert result["total_seconds"] >= result["training_seconds"]
    assert (result["startup_seconds"], result["time_budget"]) == (1, 1)


def test_an_exception_is_reported_with_its_traceback(
    run_train_py, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    termination_log = tmp_path / "termination-log"
    monkeypatch.setenv("AUTORESEARCH_TERMINATION_LOG", str(termination_log))
    result, output_dir = run_train_py(
        "for step in range(300):\n"
        "    print(f'step {step:05d} | loss 3.0 | a long progress line ' + 'x' * 60)\n"
        "def build_model():\n"
        "    raise RuntimeError('shape mismatch in block 3')\n"
        "build_model()\n"
    )
    assert (result["status"], result["reason"]) == ("crash", "exception")
    assert "RuntimeError: shape mismatch in block 3" in result["detail"]
    assert "Traceback (most recent call last)" in result["log_tail"]
    assert result["log_tail"].rstrip().endswith("RuntimeError: shape mismatch in block 3")
    assert "step 00299" in (output_dir / "train.log").read_text()

    # result.json holds exactly TrainResult's fields; the termination message fits in 4 KiB
    assert set(result) == {f.name for f in dataclasses.fields(TrainResult)}
    assert json.loads((output_dir / "result.json").read_text()) == result
    message = termination_log.read_bytes()
    assert len(message) <= 4096
    short = TrainResult.from_json(json.loads(message))
    assert short.reason == "exception"
    assert short.log_tail.rstrip().endswith("RuntimeError: shape mismatch in block 3")


def test_exiting_without_a_model_is_an_exception(run_train_py) -> None:
    result, _ = run_train_py("print('trained, but forgot to export')\n")
    assert (result["status"], result["reason"]) == ("crash", "exception")
    assert "without exporting" in result["detail"]


def test_the_training_process_cannot_read_the_val_split(
    run_train_py, data_dir: Path, sources: list[str]
) -> None:
    secrets = [
        data_dir / "val" / "val.bin",
        data_dir / "val" / "token_bytes.npy",
        data_dir / "test" / "test.bin",
        *map(Path, sources),
    ]
    result, _ = run_train_py(
        "import os\n"
        f"train = {str(data_dir / 'train' / 'train.bin')!r}\n"
        "print('train split readable:', len(open(train, 'rb').read(16)) == 16, flush=True)\n"
        f"for path in {[str(p) for p in secrets]!r}:\n"
        "    try:\n"
        "        print('LEAKED', path, open(path, 'rb').read(64).hex(), flush=True)\n"
        "    except OSError as e:\n"
        "        print('blocked', path, type(e).__name__, flush=True)\n"
        "raise SystemExit(3)\n"
    )
    log = result["log_tail"]
    assert "train split readable: True" in log  # the sandbox ran it, with the train split
    assert "LEAKED" not in log
    for path in secrets:
        assert f"blocked {path}" in log
        assert path.read_bytes()[:64].hex() not in log
    assert (result["status"], result["reason"]) == ("crash", "exception")


def test_no_sandbox_is_an_error_that_names_both_options(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    with pytest.raises(sandbox.SandboxError, match="bubblewrap.*--sandbox container.*PID 1"):
        sandbox.resolve_sandbox("auto", str(data_dir))
    with pytest.raises(sandbox.SandboxError, match="bubblewrap"):
        sandbox.resolve_sandbox("bwrap", str(data_dir))
    with pytest.raises(sandbox.SandboxError, match="--sandbox container: .*not PID 1"):
        sandbox.resolve_sandbox("container", str(data_dir))


def test_the_old_unconfined_mode_is_gone(data_dir: Path, tmp_path: Path) -> None:
    refused = harness_cli("--train-py", str(TRAINER_DIR / "train.py"), "--data-dir", str(data_dir),
                          "--output-dir", str(tmp_path / "out"), "--sandbox", "none")  # fmt: skip
    assert refused.returncode == 2 and "invalid choice: 'none'" in refused.stderr


def test_termination_message_keeps_the_end_of_a_long_log() -> None:
    tail = "".join(f"line {i}: ünïcödé ✓\n" for i in range(2000))
    run = {"training_seconds": 1.0, "startup_seconds": 1.0, "time_budget": 1.0,
           "export_seconds": 1.0, "seed": 0, "log_tail": tail}  # fmt: skip
    result = harness.make_result(run, "crash", "exception", "boom")
    message = harness.fit_json(result)
    assert len(message.encode("utf-8")) <= 4096
    assert json.loads(message)["log_tail"].endswith("line 1999: ünïcödé ✓\n")


# ---------------------------------------------------------------------------
# The CLI: two phases, as an experiment pod runs them, and the harness' own failures
# ---------------------------------------------------------------------------

BIGRAM_TRAIN_PY = """
import torch
from prepare import get_vocab_size, save_model_for_eval, write_stats

class Bigram(torch.nn.Module):  # causal by construction, and untrained
    def __init__(self, vocab_size):
        super().__init__()
        self.table = torch.nn.Embedding(vocab_size, vocab_size)

    def forward(self, idx):
        return self.table(idx)

save_model_for_eval(Bigram(get_vocab_size()))
write_stats(training_seconds=0.5, num_steps=1, total_tokens=128, num_params=1, mfu_percent="high")
"""


def harness_cli(*args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(TRAINER_DIR / "harness.py"),
        "--profile",
        "tiny",
        "--device",
        "cpu",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # three processes that import torch: tens of seconds on a small machine
def test_train_phase_needs_no_val_split_and_evaluate_phase_judges_it(
    data_dir: Path, tmp_path: Path
) -> None:
    train_only = tmp_path / "train-only"
    shutil.copytree(data_dir / "train", train_only / "train")  # as the training container's mount
    (tmp_path / "train.py").write_text(BIGRAM_TRAIN_PY)
    out = tmp_path / "out"

    trained = harness_cli("--phase", "train", "--train-py", str(tmp_path / "train.py"),
                          "--data-dir", str(train_only), "--output-dir", str(out))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    verdict = out / "verdict"
    assert {p.name for p in verdict.iterdir()} == {
        "model.json",
        "model.safetensors",
        "stats.json",
        "run.json",
    }
    assert not (out / "result.json").exists()

    evaluated = harness_cli("--phase", "evaluate", "--data-dir", str(data_dir),
                            "--output-dir", str(out), "--test-if-val-below", "inf")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and math.isfinite(result["val_bpb"])
    vocab_size = json.loads((data_dir / "val" / "meta.json").read_text())["vocab_size"]
    assert result["num_params_M"] == vocab_size**2 / 1e6  # counted by the harness, not the stats
    assert math.isfinite(result["test_bpb"]) and result["test_bpb"] != result["val_bpb"]
    assert result["claimed"] == ["num_steps", "total_tokens_M"]  # its claims, marked; junk dropped
    assert result["mfu_percent"] is None
    assert "\n---\nval_bpb:" in evaluated.stdout
    assert "num_steps:        1  (claimed by train.py)" in evaluated.stdout


def test_the_harness_failing_itself_exits_non_zero_without_a_result(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BIGRAM_TRAIN_PY)
    failed = harness_cli("--train-py", str(tmp_path / "train.py"), "--data-dir", str(tmp_path / "missing"),
                         "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert failed.returncode == 2
    assert "run prepare.py" in failed.stderr
    assert not (tmp_path / "out" / "result.json").exists()
