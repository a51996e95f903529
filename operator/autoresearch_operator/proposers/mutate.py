"""The control group: nudge one or two numeric knobs of train.py at random, no model involved.

Knobs are module-level lines `NAME = <number>  # comment` (or `NAME = 2**k`). Floats are scaled
by a factor between 1/2 and 2 (log-uniform; betas and momenta scale their distance from 1), ints
step by one or two, or double or halve when they are larger powers of two. The choice depends
only on (seed, experiment, train.py, program.md), so a run can be replayed exactly. An LLM-driven
org has to beat this to be worth its tokens.

The front-matter of program.md (core/program.py) steers it: which knobs (explore, avoid), how
far (step), how many at once (changes, risk). The default strategy draws exactly the random
numbers it drew before strategies existed, so recorded runs replay unchanged.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from decimal import Decimal
from fnmatch import fnmatchcase

from autoresearch_operator.candidate import CandidateError, validate_candidate
from autoresearch_operator.core.program import (
    EXTRA_KNOB_PROBABILITY,
    TWO_KNOB_PROBABILITY,
    ProgramError,
    Strategy,
    log_factor_range,
    parse_program,
)
from autoresearch_operator.core.records import (
    Proposal,
    ProposalContext,
    ProposalRejected,
    TokenUsage,
)

_NUMBER = r"[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][-+]?\d+)?"
_KNOB = re.compile(
    rf"^(?P<name>[A-Z][A-Z0-9_]*)\s*=\s*(?P<value>2\s*\*\*\s*\d+|{_NUMBER})\s*(?:#.*)?$"
)
# Changing these wastes a run or games it: seeding, the time budget and what counts towards it,
# evaluation, the tokenizer, logging.
FROZEN_NAME_PARTS = ("SEED", "BUDGET", "STARTUP", "EVAL", "VOCAB", "LOG_")
# Betas and momenta live just below 1: scale their distance from 1 instead of the value.
NEAR_ONE_NAME_PARTS = ("BETA", "MOMENTUM", "EMA")
DEFAULT_STRATEGY = Strategy()


@dataclass(frozen=True)
class Knob:
    name: str
    line: int  # 0-based line index in train.py
    start: int  # span of the value text within that line
    end: int
    text: str  # the value as written, e.g. "0.04", "8", "2**19"

    @property
    def kind(self) -> str:
        if "**" in self.text:
            return "pow2"
        if any(c in self.text for c in ".eE"):
            return "float"
        return "int"


def find_knobs(source: str) -> list[Knob]:
    """Every module-level `NAME = number` line, in file order."""
    knobs = []
    for index, line in enumerate(source.splitlines()):
        found = _KNOB.match(line)
        if found:
            knobs.append(
                Knob(
                    found.group("name"),
                    index,
                    found.start("value"),
                    found.end("value"),
                    found.group("value"),
                )
            )
    return knobs


def mutable_knobs(source: str) -> list[Knob]:
    """The knobs worth perturbing: not frozen by name, and not zero (scaling zero changes nothing)."""
    return [
        k
        for k in find_knobs(source)
        if not any(part in k.name for part in FROZEN_NAME_PARTS)
        and (k.kind == "pow2" or float(k.text) != 0)
    ]


def candidate_knobs(source: str, strategy: Strategy = DEFAULT_STRATEGY) -> list[Knob]:
    """The mutable knobs the strategy lets a candidate change, in file order."""
    knobs = mutable_knobs(source)
    if not knobs:
        raise CandidateError("train.py has no module-level numeric knobs (NAME = number) to mutate")
    allowed = [
        k
        for k in knobs
        if (not strategy.explore or any(fnmatchcase(k.name, g) for g in strategy.explore))
        and not any(fnmatchcase(k.name, g) for g in strategy.avoid)
    ]
    if not allowed:
        globs = [f"explore {list(strategy.explore)}"] if strategy.explore else []
        globs += [f"avoid {list(strategy.avoid)}"] if strategy.avoid else []
        raise CandidateError(
            f"program.md front-matter {' and '.join(globs)} leaves no knob of train.py to change; "
            f"knobs: {', '.join(k.name for k in knobs)}"
        )
    return allowed


def mutate_value(knob: Knob, rng: random.Random, step: float = 1.0) -> str:
    """A new literal for the knob, always different from the old one; `step` scales the change."""
    if knob.kind == "pow2":
        exponent = int(knob.text.split("**")[1])
        doublings = _doublings(step)
        new = exponent + (rng.choice((-1, 1)) if exponent > 0 else 1) * doublings
        return f"2**{new if new >= 0 else exponent + doublings}"
    if knob.kind == "int":
        return str(_mutate_int(int(knob.text), rng, step))
    return _mutate_float(knob.name, knob.text, rng, step)


def _doublings(step: float) -> int:
    """How many doublings one change of a power of two makes: step rounded half up, at least 1."""
    return max(1, math.floor(step + 0.5))


def _mutate_int(value: int, rng: random.Random, step: float = 1.0) -> int:
    magnitude = abs(value)
    if magnitude > 16 and magnitude & (magnitude - 1) == 0:  # a power of two: stay on them
        factor = 2 ** _doublings(step)
        new = value * factor if rng.random() < 0.5 else value // factor
    else:
        size = (
            max(1, round(rng.choice((1, 2)) * step))
            if magnitude <= 16
            else max(1, round(magnitude * 0.25 * step))
        )
        new = value + size * rng.choice((-1, 1))
    if value > 0 and new < 1:
        new = value + abs(new - value)  # never below 1: go up instead
    return new if new != value else value + 1


def _mutate_float(name: str, text: str, rng: random.Random, step: float = 1.0) -> str:
    value = float(text)
    near_one = any(part in name for part in NEAR_ONE_NAME_PARTS) and 0 < value < 1
    is_fraction = ("RATIO" in name or "FRAC" in name) and 0 < value <= 1
    digits = min(4, max(2, _significant_digits(text)))
    direction = rng.choice((-1.0, 1.0))
    magnitude = rng.uniform(*log_factor_range(step))
    for sign in (direction, -direction):  # if one way is clamped or invalid, go the other
        factor = math.exp(sign * magnitude)
        if near_one:  # 0.95 -> 1 - 0.05 * factor, computed in decimal so it prints as 0.93
            new = float(Decimal(1) - Decimal(f"{(1 - value) * factor:.2g}"))
        else:
            new = float(f"{value * factor:.{digits}g}")
        if is_fraction:
            new = min(new, 1.0)
        if new != value and (not near_one or 0 < new < 1):
            return repr(new)
    return repr(value * 0.5)


def _significant_digits(text: str) -> int:
    mantissa = re.split(r"[eE]", text.lstrip("+-"))[0].replace("_", "").replace(".", "")
    return len(mantissa.lstrip("0")) or 1


def mutate_source(
    source: str, seed: int, experiment: int, strategy: Strategy | None = None
) -> tuple[str, str]:
    """Return (description, new_source); the same arguments always give the same result."""
    strategy = strategy or DEFAULT_STRATEGY
    knobs = candidate_knobs(source, strategy)
    rng = random.Random(f"mutate:{seed}:{experiment}")
    chosen = rng.sample(knobs, _knob_count(len(knobs), strategy, rng))
    step = strategy.change_size()
    lines = source.splitlines(keepends=True)
    changes = []
    for knob in chosen:
        new_text = mutate_value(knob, rng, step)
        line = lines[knob.line]
        lines[knob.line] = line[: knob.start] + new_text + line[knob.end :]
        changes.append(f"{knob.name} {knob.text} -> {new_text}")
    return "mutate: " + ", ".join(changes), "".join(lines)


def _knob_count(available: int, strategy: Strategy, rng: random.Random) -> int:
    """How many knobs this candidate changes; the default draws one number, as it always did."""
    if strategy.risk == "low":
        return 1
    if strategy.changes is None:
        count = 2 if available >= 2 and rng.random() < TWO_KNOB_PROBABILITY else 1
    else:
        count = strategy.changes
    if strategy.risk == "high" and rng.random() < EXTRA_KNOB_PROBABILITY:
        count += 1
    return min(count, available)


class MutateProposer:
    """Offline, deterministic proposer: the baseline every other proposer is compared against."""

    name = "mutate"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def propose(self, ctx: ProposalContext) -> Proposal:
        try:
            strategy = parse_program(ctx.program).strategy
        except ProgramError as error:  # recorded as a rejected proposal, never a crashed loop
            raise ProposalRejected(str(error), TokenUsage()) from error
        try:
            description, train_py = mutate_source(
                ctx.best_train_py, self.seed, ctx.experiment, strategy
            )
            validate_candidate(train_py, ctx.best_train_py)
        except CandidateError as error:
            raise ProposalRejected(error.reason, TokenUsage()) from error
        return Proposal(description=description, train_py=train_py, usage=TokenUsage())
