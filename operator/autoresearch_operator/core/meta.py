"""Meta-research: the next round's program.md files, written from the last round's standings.

`evolve` works offline and deterministically: the top `survivors` entrants keep their
program.md; every other entrant gets a child of two of the leaders: each front-matter field from
one parent or the other, then one field nudged (step, changes, risk or explore), over the first
parent's prose. An LLM meta-proposer (proposers/meta_openai.py) gets the messages built here and
its reply is parsed here; a program it got wrong falls back to the evolved one, with the reason.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Protocol

from .contest import Standings, standings_table
from .program import ProgramError, Strategy, parse_program, render_program
from .records import TokenUsage

STEP_FACTORS = (0.5, 2 / 3, 1.5, 2.0)
STEP_RANGE = (0.25, 4.0)
RISKS = ("low", "medium", "high")
MAX_LISTED = 8  # kept / crashed descriptions per entrant in the meta prompt


@dataclass(frozen=True)
class EntrantHistory:
    program: str
    kept: list[str] = field(default_factory=list)  # descriptions of kept candidates
    crashed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MetaContext:
    contest: str
    round: int  # the round that just ended
    standings: Standings
    entrants: dict[str, EntrantHistory]
    survivors: int
    seed: int = 0


@dataclass(frozen=True)
class NextPrograms:
    programs: dict[str, str]  # entrant -> program.md for the next round
    parents: dict[str, list[str]]  # entrant -> the entrants whose programs it came from
    notes: dict[str, str]  # entrant -> how its program was written
    usage: TokenUsage = field(default_factory=TokenUsage)

    def summary(self, round: int, proposer: str) -> str:
        lines = [f"round {round}: program.md files written by {proposer}", ""]
        lines += [f"- {e}: {note}" for e, note in sorted(self.notes.items())]
        return "\n".join(lines)


class MetaProposer(Protocol):
    name: str

    def next_programs(self, ctx: MetaContext) -> NextPrograms: ...


def _ranked(ctx: MetaContext) -> list[str]:
    return [s.entrant for s in ctx.standings.entrants if s.entrant in ctx.entrants]


def _strategy(text: str) -> tuple[Strategy, str]:
    try:
        program = parse_program(text)
        return program.strategy, program.prose
    except ProgramError:  # an unparsable parent contributes its text as prose only
        return Strategy(), text


def _nudge(s: Strategy, rng: random.Random) -> tuple[Strategy, str]:
    what = rng.choice(("step", "changes", "risk", "explore"))
    if what == "step":
        new = min(STEP_RANGE[1], max(STEP_RANGE[0], round(s.step * rng.choice(STEP_FACTORS), 3)))
        return s.model_copy(update={"step": new}), f"step {s.step:g} -> {new:g}"
    if what == "changes":
        old = s.changes or 1
        new_changes = min(4, max(1, old + rng.choice((-1, 1))))
        if new_changes == old:
            new_changes = old + 1 if old < 4 else old - 1
        return s.model_copy(update={"changes": new_changes}), f"changes {old} -> {new_changes}"
    if what == "risk":
        options = [r for r in RISKS if r != s.risk]
        risk = rng.choice(options)
        return s.model_copy(update={"risk": risk}), f"risk {s.risk} -> {risk}"
    if s.explore:  # widen: explore every knob
        return s.model_copy(update={"explore": ()}), f"explore {list(s.explore)} -> all knobs"
    step = min(STEP_RANGE[1], round(s.step * 1.5, 3))
    return s.model_copy(update={"step": step}), f"step {s.step:g} -> {step:g}"


# Fields inherited together: one parent's explore with the other's avoid can cancel out
# (explore ['*_LR'] x avoid ['*_LR'] leaves no knob), so they come from the same parent.
LINKED = (("explore", "avoid"),)


def crossover(a: Strategy, b: Strategy, rng: random.Random) -> Strategy:
    """Each field (each linked group of fields) from one parent or the other."""
    fields_a, fields_b = a.model_dump(), b.model_dump()
    groups = [*LINKED, *((k,) for k in fields_a if not any(k in g for g in LINKED))]
    child = {}
    for group in groups:
        parent = fields_a if rng.random() < 0.5 else fields_b
        child.update({k: parent[k] for k in group})
    return Strategy.model_validate(child)


def evolve(ctx: MetaContext) -> NextPrograms:
    ranked = _ranked(ctx)
    keep = ranked[: ctx.survivors]
    pool = ranked[: max(2, ctx.survivors)] or ranked
    programs, parents, notes = {}, {}, {}
    for entrant in ranked:
        if entrant in keep:
            programs[entrant] = ctx.entrants[entrant].program
            parents[entrant] = [entrant]
            notes[entrant] = f"kept unchanged (rank {ranked.index(entrant) + 1})"
            continue
        rng = random.Random(f"evolve:{ctx.seed}:{ctx.contest}:{ctx.round}:{entrant}")
        mother = pool[0] if len(pool) == 1 else rng.choice(pool)
        father = rng.choice([p for p in pool if p != mother] or [mother])
        (sa, prose), (sb, _) = (_strategy(ctx.entrants[p].program) for p in (mother, father))
        child, change = _nudge(crossover(sa, sb, rng), rng)
        note = (
            f"from {mother} x {father}; {change}"
            if father != mother
            else f"from {mother}; {change}"
        )
        programs[entrant] = render_program(
            child, prose, {"notes": f"round {ctx.round + 1}: {note}"}
        )
        parents[entrant] = sorted({mother, father})
        notes[entrant] = note
    return NextPrograms(programs, parents, notes)


class EvolveMetaProposer:
    """The offline meta-proposer: no network, the same output for the same standings."""

    name = "evolve"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def next_programs(self, ctx: MetaContext) -> NextPrograms:
        return evolve(ctx if ctx.seed == self.seed else _reseeded(ctx, self.seed))


def _reseeded(ctx: MetaContext, seed: int) -> MetaContext:
    return MetaContext(ctx.contest, ctx.round, ctx.standings, ctx.entrants, ctx.survivors, seed)


# -- the LLM meta-proposer's messages and reply ------------------------------------------------

META_SYSTEM_PROMPT = """\
You direct several automated research orgs. Each org is an LLM or a random-search agent that
edits train.py (a small GPT pretraining script) to lower val_bpb (validation bits per byte) under
a fixed training-time budget; its instructions are its program.md. The orgs just competed under
identical budgets. Your job: write better program.md files for the next round from the results.

A program.md may start with a YAML front-matter block between two '---' lines with these fields
(all optional): explore (list of knob-name globs to change), avoid (globs never to change),
step (float, 0 < step <= 4: the size of one change, 1 = default), changes (1-4 knobs per
candidate), risk (low, medium or high). Then prose instructions for an LLM researcher.

Reply with one block per program you are asked for, exactly:

=== PROGRAM: <entrant name> ===
<the whole program.md>
=== END ===
"""

_BLOCK = re.compile(r"^=== PROGRAM: *([a-z0-9-]+) *===\n(.*?)\n=== END ===", re.M | re.S)


def meta_messages(ctx: MetaContext) -> list[dict[str, str]]:
    ranked = _ranked(ctx)
    rewrite = ranked[ctx.survivors :]
    by_name = {s.entrant: s for s in ctx.standings.entrants}
    sections = [f"# Round {ctx.round} results\n\n{standings_table(ctx.standings)}"]
    for entrant in ranked:
        h = ctx.entrants[entrant]
        s = by_name[entrant]
        kept = "\n".join(f"  - {d}" for d in h.kept[-MAX_LISTED:]) or "  (none)"
        crashed = "\n".join(f"  - {d}" for d in h.crashed[-MAX_LISTED:]) or "  (none)"
        sections.append(
            f"# Entrant {entrant} (rank {s.rank})\n\nKept changes:\n{kept}\n\nCrashes:\n{crashed}"
            f"\n\nIts program.md:\n\n```markdown\n{h.program.strip()}\n```"
        )
    keep_note = (
        f"{', '.join(ranked[: ctx.survivors])} keep their program.md unchanged. "
        if ctx.survivors
        else ""
    )
    sections.append(
        f"# Your task\n\n{keep_note}Write the next round's program.md for: {', '.join(rewrite)}. "
        "Learn from what the leaders did that the others did not; keep what the results support."
    )
    return [
        {"role": "system", "content": META_SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(sections) + "\n"},
    ]


def parse_meta_reply(reply: str, ctx: MetaContext, usage: TokenUsage, name: str) -> NextPrograms:
    """The programs the reply wrote; each one missing or invalid is evolved instead, and says so."""
    fallback = evolve(ctx)
    written = {m.group(1): m.group(2).strip() + "\n" for m in _BLOCK.finditer(reply)}
    ranked = _ranked(ctx)
    programs, parents, notes = {}, {}, {}
    for entrant in ranked:
        if entrant in ranked[: ctx.survivors]:
            programs[entrant], parents[entrant] = ctx.entrants[entrant].program, [entrant]
            notes[entrant] = fallback.notes[entrant]
            continue
        text = written.get(entrant)
        problem = "the reply has no block for it" if text is None else None
        if text is not None:
            try:
                parse_program(text)
            except ProgramError as err:
                problem = str(err)
        if problem is None and text is not None:
            programs[entrant] = text  # the LLM read every program; name its own and the leader's
            parents[entrant] = sorted({entrant, ranked[0]})
            notes[entrant] = f"rewritten by {name} from the round {ctx.round} results"
        else:
            programs[entrant], parents[entrant] = (
                fallback.programs[entrant],
                fallback.parents[entrant],
            )
            notes[entrant] = (
                f"{name}'s program was unusable ({problem}); evolved instead: {fallback.notes[entrant]}"
            )
    return NextPrograms(programs, parents, notes, usage)
