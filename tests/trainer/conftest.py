"""Fixtures for the trainer tests: one small prepared corpus per session, and a way to run the
harness on a candidate train.py (tiny profile, CPU, the real sandbox)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TRAINER_DIR = Path(__file__).resolve().parents[2] / "trainer-image"
sys.path.insert(0, str(TRAINER_DIR))

import harness  # noqa: E402
import prepare  # noqa: E402

CORPUS = Path(
    os.environ.get(
        "AUTORESEARCH_CORPUS", TRAINER_DIR.parents[1] / "shared" / "data" / "tinyshakespeare.txt"
    )
)
VOCAB_SIZE = 512  # small: the tokenizer trains in about a second
# Placed last, so that the val split holds characters that a 512-token vocab splits mid-UTF-8.
UNICODE_TAIL = "Ça ira, naïve café — Ελληνικά, 你好，世界！ Emoji: 🙂🎭 ½ ∑ ≠ ∞\n" * 40


@pytest.fixture(scope="session")
def unicode_tail() -> str:
    return UNICODE_TAIL


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shared cores: one BLAS thread per process is faster than two fighting."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    if not CORPUS.is_file():
        pytest.skip(f"corpus {CORPUS} not found (set AUTORESEARCH_CORPUS)")
    tail = tmp_path_factory.mktemp("sources") / "unicode.txt"
    tail.write_text(UNICODE_TAIL, encoding="utf-8")
    return [str(CORPUS), str(tail)]


@pytest.fixture(scope="session")
def data_dir(sources: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data")
    prepare.prepare(sources, str(path), vocab_size=VOCAB_SIZE)
    return path


@pytest.fixture
def run_train_py(data_dir: Path, tmp_path: Path):
    """Run the harness on train.py source text: `result, output_dir = run_train_py(text, ...)`."""

    def run(source: str, time_budget: float = 3.0, startup_seconds: float = 5.0, sandbox: str = "auto",
            seed: int = 0, test_if_val_below: float | None = None):  # fmt: skip
        train_py = tmp_path / "candidate_train.py"
        train_py.write_text(source)
        output_dir = tmp_path / "out"
        result = harness.run_harness(
            str(train_py),
            str(data_dir),
            str(output_dir),
            time_budget=time_budget,
            startup_seconds=startup_seconds,
            profile="tiny",
            seed=seed,
            test_if_val_below=test_if_val_below,
            sandbox=sandbox,
            device="cpu",
        )
        return result, output_dir

    return run


@pytest.fixture(scope="session")
def baseline_train_py() -> str:
    return (TRAINER_DIR / "train.py").read_text()
