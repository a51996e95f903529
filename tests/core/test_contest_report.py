"""`compare --contest` and `plot --contest` from a contest status, without training: the status
is built by the real standings and contest_status from scripted journals, as a local contest
writes it to status.json (a cluster's ResearchContest has the same shape)."""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean as mean

import pytest

from autoresearch_operator import cli, report
from autoresearch_operator.cluster_report import contest_curves
from autoresearch_operator.contest_status import contest_status
from autoresearch_operator.core.contest import EntrantInput, RoundRecord, standings
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    Role,
    RunRecord,
    TokenUsage,
    TrainResult,
)
from autoresearch_operator.k8s.status import status_from_state

RUN_SECONDS = 360.0  # each run charges 0.1 GPU-hours


def run(experiment: int, k: int, role: Role, commit: str, val: float) -> RunRecord:
    return RunRecord(experiment, k, role, commit, 1000 * experiment + k,
                     TrainResult(status="ok", val_bpb=val, total_seconds=RUN_SECONDS), 0.0, 1.0)  # fmt: skip


def org_records(org: str, start: list[float], best: list[float] | None) -> list[ExperimentRecord]:
    """A baseline with its noise runs, a discarded candidate, and maybe a confirmed keep."""
    base, worse = f"{org}-base".ljust(40, "0"), f"{org}-worse".ljust(40, "0")
    records = [
        ExperimentRecord(0, "baseline", Outcome.KEEP, commit=base, decision=0, val_bpb=mean(start),
                         runs=[run(0, k, Role.BASELINE, base, v) for k, v in enumerate(start)]),
        ExperimentRecord(1, "worse idea", Outcome.DISCARD, commit=worse, decision=1,
                         val_bpb=max(start) + 0.05,
                         runs=[run(1, 0, Role.SCREEN, worse, max(start) + 0.05)]),
    ]  # fmt: skip
    if best is not None:
        cand = f"{org}-best".ljust(40, "0")
        runs = [run(2, 0, Role.SCREEN, cand, min(best) - 0.01)]
        runs += [run(2, k + 1, Role.CONFIRM, cand, v) for k, v in enumerate(best)]
        records.append(ExperimentRecord(2, "LR x 2", Outcome.KEEP, commit=cand, decision=2,
                                        val_bpb=mean([min(best) - 0.01, *best]), runs=runs,
                                        usage=TokenUsage(1000, 500)))  # fmt: skip
    return records


START = [1.000, 1.010, 0.990]
ROUNDS: dict[
    int, dict[str, list[float] | None]
] = {  # round -> entrant -> (its best's confirmation runs, or None: nothing kept)
    1: {"a": [0.900, 0.905, 0.895], "b": [0.990, 0.995, 0.985], "c": None},
    2: {"a": [0.950, 0.955, 0.945], "b": [0.952, 0.957, 0.947], "c": [0.951, 0.953, 0.949]},
}
PARENTS: dict[int, dict[str, list[str]]] = {
    1: {"a": [], "b": [], "c": []},
    2: {"a": ["a"], "b": ["a", "c"], "c": ["a", "b"]},
}


def org(round_: int, entrant: str) -> str:
    return f"cup-r{round_}-{entrant}"


def write_contest(workdir: Path) -> dict:
    """Two rounds' journals under workdir/orgs and the status.json a local contest writes."""
    history = []
    for round_, bests in ROUNDS.items():
        inputs = []
        for entrant, best in bests.items():
            records = org_records(org(round_, entrant), START, best)
            journal = Journal(workdir / "orgs" / org(round_, entrant))
            for record in records:
                for r in record.runs:
                    journal.append_run(r)
                journal.append(record)
            inputs.append(EntrantInput(entrant, org(round_, entrant), records, done=True))
        table = standings(round_, inputs, alpha=0.05)
        rec = RoundRecord(round_, f"{round_}" * 40, "5" * 40, dict.fromkeys(bests, "p"),
                          PARENTS[round_], "")  # fmt: skip
        history.append((table, rec))
    status = contest_status("cup", 2, history)
    path = report.contest_status_file(workdir, "cup")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(status))
    return status


def test_compare_contest_prints_every_round_with_intervals_the_verdict_and_the_lineage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    write_contest(tmp_path)
    assert cli.main(["compare", "--contest", "cup", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "contest cup, round 1 of 2" in out and "contest cup, round 2 of 2" in out
    # round 1: a is separated from the runner-up; its gain over the shared start has an interval
    assert "a leads" in out
    a_row = next(line for line in out.splitlines() if " a " in line and "+0.1000 [" in line)
    assert "0.9000 ± 0.0050 (3)" in a_row and "50% (1/2)" in a_row
    # round 2: three bests within the noise: tied, and nobody is called the leader
    assert "tied: a, c, b" in out or "tied: a, b, c" in out
    assert "verdict" in out and "tied" in out.split("verdict", 1)[1].splitlines()[0]
    # lineage on the programs branch: who each round-2 program came from
    assert "branch programs/cup" in out
    assert "b <- a, c" in out and "c <- a, b" in out and "a <- submitted" in out


def test_compare_contest_says_what_is_missing_when_there_is_no_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert cli.main(["compare", "--contest", "nope", "--workdir", str(tmp_path)]) == 1
    assert "no local contest nope" in capsys.readouterr().out


def test_local_curves_follow_each_orgs_ledger_and_end_at_its_standing(tmp_path: Path):
    status = write_contest(tmp_path)
    curves = report.local_contest_curves(status, tmp_path)
    assert {(c.round, c.entrant) for c in curves} == {(r, e) for r in ROUNDS for e in ROUNDS[r]}
    a1 = next(c for c in curves if (c.round, c.entrant) == (1, "a"))
    # after the baseline (3 runs), the discard (1 run) and the keep (4 runs), 0.1 GPU-h each
    assert a1.gpu_hours == pytest.approx([0.3, 0.4, 0.8])
    assert a1.best == pytest.approx([1.0, 1.0, 0.9])
    standing = next(s for s in status["history"][0]["standings"] if s["entrant"] == "a")
    assert a1.best[-1] == pytest.approx(standing["valBpb"])
    assert a1.gpu_hours[-1] == pytest.approx(standing["gpuHours"])


def test_plot_contest_writes_one_panel_per_round(tmp_path: Path):
    write_contest(tmp_path)
    out = tmp_path / "contest.png"
    assert cli.main(["plot", "--contest", "cup", "--workdir", str(tmp_path),
                     "--output", str(out)]) == 0  # fmt: skip
    from matplotlib.image import imread

    height, width = imread(out).shape[:2]
    assert width > 1.8 * height  # two panels side by side


def test_plot_contest_refuses_a_contest_with_nothing_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    status = contest_status("cup", 2, [])
    path = report.contest_status_file(tmp_path, "cup")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(status))
    args = ["plot", "--contest", "cup", "--workdir", str(tmp_path), "--output", str(tmp_path / "x.png")]  # fmt: skip
    assert cli.main(args) == 1
    assert "nothing to plot" in capsys.readouterr().out


def test_cluster_curves_come_from_each_orgs_status_with_gpu_time_estimated(tmp_path: Path):
    status = write_contest(tmp_path)
    orgs = []
    for round_, bests in ROUNDS.items():
        for entrant, best in bests.items():
            records = org_records(org(round_, entrant), START, best)
            org_status = status_from_state(phase="Completed", message="done", records=records)
            orgs.append({"metadata": {"name": org(round_, entrant)}, "status": org_status})
    curves = contest_curves(status, orgs)
    a1 = next(c for c in curves if (c.round, c.entrant) == (1, "a"))
    assert a1.estimated
    assert a1.gpu_hours[-1] == pytest.approx(0.8)  # the org's total, exact
    assert a1.best[0] == pytest.approx(1.0) and a1.best[-1] == pytest.approx(0.9)
    c1 = next(c for c in curves if (c.round, c.entrant) == (1, "c"))
    assert c1.best == pytest.approx([1.0] * len(c1.best))  # nothing kept: the baseline throughout


def test_contest_overrides_change_the_shared_terms_for_every_entrant_alike(
    monkeypatch: pytest.MonkeyPatch,
):
    from autoresearch_operator.contest_spec import load_contest

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    example = Path(__file__).resolve().parents[2] / "program-examples" / "contest.yaml"
    args = cli.build_parser().parse_args(
        ["contest", str(example), "--quick", "--proposer", "auto", "--rounds", "1"]
    )
    contest = cli._apply_contest_overrides(load_contest(example)[0], args)
    terms = contest.spec.terms
    assert (terms.trainer.profile, terms.trainer.timeBudgetSeconds) == ("tiny", 15)
    assert terms.budget.maxExperiments == 4 and contest.spec.rounds == 1
    assert {e.proposer.type for e in contest.spec.entrants} == {"mutate"}  # no key: offline
    assert contest.spec.meta.proposer.type == "evolve"
