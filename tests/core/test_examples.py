"""Every example org loads locally, and the example contest compares like with like."""

from pathlib import Path

import pytest

from autoresearch_operator.contest_spec import load_contest, org_spec
from autoresearch_operator.core.program import Strategy, parse_program
from autoresearch_operator.proposers.mutate import mutate_source
from autoresearch_operator.spec import load_orgs

EXAMPLES = Path(__file__).resolve().parents[2] / "program-examples"


@pytest.mark.parametrize("name", ["baseline", "conservative", "explorer", "random-search"])
def test_each_example_org_loads_with_its_program(name: str):
    [org] = load_orgs(EXAMPLES / name / "org.yaml")
    assert org.name == name
    assert org.program_text == (EXAMPLES / name / "program.md").read_text()
    assert org.spec.programRef is not None and org.spec.programRef.name == f"{name}-program"


def test_contest_runs_the_four_programs_under_identical_terms():
    contest, programs = load_contest(EXAMPLES / "contest.yaml")
    names = [e.name for e in contest.spec.entrants]
    assert names == ["baseline", "conservative", "explorer", "random-search"]
    for name in names:  # locally each programRef is read from the entrant's own folder
        assert programs[name] == (EXAMPLES / name / "program.md").read_text()
        assert contest.spec.entrants[names.index(name)].programRef.name == f"{name}-program"
    specs = [org_spec(contest, name, programs[name], "0" * 40) for name in names]
    shared = [{k: v for k, v in s.items() if k not in ("program", "proposer")} for s in specs]
    assert all(s == shared[0] for s in shared)
    assert {s["proposer"]["type"] for s in specs} == {"openai", "mutate"}
    assert contest.spec.rounds == 2 and contest.spec.meta.proposer.type == "evolve"


def test_the_gpu_hour_caps_leave_room_for_every_experiments_whole_window():
    """GPU time is charged per whole run (start-up, training, export, evaluation), so a cap sized
    for the time budget alone would stop the examples long before maxExperiments."""
    terms = load_contest(EXAMPLES / "contest.yaml")[0].spec.terms
    orgs = [o for name in ("baseline", "random-search") for o in load_orgs(EXAMPLES / name / "org.yaml")]  # fmt: skip
    for budget, trainer in [(terms.budget, terms.trainer)] + [(o.spec.budget, o.spec.trainer) for o in orgs]:  # fmt: skip
        assert budget.maxGPUHours is not None
        assert budget.maxGPUHours * 3600 >= budget.maxExperiments * trainer.window_seconds * 1.1


def test_every_example_program_has_its_own_front_matter_strategy():
    names = ["baseline", "conservative", "explorer", "random-search"]
    programs = {n: parse_program((EXAMPLES / n / "program.md").read_text()) for n in names}
    for name, program in programs.items():
        assert program.front_matter["name"] == name
        assert program.prose.startswith("# autoresearch: ")
    strategies = [p.strategy for p in programs.values()]
    assert len(set(strategies)) == 4
    assert programs["baseline"].strategy == Strategy()
    conservative, explorer = programs["conservative"].strategy, programs["explorer"].strategy
    assert conservative.step < 1 < explorer.step
    assert (conservative.changes, conservative.risk) == (1, "low")
    assert (explorer.changes, explorer.risk) == (2, "high")


def test_the_random_search_example_replays_the_candidates_it_made_before_front_matter():
    program = parse_program((EXAMPLES / "random-search" / "program.md").read_text())
    train_py = (EXAMPLES.parent / "trainer-image" / "train.py").read_text()
    for experiment in range(1, 41):
        assert mutate_source(train_py, 1, experiment, program.strategy) == mutate_source(
            train_py, 1, experiment
        )
