"""The harness's half of the metric on models whose answers are known: the export it can load
without running the model's code, the operators it refuses, and the twin-pass causality check
against models that leak the future everywhere, at some positions, for some inputs, across the
batch, or through state kept between calls."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import evaluation
import prepare

VOCAB, SEQ = 16, 32


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
        ahead = torch.roll(e, shifts=-1, dims=1)
        if self.leak == "next-token":
            logits = logits + 0.1 * ahead
        if self.leak == "some-positions":  # only every 8th position peeks
            keep = (torch.arange(idx.size(1), device=idx.device) % 8 == 3).float()[None, :, None]
            logits = logits + 0.1 * ahead * keep
        if self.leak == "some-inputs":  # only where the current token is 5
            logits = logits + 0.1 * ahead * (idx == 5).float()[..., None]
        if self.leak == "batch-after-row-0":  # rows >= 1 see the next row: row 0 stays clean
            shifted = torch.roll(e, shifts=-1, dims=0)
            rows = (torch.arange(idx.size(0), device=idx.device) > 0).float()[:, None, None]
            logits = logits + 0.1 * shifted * rows
        return logits


def exported(model: nn.Module, tmp_path: Path | None = None) -> evaluation.GraphModel:
    example = torch.zeros(2, SEQ, dtype=torch.long)
    program = torch.export.export(
        model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},)
    )
    graph, tensors = prepare.encode_graph(program)
    return evaluation.GraphModel(json.loads(json.dumps(graph)), tensors, "cpu")


def val_tokens(n: int = 4000) -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, size=n).astype(np.uint16)


def score(model, tokens=None, seed: int = 0, batch_size: int = 4, max_tokens: int = 10_000):
    tokens = val_tokens() if tokens is None else tokens
    return evaluation.score_bpb(model, tokens, np.ones(VOCAB, dtype=np.int64), VOCAB, SEQ,
                                batch_size, max_tokens, seed)  # fmt: skip


def test_an_honest_model_exports_and_scores_the_same_as_itself() -> None:
    model = ToyLM()
    graph_model = exported(model)
    assert graph_model.num_params == VOCAB * VOCAB
    x = torch.randint(VOCAB, (3, SEQ))
    assert torch.equal(graph_model(x), model(x))
    assert score(graph_model) == pytest.approx(score(model), rel=1e-9)


@pytest.mark.parametrize(
    "leak", ["next-token", "some-positions", "some-inputs", "batch-after-row-0"]
)
def test_a_model_that_sees_the_future_or_its_batch_is_caught(leak: str) -> None:
    with pytest.raises(evaluation.RejectedModel, match="sees the future or its batch"):
        score(exported(ToyLM(leak)))


def test_the_real_model_architecture_round_trips_through_the_export(baseline_train_py: str) -> None:
    # the attention, RoPE, RMSNorm and softcap of the baseline, at toy size
    namespace: dict = {}
    source = baseline_train_py.split("def flops_per_token")[0]
    source = source.replace("from prepare import (", "from prepare import (  # noqa", 1)
    exec(compile(source, "train.py", "exec"), namespace)  # noqa: S102 (our own baseline)
    model = namespace["GPT"](VOCAB, 1, 32, 2, SEQ)
    model.init_weights()
    nn.init.normal_(model.lm_head.weight, std=0.5)
    model.eval()
    graph_model = exported(model)
    x = torch.randint(VOCAB, (3, SEQ))
    assert torch.allclose(graph_model(x), model(x), atol=1e-5)
    assert math.isfinite(score(graph_model))


def test_uniform_logits_score_log2_vocab_per_byte_with_bos_uncounted() -> None:
    tokens = val_tokens(1000)
    token_bytes = np.random.default_rng(1).integers(1, 5, size=VOCAB)
    token_bytes[0] = 0  # a BOS-like token: scored in neither sum
    bpb = evaluation.score_bpb(lambda idx: torch.zeros(*idx.shape, VOCAB), tokens, token_bytes,
                               VOCAB, 16, 4, 10_000, seed=3)  # fmt: skip
    n_windows = (len(tokens) - 1) // 16
    targets = np.concatenate([tokens[w * 16 + 1 : w * 16 + 17] for w in range(n_windows)])
    scored = int((token_bytes[targets] > 0).sum())
    expected = scored * math.log(VOCAB) / (math.log(2) * int(token_bytes[targets].sum()))
    assert bpb == pytest.approx(expected, rel=1e-6)  # every window once, whatever the order


def test_scoring_reads_at_most_max_tokens_and_runs_every_batch_twice() -> None:
    calls = []

    def model(idx: torch.Tensor) -> torch.Tensor:
        calls.append(idx.numel())
        return torch.zeros(*idx.shape, VOCAB)

    evaluation.score_bpb(model, np.arange(10_000, dtype=np.uint16) % VOCAB, np.ones(VOCAB),
                         VOCAB, 16, 4, 640, seed=0)  # fmt: skip
    assert sum(calls) == 2 * 640


def test_wrong_logit_shape_is_rejected() -> None:
    with pytest.raises(evaluation.RejectedModel, match="shape"):
        score(lambda idx: torch.zeros(idx.shape[0], idx.shape[1], VOCAB + 1))


def graph_with(op: str, args: list, kwargs: dict | None = None) -> dict:
    return {"format": prepare.GRAPH_FORMAT, "inputs": ["idx"], "tensors": {},
            "nodes": [{"name": "out", "op": op, "args": args, "kwargs": kwargs or {}}],
            "output": [{"ref": "out"}]}  # fmt: skip


@pytest.mark.parametrize(
    ("op", "args", "why"),
    [
        ("torch.os.system", ["touch /tmp/pwned"], "not an ATen operator"),
        ("builtins.exec", ["print(1)"], "not an ATen operator"),
        ("torch.ops.aten.add.Tensor", [{"ref": "idx"}, 1], "not an ATen operator"),
        ("aten.add_.Tensor", [{"ref": "idx"}, {"ref": "idx"}], "writes to its inputs"),
        ("aten.copy_.default", [{"ref": "idx"}, {"ref": "idx"}], "writes to its inputs"),
        ("aten.rand_like.default", [{"ref": "idx"}], "random"),
        ("aten.empty_like.default", [{"ref": "idx"}], "uninitialised memory"),
        ("aten.no_such_op.default", [{"ref": "idx"}], "does not exist"),
        ("aten.add.Tensor", [{"ref": "secret"}, 1], "not one the harness accepts"),
        ("aten.add.Tensor", [{"pickle": "gASV"}, 1], "not one the harness accepts"),
    ],
)
def test_a_graph_that_is_not_a_pure_aten_program_is_refused_before_it_runs(
    op: str, args: list, why: str
) -> None:
    with pytest.raises(evaluation.RejectedModel, match=why):
        evaluation.GraphModel(graph_with(op, args), {}, "cpu")
    assert not os.path.exists("/tmp/pwned")


def test_dropout_is_allowed_only_when_off() -> None:
    q = {"ref": "idx"}
    off = evaluation.GraphModel(graph_with("aten.scaled_dot_product_attention.default",
                                           [q, q, q, None, 0.0, True]), {}, "cpu")  # fmt: skip
    x = torch.randn(1, 1, 4, 8)
    assert off(x).shape == x.shape
    on = evaluation.GraphModel(graph_with("aten.scaled_dot_product_attention.default",
                                          [q, q, q], {"dropout_p": 0.5}), {}, "cpu")  # fmt: skip
    with pytest.raises(evaluation.RejectedModel, match="dropout_p=0.5"):
        on(x)


def test_a_model_that_keeps_state_between_calls_is_refused() -> None:
    class Remembers(ToyLM):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("memory", torch.zeros(2, SEQ, dtype=torch.long))

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            out = super().forward(idx) + self.embed(self.memory[:1]).cumsum(dim=1)
            self.memory.copy_(idx[:2])
            return out

    with pytest.raises(evaluation.RejectedModel, match="copy_.* writes to its inputs"):
        exported(Remembers())  # the export keeps the write; the harness refuses to run it


def test_links_and_non_files_are_not_read(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    (tmp_path / "model.json").symlink_to(target)
    with pytest.raises(evaluation.RejectedModel, match="cannot open model.json"):
        evaluation.load_model(str(tmp_path), "cpu")
    os.mkfifo(tmp_path / "stats.json")
    with pytest.raises(evaluation.RejectedModel, match="not a regular file"):
        evaluation.read_regular_file(str(tmp_path / "stats.json"), 100)
