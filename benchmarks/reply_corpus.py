"""How many realistic model replies the openai proposer turns into what was intended.

The corpus (tests/proposers/replies/: one reply per file, expected.yaml says what each must
become) imitates the models users run: GPT-4o and Claude as asked or with prose around, DeepSeek
and QwQ thinking out loud first, Llama and Mistral through Ollama or llama.cpp with drifted
indentation, unified diffs, aider's filename lines, JSON answers, whole files (good, cut short,
elided), replies cut off at the token limit, and edits the trainer cannot run. Each reply is
served by the scripted OpenAI-compatible server (tests/support/fake_openai_server.py) to the real
proposer, whose candidate or rejection is compared with the intended one. Only the first answer
counts (no repair turn), so the number measures the reading of replies alone.

    .venv/bin/python benchmarks/reply_corpus.py [--verbose]

It runs against whichever autoresearch_operator is importable, so an older checkout can be
measured too: PYTHONPATH=<checkout>/operator .venv/bin/python benchmarks/reply_corpus.py
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from autoresearch_operator.core.records import (  # noqa: E402
    Proposal,
    ProposalContext,
    ProposalRejected,
)
from autoresearch_operator.proposers import ProposerConfigError, make_proposer  # noqa: E402
from support.fake_openai_server import FakeOpenAI  # noqa: E402

CORPUS = ROOT / "tests" / "proposers" / "replies"
BASELINE = ROOT / "trainer-image" / "train.py"
MAX_TOKENS = 4096  # what a cut-off reply is said to have hit


@dataclass(frozen=True)
class Reply:
    """One corpus reply and what it must turn into."""

    name: str
    text: str
    style: str
    category: str
    finish_reason: str
    replacements: tuple[tuple[str, str], ...]  # the intended candidate, from the baseline
    description: str | None  # a substring of the intended commit message
    reject: str | None  # or: a substring of the intended rejection reason


@dataclass(frozen=True)
class Verdict:
    reply: Reply
    ok: bool  # the intended candidate, or a rejection for the intended reason
    got: str  # what came out, in a few words
    right_kind: bool  # a candidate where one was intended, a rejection where one was


def load_corpus(directory: Path = CORPUS) -> list[Reply]:
    expected = yaml.safe_load((directory / "expected.yaml").read_text())
    replies = []
    for name, spec in expected.items():
        replies.append(
            Reply(
                name=name,
                text=(directory / name).read_bytes().decode(),  # CRLF replies stay CRLF
                style=spec["style"],
                category=spec["category"],
                finish_reason=spec.get("finish_reason", "stop"),
                replacements=tuple((r["old"], r["new"]) for r in spec.get("candidate") or ()),
                description=spec.get("description"),
                reject=spec.get("reject"),
            )
        )
    return replies


def intended_source(reply: Reply, baseline: str) -> str:
    """The baseline with the reply's intended replacements, each of text found exactly once."""
    source = baseline
    for old, new in reply.replacements:
        if baseline.count(old) != 1:
            raise ValueError(f"{reply.name}: {old!r} is not in the baseline exactly once")
        source = source.replace(old, new)
    return source


def propose(server: FakeOpenAI, reply: Reply, baseline: str) -> Proposal | Exception:
    """Serve the reply to the real proposer once; its proposal, or whatever it raised."""
    server.reply(reply.text, finish_reason=reply.finish_reason)
    settings = {
        "type": "openai",
        "model": "corpus",
        "baseURL": server.base_url,
        "apiKeyEnv": "CORPUS_KEY",
        "maxTokens": MAX_TOKENS,
        "maxRetries": 0,
        "timeoutSeconds": 10,
        "repairTurns": 0,
    }
    env = {"CORPUS_KEY": "sk-corpus"}
    ctx = ProposalContext(
        org="corpus", experiment=1, program="Lower val_bpb.", best_train_py=baseline,
        best_val_bpb=1.0,
    )  # fmt: skip
    try:
        try:
            proposer = make_proposer(settings, env=env)
        except ProposerConfigError:  # code from before repair turns: it has none to turn off
            proposer = make_proposer(
                {k: v for k, v in settings.items() if k != "repairTurns"}, env=env
            )
        return proposer.propose(ctx)
    except Exception as error:  # older code may fail in any way: that counts as a miss
        return error


def judge(reply: Reply, baseline: str, result: Proposal | Exception) -> Verdict:
    if isinstance(result, Proposal):
        got = f"candidate: {result.description!r}"
        if reply.reject is not None:
            return Verdict(reply, False, f"{got}, but should be rejected ({reply.reject!r})", False)
        if result.train_py != intended_source(reply, baseline):
            return Verdict(reply, False, f"{got}, but not the intended train.py", True)
        if reply.description and reply.description not in result.description:
            return Verdict(reply, False, f"{got}, without {reply.description!r}", True)
        return Verdict(reply, True, got, True)
    if isinstance(result, ProposalRejected):
        wanted = reply.reject is not None
        ok = wanted and reply.reject in result.reason
        return Verdict(reply, ok, f"rejected: {result.reason}", wanted)
    return Verdict(reply, False, f"error: {type(result).__name__}: {result}", False)


def run(replies: list[Reply], baseline: str) -> list[Verdict]:
    verdicts = []
    for reply in replies:
        server = FakeOpenAI()
        server.start()
        try:
            verdicts.append(judge(reply, baseline, propose(server, reply, baseline)))
        finally:
            server.stop()
    return verdicts


def share(ok: int, total: int) -> str:
    return f"{ok}/{total} ({100 * ok / total:.0f}%)" if total else "0/0"


def report(verdicts: list[Verdict], verbose: bool = False) -> str:
    """Per category: replies turned into the intended outcome (the candidate, or a rejection
    for the intended reason), and into the intended kind (a candidate, or a rejection)."""
    totals = Counter(v.reply.category for v in verdicts)
    good = Counter(v.reply.category for v in verdicts if v.ok)
    kind = Counter(v.reply.category for v in verdicts if v.right_kind)
    lines = [f"{'category':<20} {'intended outcome':<20} intended kind"]
    lines += [
        f"{c:<20} {share(good[c], n):<20} {share(kind[c], n)}" for c, n in sorted(totals.items())
    ]
    all_good, all_kind = (
        share(sum(good.values()), len(verdicts)),
        share(sum(kind.values()), len(verdicts)),
    )
    lines.append(f"{'all':<20} {all_good:<20} {all_kind}")
    for label, wanted in (("meant as candidates", False), ("meant as rejections", True)):
        group = [v for v in verdicts if (v.reply.reject is not None) == wanted]
        kinds = share(sum(v.right_kind for v in group), len(group))
        lines.append(f"{label:<20} {share(sum(v.ok for v in group), len(group)):<20} {kinds}")
    misses = [v for v in verdicts if not v.ok]
    if verbose and misses:
        lines += ["", "missed:"] + [f"  {v.reply.name}: {v.got}" for v in misses]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="list what each miss turned into")
    args = parser.parse_args(argv)
    verdicts = run(load_corpus(), BASELINE.read_text())
    print(report(verdicts, verbose=args.verbose))
    return 0


if __name__ == "__main__":
    sys.exit(main())
