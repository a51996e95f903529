"""The mutate proposer: deterministic, changes one or two knobs sensibly, never a frozen one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def context(train_py: str, experiment: int) -> ProposalContext:
    return ProposalContext(
        org="demo", experiment=experiment, program="", best_train_py=train_py, best_val_bpb=1.0
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
