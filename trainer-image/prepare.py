"""
One-time data preparation, and the fixed runtime utilities train.py imports. Agents never edit it.

    python prepare.py --data-dir /data --source https://host/shard_00000.parquet --source ...
    python prepare.py --data-dir /tmp/data --source tinyshakespeare.txt --vocab-size 512

Sources are text files or parquet shards (a "text" column, read with pyarrow), local or over
HTTP. Documents are read in source order; the last VAL_FRACTION of the characters is the pinned
validation split. Layout, so that the training sandbox can mount DATA_DIR/train alone:

    DATA_DIR/raw/                downloaded sources
    DATA_DIR/train/              tokenizer.json  token_bytes.npy  train.bin  meta.json
    DATA_DIR/val/                val.bin  token_bytes.npy  meta.json   (never mounted for training)

Every step skips work already done and writes to a temporary name before renaming.
"""

import json
import math
import os
import re
import shutil
import time
import urllib.request
from urllib.parse import urlparse

import numpy as np
import torch

# ---------------------------------------------------------------------------
# Constants (fixed, do not modify)
# ---------------------------------------------------------------------------

VOCAB_SIZE = 8192  # tokenizer vocabulary, special tokens included
VAL_FRACTION = 0.1  # the last 10% of the corpus (by characters) is the val split
TOKENIZER_MAX_CHARS = 1_000_000_000  # train the tokenizer on at most this much train text
ENCODE_BATCH_DOCS = 1024  # documents per tokenizer.encode_batch call
DOWNLOAD_ATTEMPTS = 5
RETRY_BASE_SECONDS = 2.0  # waits 2, 4, 8, ... seconds between download attempts
SEQ_LEN_BY_PROFILE = {"full": 2048, "tiny": 128}
BOS_TOKEN = "<|bos|>"  # starts every document; carries 0 bytes, so bpb never counts it
SPECIAL_TOKENS = [BOS_TOKEN]
# GPT-4 style split, with \p{N}{1,2} instead of {1,3} (as in karpathy/autoresearch)
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

# ---------------------------------------------------------------------------
# Sources: download with retries, then read documents
# ---------------------------------------------------------------------------


def is_url(source):
    return urlparse(source).scheme in ("http", "https")


def download(url, path):
    """Fetch url to path (temp file + rename), retrying with exponential backoff."""
    if os.path.exists(path):
        return False
    tmp = path + ".tmp"
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
            os.replace(tmp, path)
            print(f"prepare: downloaded {url}")
            return True
        except OSError as e:  # URLError and HTTPError are OSErrors
            print(f"prepare: attempt {attempt}/{DOWNLOAD_ATTEMPTS} for {url} failed: {e}")
            if os.path.exists(tmp):
                os.remove(tmp)
            if attempt < DOWNLOAD_ATTEMPTS:
                time.sleep(RETRY_BASE_SECONDS * 2 ** (attempt - 1))
    raise RuntimeError(f"could not download {url} after {DOWNLOAD_ATTEMPTS} attempts")


def fetch_sources(sources, raw_dir):
    """Local paths for every source, downloading URLs into raw_dir. Returns (paths, written)."""
    paths, written = [], []
    for index, source in enumerate(sources):
        if not is_url(source):
            if not os.path.isfile(source):
                raise FileNotFoundError(f"source {source} is neither a file nor an http(s) URL")
            paths.append(source)
            continue
        os.makedirs(raw_dir, exist_ok=True)
        name = os.path.basename(urlparse(source).path) or "source"
        path = os.path.join(raw_dir, f"{index:05d}_{name}")  # index keeps equal names apart
        if download(source, path):
            written.append(path)
        paths.append(path)
    return paths, written


def read_documents(path):
    """Yield the documents of one source: parquet rows of its "text" column, or a whole text file."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise RuntimeError(
                f"{path} is a parquet shard and reading it needs pyarrow (pip install pyarrow); "
                "or pass plain text files as sources"
            ) from None
        shard = pq.ParquetFile(path)
        for group in range(shard.num_row_groups):
            yield from shard.read_row_group(group, columns=["text"]).column("text").to_pylist()
    else:
        with open(path, encoding="utf-8") as f:
            yield f.read()


def split_documents(paths, val_fraction=VAL_FRACTION):
    """Yield ("train" | "val", text). The cut sits at the first line start after the
    (1 - val_fraction) point of the corpus' characters, so it is the same on every run."""
    total = sum(len(doc) for path in paths for doc in read_documents(path))
    cut = math.floor(total * (1 - val_fraction))
    seen = 0
    for path in paths:
        for doc in read_documents(path):
            if seen + len(doc) <= cut:
                yield "train", doc
            elif seen >= cut:
                yield "val", doc
            else:  # the document that straddles the cut: split it after a newline
                newline = doc.find("\n", cut - seen)
                at = len(doc) if newline < 0 else newline + 1
                if doc[:at]:
                    yield "train", doc[:at]
                if doc[at:]:
                    yield "val", doc[at:]
            seen += len(doc)


# ---------------------------------------------------------------------------
# Tokenizer: byte-level BPE, and the exact byte length of every token
# ---------------------------------------------------------------------------


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    byte_values, chars = printable[:], printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(byte_values, chars, strict=True)}


def train_tokenizer(texts, vocab_size):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=0,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def token_byte_lengths(tokenizer, vocab_size):
    """Bytes each token id stands for: its byte-level characters mapped back to raw bytes.
    Decoding to text would count a partial UTF-8 sequence as U+FFFD (3 bytes); this is exact.
    Special tokens, and ids past a small corpus' vocab, stand for 0 bytes."""
    char_to_byte = {c: b for b, c in bytes_to_unicode().items()}
    lengths = np.zeros(vocab_size, dtype=np.int32)
    for token, token_id in tokenizer.get_vocab().items():
        if token not in SPECIAL_TOKENS:
            lengths[token_id] = len(bytes(char_to_byte[c] for c in token))
    return lengths


def capped(texts, max_chars):
    total = 0
    for text in texts:
        yield text[: max_chars - total]
        total += len(text)
        if total >= max_chars:
            return


# ---------------------------------------------------------------------------
# Prepare: sources -> tokenizer -> token shards
# ---------------------------------------------------------------------------


def write_json(path, data):
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(path + ".tmp", path)


def write_npy(path, array):
    np.save(path + ".tmp.npy", array)
    os.replace(path + ".tmp.npy", path)


def encode_splits(paths, tokenizer, train_path, val_path):
    """Tokenize every document (BOS first) into uint16 shards. Returns (counts, val_bytes)."""
    bos = tokenizer.token_to_id(BOS_TOKEN)
    counts, val_bytes = {"train": 0, "val": 0}, 0
    batch = []
    with open(train_path + ".tmp", "wb") as train_f, open(val_path + ".tmp", "wb") as val_f:
        files = {"train": train_f, "val": val_f}

        def flush():
            encodings = tokenizer.encode_batch([text for _, text in batch])
            for (split, _), encoding in zip(batch, encodings, strict=True):
                ids = np.array([bos, *encoding.ids], dtype=np.uint16)
                ids.tofile(files[split])
                counts[split] += len(ids)
            batch.clear()

        for split, text in split_documents(paths):
            batch.append((split, text))
            if split == "val":
                val_bytes += len(text.encode("utf-8"))
            if len(batch) >= ENCODE_BATCH_DOCS:
                flush()
        flush()
    os.replace(train_path + ".tmp", train_path)
    os.replace(val_path + ".tmp", val_path)
    return counts, val_bytes


def prepare(sources, data_dir, vocab_size=VOCAB_SIZE):
    """Build DATA_DIR from sources, skipping finished steps. Returns the paths it wrote."""
    from tokenizers import Tokenizer

    assert vocab_size <= 2**16, "token shards are uint16"
    train_dir, val_dir = os.path.join(data_dir, "train"), os.path.join(data_dir, "val")
    tokenizer_path = os.path.join(train_dir, "tokenizer.json")
    train_meta, val_meta = os.path.join(train_dir, "meta.json"), os.path.join(val_dir, "meta.json")
    byte_tables = [os.path.join(d, "token_bytes.npy") for d in (train_dir, val_dir)]
    if os.path.exists(train_meta):
        with open(train_meta) as f:
            prepared = json.load(f)["vocab_size"]
        if prepared != vocab_size:
            raise ValueError(f"{data_dir} has a vocab of {prepared}, not {vocab_size}: use another")
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(val_dir, exist_ok=True)
    paths, written = fetch_sources(sources, os.path.join(data_dir, "raw"))

    if os.path.exists(tokenizer_path):
        tokenizer = Tokenizer.from_file(tokenizer_path)
    else:
        t0 = time.time()
        train_texts = (text for split, text in split_documents(paths) if split == "train")
        tokenizer = train_tokenizer(capped(train_texts, TOKENIZER_MAX_CHARS), vocab_size)
        for (
            path
        ) in byte_tables:  # the harness counts bytes with val's copy, out of train.py's reach
            write_npy(path, token_byte_lengths(tokenizer, vocab_size))
        tokenizer.save(tokenizer_path + ".tmp")
        os.replace(tokenizer_path + ".tmp", tokenizer_path)
        for stale in (train_meta, val_meta):  # shards from another tokenizer are void
            if os.path.exists(stale):
                os.remove(stale)
        written += [tokenizer_path, *byte_tables]
        print(f"prepare: trained a BPE tokenizer of {tokenizer.get_vocab_size()} tokens "
              f"in {time.time() - t0:.1f}s")  # fmt: skip

    if not (os.path.exists(train_meta) and os.path.exists(val_meta)):
        t0 = time.time()
        train_bin, val_bin = os.path.join(train_dir, "train.bin"), os.path.join(val_dir, "val.bin")
        counts, val_bytes = encode_splits(paths, tokenizer, train_bin, val_bin)
        val_tokens = np.fromfile(val_bin, dtype=np.uint16)
        counted = int(np.load(byte_tables[1])[val_tokens].sum(dtype=np.int64))
        assert counted == val_bytes, f"val tokens count {counted} bytes, its text has {val_bytes}"
        common = {"vocab_size": vocab_size, "bos_token_id": tokenizer.token_to_id(BOS_TOKEN)}
        write_json(val_meta, {**common, "num_tokens": counts["val"], "num_bytes": val_bytes})
        write_json(train_meta, {**common, "num_tokens": counts["train"], "sources": list(sources)})
        written += [train_bin, val_bin, train_meta, val_meta]
        print(f"prepare: {counts['train']:,} train and {counts['val']:,} val tokens "
              f"in {time.time() - t0:.1f}s")  # fmt: skip

    if not written:
        print(f"prepare: {data_dir} is already prepared")
    return written


# ---------------------------------------------------------------------------
# Runtime utilities (imported by train.py)
# ---------------------------------------------------------------------------

PROFILE = os.environ.get("AUTORESEARCH_PROFILE", "full")  # full: a GPU run; tiny: CPU tests
if PROFILE not in SEQ_LEN_BY_PROFILE:
    raise ValueError(
        f"AUTORESEARCH_PROFILE={PROFILE!r}: expected one of {sorted(SEQ_LEN_BY_PROFILE)}"
    )
MAX_SEQ_LEN = SEQ_LEN_BY_PROFILE[PROFILE]
TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET", "300"))  # seconds of training
TRAIN_DIR = os.environ.get("AUTORESEARCH_TRAIN_DIR", "/data/train")
OUTPUT_DIR = os.environ.get("AUTORESEARCH_OUTPUT_DIR", ".")
DEVICE = os.environ.get("AUTORESEARCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")

# Dense bf16 tensor-core FLOP/s by device name (no sparsity), for MFU. First match wins.
GPU_PEAK_BF16_FLOPS = [
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("H20", 148e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("MI300X", 1307e12),
]


def peak_bf16_flops(device_name):
    """Peak dense bf16 FLOP/s of a GPU from its name, or None when unknown (or a CPU).
    AUTORESEARCH_PEAK_FLOPS, when set, overrides the table (for GPUs it lacks)."""
    if os.environ.get("AUTORESEARCH_PEAK_FLOPS"):
        return float(os.environ["AUTORESEARCH_PEAK_FLOPS"])
    for key, flops in GPU_PEAK_BF16_FLOPS:
        if re.search(rf"\b{re.escape(key)}\b", device_name):
            return flops
    return None


def device_peak_flops(device):
    if torch.device(device).type != "cuda":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


def get_vocab_size():
    with open(os.path.join(TRAIN_DIR, "meta.json")) as f:
        return json.load(f)["vocab_size"]


def make_dataloader(batch_size, seq_len, device, seed=0):
    """Endless (inputs, targets) batches of random windows of train.bin (nanoGPT style)."""
    tokens = np.memmap(os.path.join(TRAIN_DIR, "train.bin"), dtype=np.uint16, mode="r")
    rng = np.random.default_rng(seed)
    cuda = torch.device(device).type == "cuda"
    while True:
        starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
        rows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        batch = torch.from_numpy(rows)
        if cuda:
            batch = batch.pin_memory().to(device, non_blocking=True)
        yield batch[:, :-1], batch[:, 1:]


def save_model_for_eval(model):
    """Export forward(idx) -> logits (B, T, vocab) with torch.export, batch dim dynamic.
    The harness evaluates this file; nothing else of the run is trusted."""
    model = getattr(model, "_orig_mod", model)  # the module under torch.compile
    model.eval()
    device = next(model.parameters()).device
    example = torch.zeros(2, MAX_SEQ_LEN, dtype=torch.long, device=device)
    with torch.no_grad():
        program = torch.export.export(
            model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},)
        )
    path, tmp = os.path.join(OUTPUT_DIR, "model.pt2"), os.path.join(OUTPUT_DIR, "model.tmp.pt2")
    torch.export.save(program, tmp)
    os.replace(tmp, path)
    print(f"saved the model for evaluation to {path}")
    return path


def write_stats(**stats):
    """Stats of the run for the harness' summary: training_seconds, num_steps, total_tokens,
    tokens_per_second, peak_vram_mb, mfu_percent, num_params. Informative only: the harness
    measures val_bpb itself."""
    write_json(os.path.join(OUTPUT_DIR, "stats.json"), stats)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Prepare the tokenizer and token shards for training"
    )
    parser.add_argument("--data-dir", required=True, help="where train/ and val/ go")
    parser.add_argument(
        "--source",
        action="append",
        required=True,
        help="text or parquet file, or http(s) URL (repeatable, in order)",
    )
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    args = parser.parse_args()
    prepare(args.source, args.data_dir, vocab_size=args.vocab_size)
