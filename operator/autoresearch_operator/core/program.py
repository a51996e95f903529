"""program.md: optional YAML front-matter of structured strategy, then prose for a researcher.

    ---
    name: conservative
    explore: ['*_LR', '*_RATIO']
    step: 0.5
    changes: 1
    ---

    # Prose instructions ...

Every proposer reads the strategy: the offline `mutate` proposer obeys it literally, an LLM
proposer sees it in its prompt, the meta-proposers breed it. A program.md that does not start
with a `---` line is all prose and has the default strategy. docs/program-front-matter.md
explains each field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

FENCE = "---"
# Allowed beside the strategy fields; no proposer acts on them.
IGNORED_KEYS = ("name", "description", "notes")
WHERE = "program.md front-matter"
# One change of a float at step 1 scales it by a factor between these, up or down (smaller ones
# are lost in run-to-run noise); a step scales both logs, but never below the floor, where
# rounding to a few digits would eat the change.
MIN_FACTOR, MAX_FACTOR, FLOOR_FACTOR = 1.15, 2.0, 1.05
TWO_KNOB_PROBABILITY = 0.3  # changes unset: how often a candidate changes two knobs, not one
EXTRA_KNOB_PROBABILITY = 0.3  # risk high: how often a candidate changes one knob more


class ProgramError(ValueError):
    """The front-matter of a program.md does not parse; the message names the bad field."""


class Strategy(BaseModel):
    """How an org searches, in fields a program can be compared and bred by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    explore: tuple[str, ...] = Field(
        default=(),
        description="Globs (fnmatch, case-sensitive) of the UPPER_CASE knobs of train.py to "
        "change, e.g. ['*_LR', 'WARMDOWN_RATIO']. Empty: any knob the proposer may change.",
    )
    avoid: tuple[str, ...] = Field(
        default=(),
        description="Globs of knobs never to change; a knob matching both explore and avoid is "
        "avoided.",
    )
    step: float = Field(
        default=1.0,
        gt=0,
        le=4,
        description="The size of one change, 1 = the default. mutate scales a float by a factor "
        f"between {MIN_FACTOR:g}**step and {MAX_FACTOR:g}**step (never below {FLOOR_FACTOR:g}), "
        "up or down; ints move about step times as far and powers of two by step doublings "
        "(rounded, at least one).",
    )
    changes: int | None = Field(
        default=None,
        ge=1,
        le=4,
        description="How many knobs one candidate changes (at most as many as there are). "
        f"Unset: one, and two in {TWO_KNOB_PROBABILITY:.0%} of candidates.",
    )
    risk: Literal["low", "medium", "high"] = Field(
        default="medium",
        description="low: one knob per candidate and step at most 1, whatever changes and step "
        f"say. medium: changes and step as set. high: {EXTRA_KNOB_PROBABILITY:.0%} of candidates "
        "change one knob more.",
    )

    @field_validator("explore", "avoid", mode="before")
    @classmethod
    def _one_glob_is_a_list(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @field_validator("explore", "avoid")
    @classmethod
    def _globs_can_match(cls, globs: tuple[str, ...]) -> tuple[str, ...]:
        for glob in globs:
            if not glob.strip():
                raise ValueError("a glob is empty")
            if glob != glob.upper():
                raise ValueError(
                    f"{glob!r} has lower-case letters, so it matches nothing: knob names are "
                    "UPPER_CASE"
                )
        return globs

    def is_default(self) -> bool:
        return self == Strategy()

    def as_front_matter(self) -> dict[str, Any]:
        """The fields that differ from the default, in declaration order, as plain YAML values."""
        default = Strategy()
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name in type(self).model_fields
            if (value := getattr(self, name)) != getattr(default, name)
        }

    def describe(self) -> list[str]:
        """One plain-English sentence per field that differs from the default."""
        sentences = []
        if "*" in self.explore:
            sentences.append("Any knob may change.")
        elif self.explore:
            sentences.append(f"Change only knobs matching {', '.join(self.explore)}.")
        if self.avoid:
            sentences.append(f"Never change knobs matching {', '.join(self.avoid)}.")
        if self.step != 1.0:
            low, high = (math.exp(f) for f in log_factor_range(self.step))
            sentences.append(
                f"Make each change {self.step:g} times the default size: scale a float by "
                f"{low:.2f} to {high:.2f} (default {MIN_FACTOR:g} to {MAX_FACTOR:g}), "
                "move an integer proportionally."
            )
        if self.changes is not None:
            plural = "" if self.changes == 1 else "s"
            sentences.append(f"Change exactly {self.changes} knob{plural} per experiment.")
        if self.risk == "low":
            sentences.append(
                "Play safe: change one knob at a time, by no more than the default step."
            )
        elif self.risk == "high":
            sentences.append("Take risks: now and then change one knob more than asked.")
        return sentences

    def change_size(self) -> float:
        """The step a change really takes: risk low caps it at the default."""
        return min(self.step, 1.0) if self.risk == "low" else self.step


def log_factor_range(step: float) -> tuple[float, float]:
    """The smallest and largest |log factor| one change of size `step` scales a float by."""
    low = max(math.log(FLOOR_FACTOR), math.log(MIN_FACTOR) * step)
    return low, max(low, math.log(MAX_FACTOR) * step)


@dataclass(frozen=True)
class Program:
    strategy: Strategy
    prose: str  # the markdown after the front-matter (the whole text when there is none)
    front_matter: dict[str, Any]  # the raw mapping ({} when none)


def parse_program(text: str) -> Program:
    """Split a program.md into its strategy and prose; a bad front-matter raises ProgramError."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != FENCE:
        return Program(Strategy(), text, {})
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == FENCE), None)
    if end is None:
        raise ProgramError(f"{WHERE}: the first line is '{FENCE}' but no closing '{FENCE}' follows")
    rest = lines[end + 1 :]
    if rest and not rest[0].strip():
        rest = rest[1:]  # the blank line that render_program writes after the front-matter
    mapping = _load_mapping("".join(lines[1:end]))
    return Program(_strategy(mapping), "".join(rest), mapping)


def render_program(strategy: Strategy, prose: str, extra: dict[str, Any] | None = None) -> str:
    """The program.md for a strategy and prose; `extra` holds ignored keys (name, notes, ...)."""
    extra = extra or {}
    unknown = sorted(set(extra) - set(IGNORED_KEYS))
    if unknown:
        raise ProgramError(f"{WHERE}: {unknown[0]}: {_unknown_key_message()}")
    fields: dict[str, Any] = {k: extra[k] for k in ("name", "description") if k in extra}
    fields |= strategy.as_front_matter()
    fields |= {k: v for k, v in extra.items() if k not in fields}
    if not fields and not prose.startswith(FENCE):  # a prose-only program stays prose only
        return prose
    return f"{FENCE}\n{front_matter_yaml(fields) if fields else ''}{FENCE}\n\n{prose}"


class _FrontMatterDumper(yaml.SafeDumper):
    """Block style for the mapping, one line per list of globs, a text block for multi-line notes."""

    def represent_flow_list(self, data: list[Any]) -> yaml.Node:
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    def represent_block_text(self, data: str) -> yaml.Node:
        style = "|" if "\n" in data else None
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_FrontMatterDumper.add_representer(list, _FrontMatterDumper.represent_flow_list)
_FrontMatterDumper.add_representer(str, _FrontMatterDumper.represent_block_text)


def front_matter_yaml(fields: dict[str, Any]) -> str:
    """Front-matter fields as YAML lines, in the given order, lists of globs on one line."""
    return yaml.dump(
        fields,
        Dumper=_FrontMatterDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
    )


def _load_mapping(block: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(block)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 2} of program.md)" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ProgramError(f"{WHERE}: not valid YAML: {problem}{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ProgramError(
            f"{WHERE}: must be a mapping of 'field: value' lines, got {type(loaded).__name__}"
        )
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise ProgramError(f"{WHERE}: {key!r}: field names are text")
        if key in IGNORED_KEYS and not isinstance(value, str):
            raise ProgramError(f"{WHERE}: {key}: must be text (got {value!r})")
    return loaded


def _strategy(mapping: dict[str, Any]) -> Strategy:
    try:
        return Strategy.model_validate({k: v for k, v in mapping.items() if k not in IGNORED_KEYS})
    except ValidationError as err:
        raise ProgramError(f"{WHERE}: " + "; ".join(_format(e) for e in err.errors())) from None


def _format(error: Any) -> str:
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])[1:]
    if error["type"] == "extra_forbidden":
        return f"{field}: {_unknown_key_message()}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "tuple_type":
        message = "Input should be a list of globs"
    return f"{field}: {message} (got {error['input']!r})"


def _unknown_key_message() -> str:
    known = ", ".join([*Strategy.model_fields, *IGNORED_KEYS])
    return f"unknown field; the fields are {known}"
