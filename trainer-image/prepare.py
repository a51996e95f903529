"""
One-time data preparation, and the fixed runtime utilities train.py imports. Agents never edit it.

    python prepare.py --data-dir /data --source https://host/shard_00000.parquet --source ...
    python prepare.py --data-dir /tmp/data --source tinyshakespeare.txt --vocab-size 512

Sources are text files or parquet shards (a "text" column, read with pyarrow), local or over
HTTP. Documents are read in source order; the last TEST_FRACTION of the characters is the pinned,
held-out test split, and the VAL_FRACTION before it the pinned validation split. Layout, so that
the training sandbox can mount DATA_DIR/train alone:

    DATA_DIR/raw/                downloaded sources
    DATA_DIR/train/              tokenizer.json  token_bytes.npy  train.bin  meta.json
    DATA_DIR/val/                val.bin  token_bytes.npy  meta.json   (never mounted for training)
    DATA_DIR/test/               test.bin token_bytes.npy  meta.json   (scored only on request:
                                 the baseline and each new best; no keep decision reads it)

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
VAL_FRACTION = 0.1  # 10% of the corpus (by characters), before the test split, is the val split
TEST_FRACTION = 0.05  # the last 5% is the held-out test split
LAYOUT = 2  # bumped when the splits change: a data dir of another layout is rebuilt
EVAL_SPLITS = ("val", "test")  # scored by the harness only, never seen by training
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


def split_documents(paths, val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION):
    """Yield ("train" | "val" | "test", text). Each cut sits at the first line start after its
    point of the corpus' characters (train | val | test), so it is the same on every run."""
    total = sum(len(doc) for path in paths for doc in read_documents(path))
    cuts = [math.floor(total * (1 - val_fraction - test_fraction)),
            math.floor(total * (1 - test_fraction))]  # fmt: skip
    names = ["train", "val", "test"]
    seen, split = 0, 0
    for path in paths:
        for doc in read_documents(path):
            start = 0
            while split < len(cuts) and seen + len(doc) > cuts[split]:
                at = max(cuts[split] - seen, start)
                newline = doc.find("\n", at)
                at = len(doc) if newline < 0 else newline + 1
                if doc[start:at]:
                    yield names[split], doc[start:at]
                start, split = at, split + 1
            if doc[start:]:
                yield names[split], doc[start:]
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


def encode_splits(paths, tokenizer, bin_paths):
    """Tokenize every document (BOS first) into uint16 shards, one per split in bin_paths.
    Returns (tokens per split, UTF-8 bytes per split)."""
    bos = tokenizer.token_to_id(BOS_TOKEN)
    counts = {split: 0 for split in bin_paths}
    text_bytes = {split: 0 for split in bin_paths}
    batch = []
    files = {split: open(path + ".tmp", "wb") for split, path in bin_paths.items()}  # noqa: SIM115

    def flush():
        encodings = tokenizer.encode_batch([text for _, text in batch])
        for (split, _), encoding in zip(batch, encodings, strict=True):
            ids = np.array([bos, *encoding.ids], dtype=np.uint16)
            ids.tofile(files[split])
            counts[split] += len(ids)
        batch.clear()

    try:
        for split, text in split_documents(paths):
            batch.append((split, text))
            text_bytes[split] += len(text.encode("utf-8"))
            if len(batch) >= ENCODE_BATCH_DOCS:
                flush()
        flush()
    finally:
        for f in files.values():
            f.close()
    for path in bin_paths.values():
        os.replace(path + ".tmp", path)
    return counts, text_bytes


def clear_other_layout(data_dir):
    """Remove a data dir's derived files when they were built with other splits (LAYOUT)."""
    meta = os.path.join(data_dir, "train", "meta.json")
    if not os.path.exists(meta):
        return
    with open(meta) as f:
        if json.load(f).get("layout") == LAYOUT:
            return
    print(f"prepare: {data_dir} has another split layout: rebuilding its tokenizer and shards")
    for split in ("train", *EVAL_SPLITS):
        shutil.rmtree(os.path.join(data_dir, split), ignore_errors=True)


def prepare(sources, data_dir, vocab_size=VOCAB_SIZE):
    """Build DATA_DIR from sources, skipping finished steps. Returns the paths it wrote."""
    from tokenizers import Tokenizer

    assert vocab_size <= 2**16, "token shards are uint16"
    clear_other_layout(data_dir)
    dirs = {split: os.path.join(data_dir, split) for split in ("train", *EVAL_SPLITS)}
    metas = {split: os.path.join(folder, "meta.json") for split, folder in dirs.items()}
    tokenizer_path = os.path.join(dirs["train"], "tokenizer.json")
    byte_tables = [os.path.join(folder, "token_bytes.npy") for folder in dirs.values()]
    if os.path.exists(metas["train"]):
        with open(metas["train"]) as f:
            prepared = json.load(f)["vocab_size"]
        if prepared != vocab_size:
            raise ValueError(f"{data_dir} has a vocab of {prepared}, not {vocab_size}: use another")
    for folder in dirs.values():
        os.makedirs(folder, exist_ok=True)
    paths, written = fetch_sources(sources, os.path.join(data_dir, "raw"))

    if os.path.exists(tokenizer_path):
        tokenizer = Tokenizer.from_file(tokenizer_path)
    else:
        t0 = time.time()
        train_texts = (text for split, text in split_documents(paths) if split == "train")
        tokenizer = train_tokenizer(capped(train_texts, TOKENIZER_MAX_CHARS), vocab_size)
        for path in byte_tables:  # the harness counts bytes with val's and test's own copies
            write_npy(path, token_byte_lengths(tokenizer, vocab_size))
        tokenizer.save(tokenizer_path + ".tmp")
        os.replace(tokenizer_path + ".tmp", tokenizer_path)
        for stale in metas.values():  # shards from another tokenizer are void
            if os.path.exists(stale):
                os.remove(stale)
        written += [tokenizer_path, *byte_tables]
        print(f"prepare: trained a BPE tokenizer of {tokenizer.get_vocab_size()} tokens "
              f"in {time.time() - t0:.1f}s")  # fmt: skip

    if not all(os.path.exists(meta) for meta in metas.values()):
        t0 = time.time()
        bins = {split: os.path.join(folder, f"{split}.bin") for split, folder in dirs.items()}
        counts, text_bytes = encode_splits(paths, tokenizer, bins)
        common = {"vocab_size": vocab_size, "bos_token_id": tokenizer.token_to_id(BOS_TOKEN),
                  "layout": LAYOUT}  # fmt: skip
        for split in EVAL_SPLITS:
            tokens = np.fromfile(bins[split], dtype=np.uint16)
            table = np.load(os.path.join(dirs[split], "token_bytes.npy"))
            counted = int(table[tokens].sum(dtype=np.int64))
            assert counted == text_bytes[split], (
                f"{split} tokens count {counted} bytes, its text has {text_bytes[split]}"
            )
            write_json(metas[split], {**common, "num_tokens": counts[split],
                                      "num_bytes": text_bytes[split]})  # fmt: skip
        write_json(metas["train"], {**common, "num_tokens": counts["train"],
                                    "sources": list(sources)})  # fmt: skip
        written += [*bins.values(), *metas.values()]
        print(f"prepare: {counts['train']:,} train, {counts['val']:,} val and "
              f"{counts['test']:,} test tokens in {time.time() - t0:.1f}s")  # fmt: skip

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
TRAIN_DIR = os.environ.get("AUTORESEARCH_TRAIN_DIR", "/data/train")
OUTPUT_DIR = os.environ.get("AUTORESEARCH_OUTPUT_DIR", ".")
DEVICE = os.environ.get("AUTORESEARCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
# The clock and the seed belong to the harness: it passes them in, and it kills the run at the end
# of its window whatever this process believes. Run by hand, the window starts at import.
TIME_BUDGET = float(os.environ.get("AUTORESEARCH_TIME_BUDGET", "300"))  # informative only
DEADLINE = float(os.environ.get("AUTORESEARCH_DEADLINE") or time.time() + TIME_BUDGET)
SEED = int(os.environ.get("AUTORESEARCH_SEED", "0"))  # orders the data; differs per run when asked


def time_left():
    """Seconds until training must stop (the export allowance comes after that)."""
    return DEADLINE - time.time()


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


def make_dataloader(batch_size, seq_len, device):
    """Endless (inputs, targets) batches of random windows of train.bin (nanoGPT style), in the
    order of the harness's SEED."""
    tokens = np.memmap(os.path.join(TRAIN_DIR, "train.bin"), dtype=np.uint16, mode="r")
    rng = np.random.default_rng(SEED)
    cuda = torch.device(device).type == "cuda"
    while True:
        starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
        rows = np.stack([tokens[s : s + seq_len + 1] for s in starts]).astype(np.int64)
        batch = torch.from_numpy(rows)
        if cuda:
            batch = batch.pin_memory().to(device, non_blocking=True)
        yield batch[:, :-1], batch[:, 1:]


# The export the harness evaluates: the forward graph as JSON (ATen operator names and literal
# arguments, nothing executable) and the tensors it reads as safetensors. The harness runs the graph
# with its own interpreter, so loading it unpickles nothing and runs no code of this run's.
GRAPH_FORMAT = "autoresearch-graph/1"
MODEL_GRAPH, MODEL_WEIGHTS = "model.json", "model.safetensors"


def encode_value(value):
    """A node argument as JSON: node references, literals, dtypes and devices; nothing else."""
    if isinstance(value, torch.fx.Node):
        return {"ref": value.name}
    if isinstance(value, (list, tuple)):
        return [encode_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": value.type}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    raise TypeError(f"cannot export an argument of type {type(value).__name__}: {value!r}")


def encode_graph(program):
    """The exported program's forward as a JSON-ready dict, and the tensors it reads by name."""
    from torch.export.graph_signature import InputKind, OutputKind

    signature = program.graph_signature
    if any(spec.kind != OutputKind.USER_OUTPUT for spec in signature.output_specs):
        raise ValueError("the model mutates a buffer or an input in forward(); export a pure one")
    tensors, kinds, inputs = {}, {}, []
    for spec in signature.input_specs:
        name = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            inputs.append(name)
            continue
        source = program.state_dict if spec.target in program.state_dict else program.constants
        tensors[name] = source[spec.target].detach().to("cpu").clone().contiguous()
        kinds[name] = "parameter" if spec.kind == InputKind.PARAMETER else "buffer"
    nodes = []
    for node in program.graph.nodes:
        if node.op == "call_function":
            target = node.target
            if isinstance(target, torch._ops.OpOverload):
                op = f"{target.namespace}.{target._schema.name.split('::')[-1]}." + (
                    target._overloadname
                )
            else:
                op = f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', target)}"
            nodes.append({"name": node.name, "op": op, "args": encode_value(node.args),
                          "kwargs": {k: encode_value(v) for k, v in node.kwargs.items()}})  # fmt: skip
        elif node.op == "output":
            output = encode_value(node.args[0])
        elif node.op != "placeholder":
            raise ValueError(f"cannot export a graph node of kind {node.op}")
    graph = {"format": GRAPH_FORMAT, "inputs": inputs, "tensors": kinds, "nodes": nodes,
             "output": output}  # fmt: skip
    return graph, tensors


def save_model_for_eval(model):
    """Export forward(idx) -> logits (B, T, vocab) with torch.export (batch dim dynamic) into
    OUTPUT_DIR/model.json + model.safetensors. The harness evaluates these; nothing else of the
    run is trusted."""
    from safetensors.torch import save_file

    model = getattr(model, "_orig_mod", model)  # the module under torch.compile
    model.eval()
    device = next(model.parameters()).device
    example = torch.zeros(2, MAX_SEQ_LEN, dtype=torch.long, device=device)
    with torch.no_grad():
        program = torch.export.export(
            model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},)
        )
    graph, tensors = encode_graph(program)
    graph_path, weights_path = (os.path.join(OUTPUT_DIR, n) for n in (MODEL_GRAPH, MODEL_WEIGHTS))
    save_file(tensors, weights_path + ".tmp")
    os.replace(weights_path + ".tmp", weights_path)
    write_json(graph_path, graph)
    print(f"saved the model for evaluation to {graph_path} and {weights_path}")
    return graph_path


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
