"""A small prepared corpus shared by the end-to-end tests of the local loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(
    os.environ.get("AUTORESEARCH_CORPUS", ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
)
VOCAB_SIZE = 512


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_file():
        pytest.fail(f"corpus {CORPUS} not found: shared/data must sit beside the checkout")
    return CORPUS


@pytest.fixture(scope="session")
def prepared_workdir(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir whose data/ is prepared once; tests copy the path, not the data."""
    workdir = tmp_path_factory.mktemp("workdir")
    subprocess.run(
        [sys.executable, str(ROOT / "trainer-image" / "prepare.py"), "--data-dir", str(workdir / "data"),
         "--source", str(corpus), "--vocab-size", str(VOCAB_SIZE)],
        check=True,
    )  # fmt: skip
    return workdir


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
