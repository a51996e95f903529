"""
The harness's half of the metric: load an exported model without running any of its code, and
score it so that seeing the future, mixing windows or carrying state between calls cannot pay.

Loading. The run exports its forward pass as a graph of ATen operators (prepare.encode_graph) and
the tensors it reads (safetensors). Nothing is unpickled and nothing is imported by name: every
operator is looked up in torch.ops.aten, must be functional (no operator that writes to an input,
so no state survives a call), deterministic (no random operator), and must not hand out
uninitialised memory (which could hold the harness's own data). The graph is run by the small
interpreter below.

Scoring. Val windows are scored in an order and batch composition drawn from the harness's seed, so
no row's neighbour in a batch is its continuation. Every scored batch is run twice: once as it is,
and once with each row's tokens after a cut replaced by another window's tokens and the rows in
another order. Logits at or before the cut must not move; the cut is a random position for half the
rows and, for the other half, the position the model predicted best (where a model that peeks at
the next token gains most). A pure function whose earlier logits depend on later tokens, on other
rows or on the call before it is rejected; see docs/harness.md for what this does not prove.
"""

import json
import math
import os
import re
import signal
import stat

import numpy as np
import torch
import torch.nn.functional as F

GRAPH_FORMAT = "autoresearch-graph/1"  # prepare.GRAPH_FORMAT (the harness reads its own copy)
MAX_GRAPH_BYTES = 64 << 20
MAX_NODES = 200_000
CAUSAL_RTOL = 1e-4  # earlier logits may move by this fraction of the largest logit (fp32 noise)
OPERATOR = re.compile(r"^aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)$")
UNINITIALISED = {"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty",
                 "new_empty_strided", "_empty_affine_quantized", "_empty_per_channel_affine_quantized",
                 "empty_quantized"}  # fmt: skip
PYTHON_OPS = {  # shape arithmetic that torch.export records for a dynamic batch size
    "_operator.getitem": lambda a, i: a[i],
    "_operator.add": lambda a, b: a + b,
    "_operator.sub": lambda a, b: a - b,
    "_operator.mul": lambda a, b: a * b,
    "_operator.floordiv": lambda a, b: a // b,
    "_operator.truediv": lambda a, b: a / b,
    "_operator.mod": lambda a, b: a % b,
    "_operator.neg": lambda a: -a,
    "_operator.eq": lambda a, b: a == b,
    "_operator.ne": lambda a, b: a != b,
    "_operator.lt": lambda a, b: a < b,
    "_operator.le": lambda a, b: a <= b,
    "_operator.gt": lambda a, b: a > b,
    "_operator.ge": lambda a, b: a >= b,
}
SCALARS = (bool, int, float)
# Operators tagged random only for their dropout: allowed when it is off (argument, position).
DROPOUT_OFF = {"scaled_dot_product_attention": ("dropout_p", 0.0), "dropout": ("train", False)}


class RejectedModel(Exception):
    """The export is not a model the harness will run, or the model failed a check."""


class EvaluationTimeout(Exception):
    """Evaluation ran past its limit."""


# ---------------------------------------------------------------------------
# Loading: JSON graph + safetensors, checked node by node
# ---------------------------------------------------------------------------


def read_regular_file(path, limit):
    """The bytes of path: a regular file (not a link, not a device) of at most `limit` bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block
    except OSError as e:
        raise RejectedModel(f"cannot open {os.path.basename(path)}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RejectedModel(f"{os.path.basename(path)} is not a regular file")
        if info.st_size > limit:
            raise RejectedModel(f"{os.path.basename(path)} is {info.st_size} bytes (limit {limit})")
        return f.read(info.st_size)


def resolve_operator(op):
    """The ATen OpOverload named `op`, if the harness allows it; RejectedModel otherwise."""
    if op in PYTHON_OPS:
        return PYTHON_OPS[op]
    match = OPERATOR.match(op) if isinstance(op, str) else None
    if not match:
        raise RejectedModel(f"operator {op!r} is not an ATen operator")
    name, overload = match.groups()
    if name in UNINITIALISED:
        raise RejectedModel(f"operator {op} hands out uninitialised memory")
    try:
        target = getattr(getattr(torch.ops.aten, name), overload)
    except (AttributeError, RuntimeError):
        raise RejectedModel(f"operator {op} does not exist in this torch") from None
    if not isinstance(target, torch._ops.OpOverload):
        raise RejectedModel(f"operator {op} is not an operator overload")
    if target._schema.is_mutable:
        raise RejectedModel(f"operator {op} writes to its inputs: the model must be pure")
    if torch.Tag.nondeterministic_seeded in target.tags:
        if name not in DROPOUT_OFF:
            raise RejectedModel(f"operator {op} is random: the model must be deterministic")
        return without_dropout(target, op, *DROPOUT_OFF[name])
    return target


def without_dropout(target, op, name, off):
    position = [argument.name for argument in target._schema.arguments].index(name)

    def call(*args, **kwargs):
        value = kwargs[name] if name in kwargs else args[position] if len(args) > position else off
        if value != off:
            raise RejectedModel(f"{op} with {name}={value!r}: the model must be deterministic")
        return target(*args, **kwargs)

    return call


def decode_value(value, device, names):
    """A checked JSON argument, as a function of the interpreter's environment."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return lambda env: value
    if isinstance(value, list):
        items = [decode_value(v, device, names) for v in value]
        return lambda env: [item(env) for item in items]
    if isinstance(value, dict) and len(value) == 1:
        ((kind, raw),) = value.items()
        if kind == "ref" and raw in names:
            return lambda env: env[raw]
        if kind == "float" and raw in ("inf", "-inf", "nan"):
            return lambda env, x=float(raw): x
        if kind == "dtype" and isinstance(getattr(torch, str(raw), None), torch.dtype):
            dtype = getattr(torch, raw)
            return lambda env: dtype
        if kind == "device":
            return lambda env: device  # the harness's device, whatever the run trained on
        if kind == "layout" and raw == "strided":
            return lambda env: torch.strided
        if kind == "memory_format" and raw in ("contiguous_format", "preserve_format"):
            memory_format = getattr(torch, raw)
            return lambda env: memory_format
    raise RejectedModel(f"argument {str(value)[:80]!r} is not one the harness accepts")


class GraphModel:
    """forward(idx) -> logits, run node by node over checked ATen operators. No state."""

    def __init__(self, graph, tensors, device):
        if not isinstance(graph, dict) or graph.get("format") != GRAPH_FORMAT:
            raise RejectedModel(f"model.json is not an {GRAPH_FORMAT} graph")
        inputs, kinds, nodes = graph.get("inputs"), graph.get("tensors"), graph.get("nodes")
        if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], str)):
            raise RejectedModel("the graph must take exactly one input, the token ids")
        if not isinstance(kinds, dict) or set(kinds) != set(tensors):
            raise RejectedModel("model.json and model.safetensors name different tensors")
        if not isinstance(nodes, list) or len(nodes) > MAX_NODES:
            raise RejectedModel("the graph's node list is missing or too long")
        self.input = inputs[0]
        self.weights = {name: t.to(device) for name, t in tensors.items()}
        self.num_params = sum(t.numel() for n, t in tensors.items() if kinds[n] == "parameter")
        names = {self.input, *tensors}
        self.steps = []
        for node in nodes:
            if not isinstance(node, dict) or not isinstance(node.get("name"), str):
                raise RejectedModel("a graph node has no name")
            if node["name"] in names:
                raise RejectedModel(f"graph node {node['name']!r} is defined twice")
            target = resolve_operator(node.get("op"))
            args = decode_value(node.get("args", []), device, names)
            kwargs = node.get("kwargs", {})
            if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise RejectedModel(f"graph node {node['name']!r} has malformed kwargs")
            kwargs = {k: decode_value(v, device, names) for k, v in kwargs.items()}
            self.steps.append((node["name"], node["op"], target, args, kwargs))
            names.add(node["name"])
        self.output = decode_value(graph.get("output"), device, names)

    @torch.no_grad()
    def __call__(self, idx):
        env = dict(self.weights)
        env[self.input] = idx
        for name, op, target, args, kwargs in self.steps:
            values = args(env)
            if op in PYTHON_OPS and not all(isinstance(v, SCALARS + (list, tuple)) for v in values):
                raise RejectedModel(f"{op} applied to a tensor")
            env[name] = target(*values, **{k: v(env) for k, v in kwargs.items()})
        out = self.output(env)
        if isinstance(out, list) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise RejectedModel("the graph's output is not one tensor of logits")
        return out


def load_model(verdict_dir, device):
    """The exported model in verdict_dir (model.json + model.safetensors), on `device`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    raw = read_regular_file(os.path.join(verdict_dir, "model.json"), MAX_GRAPH_BYTES)
    try:
        graph = json.loads(raw)
    except ValueError as e:
        raise RejectedModel(f"model.json is not JSON: {e}") from None
    weights = read_regular_file(os.path.join(verdict_dir, "model.safetensors"), 1 << 40)
    try:
        tensors = load(weights)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise RejectedModel(f"model.safetensors is not readable: {e}") from None
    return GraphModel(graph, tensors, device)


# ---------------------------------------------------------------------------
# Scoring, with the causality check on every batch
# ---------------------------------------------------------------------------


def windows_of(tokens, seq_len, max_tokens):
    """Non-overlapping windows of seq_len + 1 tokens, at most max_tokens scored: (N, seq_len + 1)."""
    count = min(max_tokens, len(tokens) - 1) // seq_len
    if count == 0:
        raise ValueError(f"the split ({len(tokens)} tokens) is shorter than one window")
    size = tokens.itemsize
    rows = np.lib.stride_tricks.as_strided(tokens, (count, seq_len + 1), (seq_len * size, size))
    return torch.from_numpy(rows.astype(np.int64))


def logits_of(model, x, vocab_size):
    logits = model(x)
    expected = (*x.shape, vocab_size)
    if tuple(logits.shape) != expected:
        raise RejectedModel(f"the model's logits have shape {tuple(logits.shape)}, not {expected}")
    return logits.float()


def twin_check(model, x, logits, nats, donors, generator, vocab_size):
    """None when no row's logits at or before its cut move when the tokens after the cut and the
    other rows change; else why not."""
    B, T = x.shape
    cuts = torch.randint(0, T - 1, (B,), generator=generator)
    best = nats[:, : T - 1].argmin(dim=1).cpu()  # where a peek at the next token pays most
    targeted = torch.rand(B, generator=generator) < 0.5
    cuts = torch.where(targeted, best, cuts)
    twin = x.clone()
    for row in range(B):
        cut = int(cuts[row])
        twin[row, cut + 1 :] = donors[row, cut + 1 : T].to(x.device)
    order = torch.randperm(B, generator=generator)
    moved_logits = torch.empty_like(logits)
    moved_logits[order] = logits_of(model, twin[order], vocab_size)
    tolerance = CAUSAL_RTOL * max(logits.abs().max().item(), 1e-3)
    for row in range(B):
        cut = int(cuts[row])
        moved = (moved_logits[row, : cut + 1] - logits[row, : cut + 1]).abs().amax(dim=-1)
        if moved.max().item() > tolerance:
            where = int(moved.argmax())
            return (f"logits at position {where} moved by {moved.max().item():.3g} when only the "
                    f"tokens after position {cut} and the other rows changed: the model sees the "
                    f"future or its batch")  # fmt: skip
    return None


def score_bpb(model, tokens, token_bytes, vocab_size, seq_len, batch_size, max_tokens, seed,
              device="cpu"):  # fmt: skip
    """Bits per byte: summed cross-entropy (nats) of the scored tokens over ln 2 times their exact
    UTF-8 byte count (tokens of 0 bytes, BOS, count in neither sum), with the twin check on every
    batch. Raises RejectedModel when the check fails."""
    data = windows_of(tokens, seq_len, max_tokens)
    count = len(data)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=generator)
    donors = torch.roll(order, count // 2) if count > 1 else order
    byte_table = torch.as_tensor(np.asarray(token_bytes), dtype=torch.int64, device=device)
    total_nats, total_bytes = 0.0, 0
    for start in range(0, count, batch_size):
        rows = order[start : start + batch_size]
        chunk = data[rows].to(device)
        x, y = chunk[:, :-1], chunk[:, 1:]
        logits = logits_of(model, x, vocab_size)
        nats = F.cross_entropy(logits.reshape(y.numel(), -1), y.reshape(-1), reduction="none")
        nats = nats.view(y.shape)
        problem = twin_check(model, x, logits, nats, data[donors[rows]][:, :-1], generator,
                             vocab_size)  # fmt: skip
        if problem:
            raise RejectedModel(problem)
        nbytes = byte_table[y]
        total_nats += nats[nbytes > 0].sum(dtype=torch.float64).item()
        total_bytes += nbytes.sum().item()
    return total_nats / (math.log(2) * total_bytes)


class time_limit:
    """Raise EvaluationTimeout in the main thread after `seconds` (SIGALRM)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def _expired(self, *_):
        raise EvaluationTimeout(f"evaluation took longer than {self.seconds:.0f}s")

    def __enter__(self):
        self.previous = signal.signal(signal.SIGALRM, self._expired)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous)
