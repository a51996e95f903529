"""Every example org loads locally, and the contest compares like with like."""

from pathlib import Path

import pytest

from autoresearch_operator.spec import load_orgs

EXAMPLES = Path(__file__).resolve().parents[2] / "program-examples"


@pytest.mark.parametrize("name", ["baseline", "conservative", "explorer", "random-search"])
def test_each_example_org_loads_with_its_program(name: str):
    [org] = load_orgs(EXAMPLES / name / "org.yaml")
    assert org.name == name
    assert org.program_text == (EXAMPLES / name / "program.md").read_text()
    assert org.spec.programRef is not None and org.spec.programRef.name == f"{name}-program"


def test_contest_runs_the_four_programs_under_identical_budgets():
    orgs = load_orgs(EXAMPLES / "contest.yaml")
    assert [o.name for o in orgs] == ["baseline", "conservative", "explorer", "random-search"]
    for org in orgs:
        assert org.program_text == (EXAMPLES / org.name / "program.md").read_text()
    budgets = [(o.spec.budget, o.spec.trainer, o.spec.keepPolicy, o.spec.parallelism) for o in orgs]
    assert all(b == budgets[0] for b in budgets)
    assert {o.spec.proposer.type for o in orgs} == {"openai", "mutate"}


def test_the_gpu_hour_caps_leave_room_for_every_experiments_whole_window():
    """GPU time is charged per whole run (start-up, training, export, evaluation), so a cap sized
    for the time budget alone would stop the examples long before maxExperiments."""
    orgs = load_orgs(EXAMPLES / "contest.yaml")
    orgs += [
        o for name in ("baseline", "random-search") for o in load_orgs(EXAMPLES / name / "org.yaml")
    ]
    for org in orgs:
        budget, trainer = org.spec.budget, org.spec.trainer
        assert budget.maxGPUHours is not None
        assert budget.maxGPUHours * 3600 >= budget.maxExperiments * trainer.window_seconds * 1.1
