"""The mutate proposer: deterministic, changes one or two knobs sensibly, never a frozen one, and
obeys the strategy in program.md's front-matter."""

from __future__ import annotations

import hashlib
import math
import re
import statistics
from pathlib import Path

import pytest

from autoresearch_operator.core.program import Strategy, render_program
from autoresearch_operator.core.records import ProposalContext, ProposalRejected
from autoresearch_operator.proposers import (
    MutateProposer,
    ProposerConfigError,
    ProposerSettings,
    make_proposer,
    mutate_source,
)
from autoresearch_operator.proposers.mutate import find_knobs, mutable_knobs

EXPERIMENTS = range(1, 201)


def context(train_py: str, experiment: int, program: str = "") -> ProposalContext:
    return ProposalContext(
        org="demo",
        experiment=experiment,
        program=program,
        best_train_py=train_py,
        best_val_bpb=1.0,
    )


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    old_lines, new_lines = old.splitlines(), new.splitlines()
    assert len(old_lines) == len(new_lines)
    return [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]


def knob_value(line: str) -> str:
    return line.split("=", 1)[1].split("#", 1)[0].strip()


def test_finds_module_level_numeric_knobs_only(train_py: str) -> None:
    names = [k.name for k in find_knobs(train_py)]
    assert names[:4] == ["DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE"]
    assert "ADAM_BETAS" not in names  # a tuple, not a number
    mutable = {k.name for k in mutable_knobs(train_py)}
    assert "SEED" not in mutable and "WARMUP_RATIO" not in mutable  # frozen, and zero
    assert {"MATRIX_LR", "DEPTH", "TOTAL_BATCH_SIZE"} <= mutable


def test_same_seed_and_experiment_give_the_same_candidate(train_py: str) -> None:
    first = MutateProposer(seed=3).propose(context(train_py, 7))
    again = MutateProposer(seed=3).propose(context(train_py, 7))
    assert (first.description, first.train_py) == (again.description, again.train_py)


def test_different_experiments_and_seeds_explore_different_changes(train_py: str) -> None:
    by_experiment = {mutate_source(train_py, 0, n)[0] for n in range(1, 21)}
    by_seed = {mutate_source(train_py, s, 1)[0] for s in range(20)}
    assert len(by_experiment) > 10 and len(by_seed) > 10


def test_changes_one_or_two_knob_values_and_keeps_their_comments(train_py: str) -> None:
    counts = set()
    for experiment in EXPERIMENTS:
        proposal = MutateProposer(seed=0).propose(context(train_py, experiment))
        changes = changed_lines(train_py, proposal.train_py)
        counts.add(len(changes))
        for old, new in changes:
            name = old.split("=")[0].strip()
            assert new.split("=")[0].strip() == name
            assert old.split("#")[1] == new.split("#")[1]
            assert f"{name} {knob_value(old)} -> {knob_value(new)}" in proposal.description
        assert proposal.description.startswith("mutate: ")
        assert proposal.usage.total == 0
    assert counts == {1, 2}


def assert_sensible_change(name: str, before: str, after: str) -> None:
    assert not any(part in name for part in ("SEED", "WARMUP", "LOG_EVERY", "STARTUP"))
    if "**" in before:
        assert abs(int(after.split("**")[1]) - int(before.split("**")[1])) == 1
    elif re.fullmatch(r"\d+", before):
        assert re.fullmatch(r"\d+", after) and int(after) >= 1
        assert 0.5 <= int(after) / int(before) <= 2
    elif "BETA" in name or "MOMENTUM" in name:  # the distance from 1 is what gets scaled
        assert 0 < float(after) < 1
        ratio = (1 - float(after)) / (1 - float(before))
        assert 0.45 <= ratio <= 2.1 and abs(ratio - 1) > 0.05
    else:
        assert re.fullmatch(r"[\d.e-]+", after) and ("." in after or "e" in after)
        ratio = float(after) / float(before)
        assert 0.45 <= ratio <= 2.1 and abs(ratio - 1) > 0.05
        if "RATIO" in name or "FRAC" in name:
            assert float(after) <= 1.0
    assert len(after) <= 8, after  # printed like a person would write it


def test_values_move_within_a_sensible_range(train_py: str) -> None:
    names = set()
    for experiment in EXPERIMENTS:
        _, new_source = mutate_source(train_py, 1, experiment)
        for old, new in changed_lines(train_py, new_source):
            name = old.split("=")[0].strip()
            names.add(name)
            assert_sensible_change(name, knob_value(old), knob_value(new))
    assert {"MUON_MOMENTUM", "ADAM_BETA2", "WARMDOWN_RATIO", "TOTAL_BATCH_SIZE"} <= names


def test_real_trainer_mutates_into_valid_candidates() -> None:
    path = Path(__file__).parents[2] / "trainer-image" / "train.py"
    if not path.exists():
        pytest.skip("trainer-image/train.py is not there yet")
    source = path.read_text()
    assert len(mutable_knobs(source)) >= 10
    for experiment in EXPERIMENTS:
        proposal = MutateProposer(seed=0).propose(context(source, experiment))  # validates
        for old, new in changed_lines(source, proposal.train_py):
            assert_sensible_change(old.split("=")[0].strip(), knob_value(old), knob_value(new))


def test_small_ints_never_drop_below_one() -> None:
    source = "N_LAYERS = 1  # layers\n"
    values = {knob_value(mutate_source(source, 0, n)[1]) for n in EXPERIMENTS}
    assert values <= {"2", "3"}


def test_source_without_knobs_is_rejected() -> None:
    source = "def main():\n    LR = 0.1  # indented, so not a module-level knob\n"
    with pytest.raises(ProposalRejected, match="no module-level numeric knobs"):
        MutateProposer().propose(context(source, 1))


def test_factory_builds_mutate_from_camel_case_settings() -> None:
    proposer = make_proposer({"type": "mutate", "seed": 5, "apiKeySecretRef": {"name": "x"}})
    assert isinstance(proposer, MutateProposer) and proposer.seed == 5


def test_settings_accept_camel_case_mappings_and_snake_case_objects() -> None:
    settings = ProposerSettings.from_mapping(
        {
            "type": "openai",
            "model": "m",
            "baseURL": "http://h/v1",
            "apiKeyEnv": "K",
            "maxTokens": 900,
            "timeoutSeconds": 30,
            "maxRetries": 2,
            "temperature": 0.7,
        }
    )
    assert (settings.base_url, settings.api_key_env, settings.max_tokens) == (
        "http://h/v1",
        "K",
        900,
    )

    class Spec:  # what a pydantic model exposes
        type = "openai"
        model = "m"
        base_url = "http://h/v1"
        api_key_env = "K"
        max_tokens = 900
        timeout_seconds = 30
        max_retries = 2
        temperature = 0.7
        seed = None

    assert ProposerSettings.coerce(Spec()) == settings


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "claude"}, "proposer.type is 'claude'"),
        ({"type": "openai"}, "proposer.model is required"),
        ({"type": "mutate", "maxTokenz": 3}, "unknown proposer setting 'maxTokenz'"),
        ({"type": "openai", "model": "m", "maxRetries": -1}, "proposer.maxRetries"),
    ],
)
def test_bad_settings_fail_naming_the_setting(data: dict[str, object], message: str) -> None:
    with pytest.raises(ProposerConfigError, match=re.escape(message)):
        make_proposer(data)


# -- the strategy in program.md's front-matter -------------------------------------------------

# Candidates the mutate proposer made before strategies existed: recorded runs replay them.
RECORDED = {
    (0, 1): "mutate: ASPECT_RATIO 64 -> 128",
    (0, 2): "mutate: WEIGHT_DECAY 0.2 -> 0.13",
    (0, 6): "mutate: SCALAR_LR 0.5 -> 0.81, DEPTH 8 -> 10",
    (0, 8): "mutate: TOTAL_BATCH_SIZE 2**19 -> 2**20, MATRIX_LR 0.04 -> 0.021",
    (0, 10): "mutate: ADAM_BETA2 0.95 -> 0.921, DEVICE_BATCH_SIZE 128 -> 64",
    (0, 13): "mutate: FINAL_LR_FRAC 0.1 -> 0.13",
    (1, 7): "mutate: EMBEDDING_LR 0.6 -> 0.86, DEVICE_BATCH_SIZE 128 -> 256",
    (3, 7): "mutate: HEAD_DIM 128 -> 64",
    (5, 42): "mutate: MUON_MOMENTUM 0.95 -> 0.974, WARMDOWN_RATIO 0.5 -> 0.93",
}
# sha256 over (description + source) of seed 0, experiments 1..200, on the conftest TRAIN_PY
RECORDED_DIGEST = "66a0c3f672f53dac9360caa82f56dac33727df8d240c7280bdbeac5c6fdbce73"
EXPERIMENTS_PER_STRATEGY = range(1, 51)


def changed_knobs(description: str) -> list[tuple[str, str, str]]:
    """(name, old, new) of each change in 'mutate: NAME a -> b, ...'."""
    found = re.findall(r"([A-Z][A-Z0-9_]*) (\S+) -> ([^,]+)", description)
    assert found, description
    return found


def candidates(train_py: str, strategy: Strategy | None) -> list[list[tuple[str, str, str]]]:
    return [
        changed_knobs(mutate_source(train_py, 0, n, strategy)[0]) for n in EXPERIMENTS_PER_STRATEGY
    ]


@pytest.mark.parametrize("strategy", [None, Strategy(), Strategy(explore=("*",))])
def test_the_default_strategy_replays_the_recorded_candidates(
    train_py: str, strategy: Strategy | None
) -> None:
    for (seed, experiment), description in RECORDED.items():
        assert mutate_source(train_py, seed, experiment, strategy)[0] == description
    digest = hashlib.sha256()
    for experiment in EXPERIMENTS:
        description, source = mutate_source(train_py, 0, experiment, strategy)
        digest.update(description.encode() + source.encode())
    assert digest.hexdigest() == RECORDED_DIGEST


def test_explore_changes_only_the_matching_knobs(train_py: str) -> None:
    names = {name for c in candidates(train_py, Strategy(explore=("*LR*",))) for name, _, _ in c}
    assert names == {"EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "FINAL_LR_FRAC"}
    default = {name for c in candidates(train_py, None) for name, _, _ in c}
    assert len(default - names) >= 5


def test_avoid_wins_over_explore(train_py: str) -> None:
    strategy = Strategy(explore=("*_LR", "DEPTH"), avoid=("MATRIX_*", "DEPTH"))
    names = {name for c in candidates(train_py, strategy) for name, _, _ in c}
    assert names == {"EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR"}


def test_changes_sets_how_many_knobs_each_candidate_changes(train_py: str) -> None:
    for changes in (1, 3, 4):
        counts = {len(c) for c in candidates(train_py, Strategy(changes=changes))}
        assert counts == {changes}
    only_two = Strategy(explore=("MATRIX_LR", "SCALAR_LR"), changes=4)  # capped by the knobs
    assert {len(c) for c in candidates(train_py, only_two)} == {2}


def float_log_factors(train_py: str, strategy: Strategy) -> list[float]:
    return [
        abs(math.log(float(new) / float(old)))
        for c in candidates(train_py, strategy)
        for _, old, new in c
    ]


def median_float_log_factor(train_py: str, strategy: Strategy) -> float:
    return statistics.median(float_log_factors(train_py, strategy))


def test_step_scales_how_far_a_float_moves(train_py: str) -> None:
    floats = ("*_LR", "WEIGHT_DECAY")  # plain floats, neither near one nor clamped at 1
    small = float_log_factors(train_py, Strategy(explore=floats, step=0.5))
    default = float_log_factors(train_py, Strategy(explore=floats))
    large = float_log_factors(train_py, Strategy(explore=floats, step=2))
    assert 1.5 < statistics.median(default) / statistics.median(small) < 2.5
    assert 1.5 < statistics.median(large) / statistics.median(default) < 2.5
    rounding = 0.03  # values are printed with two to four significant digits
    assert max(small) <= math.log(2**0.5) + rounding  # a factor of 1.07 to 1.41
    assert min(large) >= math.log(1.15**2) - rounding  # a factor of 1.32 to 4


def test_step_scales_how_far_ints_and_powers_of_two_move(train_py: str) -> None:
    def moves(step: float, knob: str) -> set[tuple[str, str]]:
        strategy = Strategy(explore=(knob,), step=step)
        return {(old, new) for c in candidates(train_py, strategy) for _, old, new in c}

    assert moves(0.5, "DEPTH") == {("8", "7"), ("8", "9")}
    assert moves(2, "DEPTH") == {("8", "6"), ("8", "10"), ("8", "4"), ("8", "12")}
    assert moves(1, "DEVICE_BATCH_SIZE") == {("128", "64"), ("128", "256")}
    assert moves(2, "DEVICE_BATCH_SIZE") == {("128", "32"), ("128", "512")}
    assert moves(2, "TOTAL_BATCH_SIZE") == {("2**19", "2**17"), ("2**19", "2**21")}


def test_low_risk_changes_one_knob_by_no_more_than_the_default_step(train_py: str) -> None:
    bold = Strategy(explore=("*_LR",), step=4, changes=3)
    careful = bold.model_copy(update={"risk": "low"})
    assert {len(c) for c in candidates(train_py, careful)} == {1}
    assert median_float_log_factor(train_py, careful) < math.log(2)
    assert median_float_log_factor(train_py, bold) > math.log(2**2)


def test_high_risk_sometimes_changes_one_knob_more(train_py: str) -> None:
    counts = [len(c) for c in candidates(train_py, Strategy(changes=2, risk="high"))]
    assert set(counts) == {2, 3} and 5 <= counts.count(3) <= 30  # 30% of 50


def test_globs_that_leave_no_knob_are_rejected_naming_the_front_matter(train_py: str) -> None:
    program = render_program(Strategy(explore=("FOO*",)), "prose")
    with pytest.raises(ProposalRejected) as caught:
        MutateProposer().propose(context(train_py, 1, program))
    assert caught.value.reason.startswith(
        "program.md front-matter explore ['FOO*'] leaves no knob of train.py to change; "
        "knobs: DEPTH, ASPECT_RATIO,"
    )
    program = render_program(Strategy(explore=("*_LR",), avoid=("*",)), "prose")
    with pytest.raises(ProposalRejected, match=re.escape("explore ['*_LR'] and avoid ['*']")):
        MutateProposer().propose(context(train_py, 1, program))


def test_the_proposer_follows_the_front_matter_of_its_program(train_py: str) -> None:
    program = "---\nexplore: ['WEIGHT_DECAY']\nstep: 0.5\n---\n\nTune the weight decay.\n"
    proposal = MutateProposer(seed=4).propose(context(train_py, 9, program))
    [(name, old, new)] = changed_knobs(proposal.description)
    assert name == "WEIGHT_DECAY" and 1.05 <= max(float(new) / 0.2, 0.2 / float(new)) <= 1.42
    assert proposal.description.startswith("mutate: WEIGHT_DECAY 0.2 -> ")
    prose_only = MutateProposer(seed=4).propose(context(train_py, 9, "Tune the weight decay.\n"))
    assert prose_only.description == mutate_source(train_py, 4, 9)[0]


def test_a_bad_front_matter_is_a_rejected_proposal_naming_the_field(train_py: str) -> None:
    with pytest.raises(ProposalRejected, match=re.escape("program.md front-matter: step:")):
        MutateProposer().propose(context(train_py, 1, "---\nstep: -1\n---\nprose\n"))
