"""prepare.py: idempotent, exact byte counts, pinned val and held-out test splits, downloads that
retry, a data dir of the old layout rebuilt, and the GPU peak-FLOPs table that MFU is computed
against."""

from __future__ import annotations

import http.server
import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import prepare


def load_split(data_dir: Path, split: str) -> np.ndarray:
    return np.fromfile(data_dir / split / f"{split}.bin", dtype=np.uint16)


def test_second_prepare_does_no_work(data_dir: Path, sources: list[str]) -> None:
    files = sorted(p for p in data_dir.rglob("*") if p.is_file())
    before = {p: p.stat().st_mtime_ns for p in files}
    vocab_size = json.loads((data_dir / "train" / "meta.json").read_text())["vocab_size"]
    assert prepare.prepare(sources, str(data_dir), vocab_size=vocab_size) == []
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert sorted(p for p in data_dir.rglob("*") if p.is_file()) == files


def test_layout_keeps_val_and_test_out_of_the_train_folder(data_dir: Path) -> None:
    assert {p.name for p in (data_dir / "train").iterdir()} == {
        "tokenizer.json", "token_bytes.npy", "train.bin", "meta.json"
    }  # fmt: skip
    for split in ("val", "test"):
        assert {p.name for p in (data_dir / split).iterdir()} == {
            f"{split}.bin", "token_bytes.npy", "meta.json"
        }  # fmt: skip


@pytest.mark.parametrize("split", ["test", "val"])
def test_byte_counts_are_exact_even_for_tokens_that_split_a_character(
    data_dir: Path, unicode_tail: str, split: str
) -> None:
    tokenizer = Tokenizer.from_file(str(data_dir / "train" / "tokenizer.json"))
    token_bytes = np.load(data_dir / split / "token_bytes.npy")
    val = load_split(data_dir, split)
    val_text = tokenizer.decode(val.tolist(), skip_special_tokens=True)
    meta = json.loads((data_dir / split / "meta.json").read_text())
    if split == "val":  # the tail lies in the test split; val's count must be exact all the same
        assert int(token_bytes[val].sum()) == len(val_text.encode("utf-8")) == meta["num_bytes"]
        return

    assert unicode_tail in val_text
    assert int(token_bytes[val].sum()) == len(val_text.encode("utf-8")) == meta["num_bytes"]
    # The case the reference gets wrong: decoding a lone token of a multi-byte character gives
    # U+FFFD (3 bytes in UTF-8); the table must hold the token's real byte count.
    partial = [t for t in set(val.tolist()) if "\ufffd" in tokenizer.decode([t])]
    assert partial, "the test corpus should exercise tokens that end mid-character"
    assert any(token_bytes[t] != len(tokenizer.decode([t]).encode("utf-8")) for t in partial)
    assert token_bytes[tokenizer.token_to_id(prepare.BOS_TOKEN)] == 0


def test_val_and_test_are_pinned_tails_disjoint_from_train(
    data_dir: Path, sources: list[str]
) -> None:
    tokenizer = Tokenizer.from_file(str(data_dir / "train" / "tokenizer.json"))
    corpus = "".join(Path(s).read_text(encoding="utf-8") for s in sources)
    text = {
        split: tokenizer.decode(load_split(data_dir, split).tolist(), skip_special_tokens=True)
        for split in ("train", "val", "test")
    }
    assert text["train"] + text["val"] + text["test"] == corpus  # each character once, in order
    assert corpus.endswith(text["val"] + text["test"])
    assert 0.09 < len(text["val"]) / len(corpus) < 0.11
    assert 0.04 < len(text["test"]) / len(corpus) < 0.06
    assert text["train"].endswith("\n") and text["val"].endswith("\n")  # cuts at line starts


def test_a_data_dir_of_the_old_layout_is_rebuilt_with_a_test_split(
    sources: list[str], tmp_path: Path
) -> None:
    prepare.prepare(sources[1:], str(tmp_path), vocab_size=300)
    meta = tmp_path / "train" / "meta.json"
    old = json.loads(meta.read_text())
    del old["layout"]  # as prepare.py wrote it before the test split existed
    meta.write_text(json.dumps(old))
    shutil.rmtree(tmp_path / "test")
    written = prepare.prepare(sources[1:], str(tmp_path), vocab_size=300)
    assert str(tmp_path / "test" / "test.bin") in written
    assert json.loads(meta.read_text())["layout"] == prepare.LAYOUT


def test_sources_download_over_http_with_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "To be, or not to be, that is the question.\n" * 400
    failures = {"left": 2}

    class FlakyHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if failures["left"] > 0:
                failures["left"] -= 1
                self.send_error(503)
                return
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), FlakyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(prepare, "RETRY_BASE_SECONDS", 0.01)
    try:
        url = f"http://127.0.0.1:{server.server_port}/shard.txt"
        prepare.prepare([url], str(tmp_path), vocab_size=300)
    finally:
        server.shutdown()
    assert failures["left"] == 0
    assert [p.read_text() for p in (tmp_path / "raw").iterdir()] == [text]
    assert json.loads((tmp_path / "val" / "meta.json").read_text())["num_bytes"] > 0


def test_parquet_shards_are_read_document_by_document(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    docs = [f"Document {i}\n" + "words and more words.\n" * (i % 7 + 1) for i in range(300)]
    for shard, part in enumerate((docs[:150], docs[150:])):
        pq.write_table(pa.table({"text": part}), tmp_path / f"shard_{shard:05d}.parquet")
    sources = [str(tmp_path / f"shard_{shard:05d}.parquet") for shard in range(2)]
    prepare.prepare(sources, str(tmp_path / "data"), vocab_size=300)

    bos = json.loads((tmp_path / "data" / "train" / "meta.json").read_text())["bos_token_id"]
    splits = ("train", "val", "test")
    tokens = np.concatenate([load_split(tmp_path / "data", split) for split in splits])
    # one per document; a document cut by the val or the test boundary has two
    assert len(docs) + 1 <= (tokens == bos).sum() <= len(docs) + 2


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = tmp_path / "shard_00000.parquet"
    shard.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    with pytest.raises(RuntimeError, match="pip install pyarrow"):
        list(prepare.read_documents(str(shard)))


@pytest.mark.parametrize(
    ("device_name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA H20", 148e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA GeForce RTX 4090", 165e12),
        ("NVIDIA B200", 2.25e15),
        ("Some Future Accelerator", None),
    ],
)
def test_peak_flops_follow_the_detected_gpu(device_name: str, peak: float | None) -> None:
    assert prepare.peak_bf16_flops(device_name) == peak


def test_peak_flops_override_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert prepare.device_peak_flops("cpu") is None
    monkeypatch.setenv("AUTORESEARCH_PEAK_FLOPS", "1.5e14")
    assert prepare.peak_bf16_flops("Some Future Accelerator") == 1.5e14
