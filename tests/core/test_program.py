"""program.md front-matter: a prose-only program keeps the default strategy, a bad field is named,
and render_program writes what parse_program reads back."""

from __future__ import annotations

import math
import re

import pytest

from autoresearch_operator.core.program import (
    ProgramError,
    Strategy,
    log_factor_range,
    parse_program,
    render_program,
)

PROSE = "# Program\n\nTry one idea at a time.\n"


def test_a_program_of_prose_only_has_the_default_strategy_and_is_all_prose():
    for text in (
        PROSE,
        "",
        "\n---\nstep: 2\n---\n",  # the fence must be the first line
        "# Title\n---\nstep: 2\n---\n",
        "Runs end with a summary block:\n---\nval_bpb: 1.0\n",
    ):
        program = parse_program(text)
        assert program.strategy == Strategy() and program.strategy.is_default()
        assert (program.prose, program.front_matter) == (text, {})


def test_front_matter_sets_the_strategy_and_the_prose_follows_it():
    text = (
        "---\n"
        "name: lr-only\n"
        "explore: ['*_LR']\n"
        "avoid: [SCALAR_LR]\n"
        "step: 2\n"
        "changes: 3\n"
        "risk: high\n"
        "notes: |\n  bred in round 2\n"
        "---\n"
        "\n" + PROSE
    )
    program = parse_program(text)
    assert program.strategy == Strategy(
        explore=("*_LR",), avoid=("SCALAR_LR",), step=2.0, changes=3, risk="high"
    )
    assert program.prose == PROSE
    assert program.front_matter["name"] == "lr-only"
    assert program.front_matter["notes"] == "bred in round 2\n"


def test_an_empty_front_matter_and_a_single_glob_are_accepted():
    assert parse_program("---\n---\nprose").strategy == Strategy()
    assert parse_program("---\nexplore: '*_LR'\n---\n").strategy.explore == ("*_LR",)


@pytest.mark.parametrize(
    ("front_matter", "message"),
    [
        ("step: -1", "program.md front-matter: step: Input should be greater than 0 (got -1)"),
        ("step: 5", "step: Input should be less than or equal to 4 (got 5)"),
        ("changes: 0", "changes: Input should be greater than or equal to 1 (got 0)"),
        ("changes: 2.5", "changes: Input should be a valid integer"),
        ("risk: High", "risk: Input should be 'low', 'medium' or 'high' (got 'High')"),
        ("explore: 3", "explore: Input should be a list of globs (got 3)"),
        ("avoid: ['*_lr']", "avoid: '*_lr' has lower-case letters, so it matches nothing"),
        ("explore: ['']", "explore: a glob is empty"),
        ("stepp: 2", "stepp: unknown field; the fields are explore, avoid, step, changes, risk"),
        ("name: 3", "name: must be text (got 3)"),
        ("- step: 2", "must be a mapping of 'field: value' lines, got list"),
        ("step: [2", "not valid YAML"),
    ],
)
def test_a_bad_front_matter_fails_naming_the_field(front_matter: str, message: str):
    with pytest.raises(ProgramError, match=re.escape(message)):
        parse_program(f"---\n{front_matter}\n---\n{PROSE}")


def test_a_front_matter_that_is_never_closed_fails_instead_of_being_read_as_prose():
    with pytest.raises(ProgramError, match="no closing '---'"):
        parse_program("---\nstep: 2\n# Program\n")


def test_render_writes_only_the_fields_that_differ_in_a_stable_order():
    strategy = Strategy(risk="low", step=0.5, explore=("*_LR",))
    text = render_program(strategy, PROSE, {"notes": "round 2", "name": "careful"})
    assert text == (
        "---\nname: careful\nexplore: ['*_LR']\nstep: 0.5\nrisk: low\nnotes: round 2\n---\n\n"
        + PROSE
    )


@pytest.mark.parametrize(
    "strategy",
    [
        Strategy(),
        Strategy(explore=("*_LR", "WARMDOWN_RATIO"), avoid=("SCALAR_LR",)),
        Strategy(step=0.25, changes=4, risk="high"),
        Strategy(step=4.0, changes=1, risk="low"),
    ],
)
@pytest.mark.parametrize("prose", [PROSE, "", "\n\nleading blank lines\n", "---\nlooks fenced\n"])
def test_parse_reads_back_what_render_writes(strategy: Strategy, prose: str):
    extra = {"name": "x", "notes": "bred in round 2:\n---\nfrom a and b\n"}
    program = parse_program(render_program(strategy, prose, extra))
    assert (program.strategy, program.prose) == (strategy, prose)
    assert {k: program.front_matter[k] for k in extra} == extra
    program = parse_program(render_program(strategy, prose))
    assert (program.strategy, program.prose) == (strategy, prose)


def test_the_default_strategy_renders_as_the_prose_alone():
    assert render_program(Strategy(), PROSE) == PROSE


def test_render_refuses_extra_keys_that_parse_would_reject():
    with pytest.raises(ProgramError, match="step: unknown field"):
        render_program(Strategy(), PROSE, {"step": 2})


def test_describe_says_one_sentence_per_field_that_differs():
    assert Strategy().describe() == []
    sentences = Strategy(
        explore=("*_LR",), avoid=("SCALAR_LR",), step=2.0, changes=3, risk="low"
    ).describe()
    assert sentences == [
        "Change only knobs matching *_LR.",
        "Never change knobs matching SCALAR_LR.",
        "Make each change 2 times the default size: scale a float by 1.32 to 4.00 "
        "(default 1.15 to 2), move an integer proportionally.",
        "Change exactly 3 knobs per experiment.",
        "Play safe: change one knob at a time, by no more than the default step.",
    ]
    assert Strategy(risk="high").describe() == [
        "Take risks: now and then change one knob more than asked."
    ]


def test_every_strategy_field_is_documented():
    for name, field in Strategy.model_fields.items():
        assert field.description and len(field.description) > 40, name


def test_low_risk_caps_the_step_and_the_float_range_scales_with_it():
    assert Strategy(step=3, risk="low").change_size() == 1.0
    assert Strategy(step=0.5, risk="low").change_size() == 0.5
    assert Strategy(step=3, risk="high").change_size() == 3.0
    assert log_factor_range(1.0) == (math.log(1.15), math.log(2.0))
    low, high = log_factor_range(2.0)
    assert (low, high) == pytest.approx((2 * math.log(1.15), 2 * math.log(2.0)))
    assert log_factor_range(0.01) == (math.log(1.05), math.log(1.05))  # rounding would eat less
