"""The harness' verdicts on candidates that cheat or break, without training a model, and its
evaluation code on models whose answers are known."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import harness
import sandbox
from autoresearch_operator.records import TrainResult

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


def test_a_run_past_budget_plus_grace_is_killed(run_train_py) -> None:
    result, _ = run_train_py(
        "import time\nprint('training forever', flush=True)\nwhile True:\n    time.sleep(1)\n",
        time_budget=1,
        grace=2,
    )
    assert (result["status"], result["reason"]) == ("crash", "timeout")
    assert "training forever" in result["log_tail"]
    assert result["total_seconds"] < 20


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
    assert "model.pt2" in result["detail"]


def test_the_training_process_cannot_read_the_val_split(
    run_train_py, data_dir: Path, sources: list[str]
) -> None:
    secrets = [
        data_dir / "val" / "val.bin",
        data_dir / "val" / "token_bytes.npy",
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


@pytest.mark.skipif(
    not sandbox.sandbox_user_can_run_python(),
    reason="needs root and a Python that 'nobody' can run",
)
def test_the_unprivileged_user_cannot_read_the_val_split(data_dir: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="harness-user-", dir="/tmp"))  # pytest's tmp is 0700
    try:
        shared.chmod(0o755)
        shutil.copytree(data_dir, shared / "data")
        for folder in (shared / "data", shared / "data" / "train"):
            folder.chmod(0o755)  # as a real DATA_DIR: readable by all but its val/ and raw/
        train_bin = shared / "data" / "train" / "train.bin"
        val_bin = shared / "data" / "val" / "val.bin"
        (shared / "train.py").write_text(
            f"print('train split readable:', len(open({str(train_bin)!r}, 'rb').read(16)) == 16)\n"
            f"print(open({str(val_bin)!r}, 'rb').read(64).hex())\n"
        )
        result = harness.run_harness(str(shared / "train.py"), str(shared / "data"), str(shared / "out"),
                                     time_budget=3, profile="tiny", sandbox="user", device="cpu")  # fmt: skip
        assert "train split readable: True" in result["log_tail"]
        assert val_bin.read_bytes()[:64].hex() not in result["log_tail"]
        assert "PermissionError" in result["log_tail"]
        assert result["reason"] == "exception"
    finally:
        shutil.rmtree(shared)


def test_no_sandbox_is_an_error_that_names_both_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    monkeypatch.setattr(sandbox, "sandbox_user_can_run_python", lambda: False)
    with pytest.raises(sandbox.SandboxError, match="bubblewrap.*'nobody'.*--sandbox none"):
        sandbox.resolve_sandbox("auto")
    with pytest.raises(sandbox.SandboxError, match="bubblewrap"):
        sandbox.resolve_sandbox("bwrap")
    assert sandbox.resolve_sandbox("none") == "none"


# ---------------------------------------------------------------------------
# The causality check and the metric, on toy models
# ---------------------------------------------------------------------------

VOCAB = 16


class ToyLM(nn.Module):
    """Logits at t from the tokens at <= t; `leak` adds what a cheat would see."""

    def __init__(self, leak: str = "none"):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, VOCAB)
        self.leak = leak

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        e = self.embed(idx)
        logits = e.cumsum(dim=1)
        if self.leak == "next-token":
            logits = logits + 0.1 * torch.roll(e, shifts=-1, dims=1)
        if self.leak == "batch":
            logits = logits + 0.1 * e.mean(dim=0, keepdim=True)
        return logits


def windows(batch: int = 4, seq_len: int = 32) -> torch.Tensor:
    return torch.randint(VOCAB, (batch, seq_len), generator=torch.Generator().manual_seed(1))


def test_an_exported_causal_model_passes(tmp_path: Path) -> None:
    program = torch.export.export(
        ToyLM(), (windows(),), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},)
    )
    torch.export.save(program, tmp_path / "model.pt2")
    model, num_params = harness.load_exported(str(tmp_path / "model.pt2"))
    assert num_params == VOCAB * VOCAB
    assert harness.check_causal(model, windows(), VOCAB) is None


def test_a_model_that_sees_the_next_token_is_caught() -> None:
    problem = harness.check_causal(ToyLM("next-token"), windows(), VOCAB)
    assert problem and "sees the future" in problem


def test_a_model_that_mixes_the_batch_is_caught() -> None:
    problem = harness.check_causal(ToyLM("batch"), windows(), VOCAB)
    assert problem and "other rows" in problem


def test_wrong_logit_shape_is_caught() -> None:
    problem = harness.check_causal(
        lambda idx: torch.zeros(idx.shape[0], idx.shape[1], VOCAB + 1), windows(), VOCAB
    )
    assert problem and "shape" in problem


def test_bpb_of_a_uniform_model_is_log2_vocab_per_byte() -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, size=1000).astype(np.uint16)
    token_bytes = rng.integers(1, 5, size=VOCAB)
    token_bytes[0] = 0  # a BOS-like token: scored in neither sum
    seq_len, batch_size = 16, 4

    bpb = harness.evaluate_bpb(
        lambda idx: torch.zeros(*idx.shape, VOCAB),
        tokens,
        token_bytes,
        seq_len,
        batch_size,
        max_tokens=10_000,
    )

    n_windows = (len(tokens) - 1) // seq_len // batch_size * batch_size
    targets = np.concatenate(
        [tokens[w * seq_len + 1 : w * seq_len + seq_len + 1] for w in range(n_windows)]
    )
    scored = int((token_bytes[targets] > 0).sum())
    expected = scored * math.log(VOCAB) / (math.log(2) * int(token_bytes[targets].sum()))
    assert bpb == pytest.approx(expected, rel=1e-6)  # fp32 cross-entropy


def test_bpb_scores_at_most_max_tokens() -> None:
    tokens = np.arange(10_000, dtype=np.uint16) % VOCAB
    calls = []

    def model(idx: torch.Tensor) -> torch.Tensor:
        calls.append(idx.numel())
        return torch.zeros(*idx.shape, VOCAB)

    harness.evaluate_bpb(model, tokens, np.ones(VOCAB, dtype=np.int64), 16, 4, max_tokens=640)
    assert sum(calls) == 640


def test_termination_message_keeps_the_end_of_a_long_log() -> None:
    tail = "".join(f"line {i}: ünïcödé ✓\n" for i in range(2000))
    result = harness.make_result("crash", "exception", "boom", log_tail=tail)
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
write_stats(training_seconds=0.5, num_steps=1, total_tokens=128, num_params=1)
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
    assert (out / "model.pt2").is_file() and (out / "run.json").is_file()
    assert not (out / "result.json").exists()

    evaluated = harness_cli(
        "--phase", "evaluate", "--data-dir", str(data_dir), "--output-dir", str(out)
    )
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "ok" and math.isfinite(result["val_bpb"])
    vocab_size = json.loads((data_dir / "val" / "meta.json").read_text())["vocab_size"]
    assert result["num_params_M"] == vocab_size**2 / 1e6  # counted by the harness, not the stats
    assert "\n---\nval_bpb:" in evaluated.stdout


def test_the_harness_failing_itself_exits_non_zero_without_a_result(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(BIGRAM_TRAIN_PY)
    failed = harness_cli("--train-py", str(tmp_path / "train.py"), "--data-dir", str(tmp_path / "missing"),
                         "--output-dir", str(tmp_path / "out"))  # fmt: skip
    assert failed.returncode == 2
    assert "run prepare.py" in failed.stderr
    assert not (tmp_path / "out" / "result.json").exists()
