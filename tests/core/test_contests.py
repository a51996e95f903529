"""Contests without a cluster or training: the real loop, mutate proposer, git repository and
journal, with a scripted executor whose val_bpb is a known function of train.py's knobs plus a
seed-dependent noise (as real runs vary). What they prove: the rounds driver commits each
round's programs with their lineage, orgs of a round share their terms and start commit,
standings rank with intervals and name a leader only when the data separates it, and the meta
step (offline evolve; an LLM through the real openai client against a local server) writes the
next round's program.md files.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from autoresearch_operator.contest_spec import (
    ContestSpecError,
    contest_from_resource,
    drifted_fields,
    org_spec,
)
from autoresearch_operator.contest_status import contest_status
from autoresearch_operator.core.contest import (
    EntrantInput,
    commit_round,
    programs_branch,
    rounds,
    standings,
    standings_table,
)
from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.loop import ResearchLoop
from autoresearch_operator.core.meta import (
    EvolveMetaProposer,
    MetaContext,
    crossover,
    parse_meta_reply,
)
from autoresearch_operator.core.program import parse_program
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    Role,
    RunRecord,
    TokenUsage,
    TrainResult,
)
from autoresearch_operator.core.rounds import advance, begin, round_orgs, round_standings
from autoresearch_operator.executor import ExperimentJob
from autoresearch_operator.proposers import make_proposer
from autoresearch_operator.proposers.meta_openai import make_meta_proposer

KNOBS_PY = """\
LR = 0.05  # learning rate
WIDTH = 8  # model width
DEPTH = 2  # layers
DROPOUT = 0.3  # dropout
"""
BEST = {"LR": 0.2, "WIDTH": 8, "DEPTH": 2, "DROPOUT": 0.3}


def score(train_py: str, seed: int) -> float:
    """Lower is better; only LR is far from its optimum, so exploring LR pays."""
    values = {}
    for line in train_py.splitlines():
        name, _, rest = line.partition("=")
        values[name.strip()] = float(rest.split("#")[0])
    loss = 1.0 + sum(math.log(values[k] / v) ** 2 * 0.05 for k, v in BEST.items())
    return loss + ((seed * 2654435761) % 1000 / 1000 - 0.5) * 0.004


class KnobExecutor:
    slots = 1

    def cancel(self) -> None:
        pass

    def run(self, job: ExperimentJob, on_progress=None) -> TrainResult:
        value = score(job.train_py, job.seed)
        return TrainResult(status="ok", val_bpb=value, test_bpb=value, training_seconds=60.0,
                           total_seconds=90.0, seed=job.seed)  # fmt: skip


LR_ONLY = "---\nexplore: ['LR']\nstep: 2\n---\nTune the learning rate.\n"
NO_LR = "---\navoid: ['LR']\nstep: 0.5\n---\nLeave the learning rate alone.\n"
ANY = "Change anything.\n"


def contest_body(rounds_: int = 2, meta: dict | None = None) -> dict:
    return {
        "apiVersion": "autoresearch.dev/v1alpha1",
        "kind": "ResearchContest",
        "metadata": {"name": "cup"},
        "spec": {
            "entrants": [
                {"name": "lr", "program": LR_ONLY, "proposer": {"type": "mutate", "seed": 1}},
                {"name": "nolr", "program": NO_LR, "proposer": {"type": "mutate", "seed": 1}},
                {"name": "any", "program": ANY, "proposer": {"type": "mutate", "seed": 1}},
            ],
            "terms": {
                "trainer": {"profile": "tiny", "timeBudgetSeconds": 5},
                "budget": {"maxExperiments": 8},
                "keepPolicy": {"noiseRuns": 3, "confirmRuns": 2},
            },
            "rounds": rounds_,
            "startFrom": "previousBest",
            "meta": meta or {"proposer": {"type": "evolve", "seed": 3}, "survivors": 1},
        },
    }


def play(tmp_path: Path, contest, meta_proposer) -> tuple[OrgRepo, list]:
    """Every round of the contest, each org to its budget; returns (repo, [(standings, round)])."""
    repo = OrgRepo.open_or_init(tmp_path / "repo", KNOBS_PY)
    programs = {e.name: e.program for e in contest.spec.entrants}
    rec = begin(repo, contest, programs)
    history = []
    while True:
        orgs = round_orgs(contest, rec)
        journals = {e: Journal(tmp_path / "orgs" / org.name) for e, org in orgs.items()}
        for entrant, org in orgs.items():
            proposer = make_proposer(org.spec.proposer.model_dump())
            ResearchLoop(org, repo, journals[entrant], KnobExecutor(), proposer).run()
        table = round_standings(contest, rec, journals, {e: True for e in orgs})
        history.append((table, rec))
        if rec.round == contest.spec.rounds:
            return repo, history
        rec = advance(contest, repo, rec, table, journals, meta_proposer)


def test_a_two_round_contest_commits_lineage_ranks_with_intervals_and_starts_round_two_from_the_best(
    tmp_path: Path,
):
    contest = contest_from_resource(contest_body())
    repo, history = play(tmp_path, contest, EvolveMetaProposer(seed=3))

    (first, r1), (second, r2) = history
    # every org of a round has the same terms and start; only program and proposer differ
    specs = [o.spec for o in round_orgs(contest, r1).values()]
    assert len({s.startCommit for s in specs}) == 1
    assert len({(s.trainer, s.budget, s.keepPolicy, s.parallelism).__repr__() for s in specs}) == 1
    assert r1.start_commit == repo.resolve("refs/heads/baseline")

    # the org exploring LR (the only knob off its optimum) wins round 1, and not by luck
    assert first.entrants[0].entrant == "lr"
    assert first.leader == "lr" and first.p_value is not None and first.p_value < 0.05
    lr = first.entrants[0]
    assert lr.improvement is not None and lr.ci_low is not None and lr.ci_high is not None
    assert 0 < lr.ci_low < lr.improvement < lr.ci_high
    nolr = next(s for s in first.entrants if s.entrant == "nolr")
    assert nolr.kept == 0  # avoid: ['LR'] leaves it nothing that helps

    # round 2: survivors keep their program; the others are children of the leaders
    assert r2.programs["lr"] == r1.programs["lr"] and r2.parents["lr"] == ["lr"]
    for child in ("nolr", "any"):
        assert r2.programs[child] != r1.programs[child]
        assert set(r2.parents[child]) <= {"lr", "nolr", "any"} and "lr" in r2.parents[child]
        parse_program(r2.programs[child])  # valid front-matter
    assert r2.start_commit == lr.best_commit  # startFrom: previousBest

    # lineage in git: one commit per round on programs/cup, the standings in the message
    log = repo.log(f"refs/heads/{programs_branch('cup')}")
    assert len(log) == 2
    assert "round 1 standings: lr leads" in log[0][1] and "Parents-nolr: " in log[0][1]
    assert [r.round for r in rounds(repo, "cup")] == [1, 2]

    status = contest_status("cup", 2, history)
    assert status["round"] == 2 and len(status["history"]) == 1
    assert status["history"][0]["leader"] == "lr"
    assert status["current"]["standings"][0]["improvementLow"] is not None


def test_rounds_are_idempotent_so_a_restart_redoes_nothing(tmp_path: Path):
    contest = contest_from_resource(contest_body(rounds_=2))
    repo = OrgRepo.open_or_init(tmp_path / "repo", KNOBS_PY)
    programs = {e.name: e.program for e in contest.spec.entrants}
    first = begin(repo, contest, programs)
    resumed = begin(repo, contest, {"other": "x"})  # round 1 exists: programs not needed
    assert (resumed.commit, resumed.programs, resumed.parents) == (
        first.commit, first.programs, first.parents,
    )  # fmt: skip
    again = commit_round(repo, "cup", 1, first.start_commit, {"lr": "changed"}, {}, "again")
    assert again.commit == first.commit
    assert len(repo.log("refs/heads/programs/cup")) == 1


def run(experiment: int, run_: int, role: Role, commit: str, val: float) -> RunRecord:
    return RunRecord(experiment, run_, role, commit, 1000 * experiment + run_,
                     TrainResult(status="ok", val_bpb=val, total_seconds=360.0), 0.0, 1.0)  # fmt: skip


def entrant(name: str, start: list[float], best: list[float] | None) -> EntrantInput:
    base = f"{name}-base".ljust(40, "0")
    runs0 = [run(0, k, Role.BASELINE, base, v) for k, v in enumerate(start)]
    records = [ExperimentRecord(0, "baseline", Outcome.KEEP, commit=base, runs=runs0, decision=0)]
    if best is not None:
        cand = f"{name}-best".ljust(40, "0")
        runs1 = [run(1, k, Role.CONFIRM, cand, v) for k, v in enumerate(best)]
        records.append(ExperimentRecord(1, "idea", Outcome.KEEP, commit=cand, runs=runs1,
                                        decision=1, usage=TokenUsage(1000, 500)))  # fmt: skip
    return EntrantInput(name, f"cup-r1-{name}", records, done=True)


def test_close_entrants_are_tied_and_a_clear_one_leads():
    start = [1.000, 1.010, 0.990]
    close = standings(1, [entrant("a", start, [0.950, 0.955, 0.945]),
                          entrant("b", start, [0.952, 0.957, 0.947])], alpha=0.05)  # fmt: skip
    assert close.leader is None and close.tied == ["a", "b"] and "tied" in close.verdict
    clear = standings(1, [entrant("a", start, [0.900, 0.905, 0.895]),
                          entrant("b", start, [0.990, 0.995, 0.985])], alpha=0.05)  # fmt: skip
    assert clear.leader == "a" and clear.tied == []
    a = clear.entrants[0]
    assert a.improvement == pytest.approx(0.1, abs=1e-9)  # start pooled over both orgs: 1.000
    assert a.gain_per_gpu_hour == pytest.approx(a.improvement / a.gpu_hours)
    none_yet = standings(1, [entrant("a", [1.0], None), entrant("b", [1.01], None)], alpha=0.05)
    assert none_yet.leader is None and "no noise estimate" in none_yet.verdict


def test_an_entrant_without_a_keep_gains_exactly_nothing_however_its_own_baseline_runs_fell():
    # its baseline runs happened to land low; the start is still the start (pooled), so a lucky
    # draw of noise is no improvement and does not outrank an entrant that kept something
    lucky = entrant("lucky", [0.960, 0.965, 0.955], None)
    kept = entrant("kept", [1.040, 1.045, 1.035], [0.990, 0.995, 0.985])
    s = standings(1, [lucky, kept], alpha=0.05)
    by = {e.entrant: e for e in s.entrants}
    assert (by["lucky"].improvement, by["lucky"].ci_low, by["lucky"].ci_high) == (0.0, 0.0, 0.0)
    assert by["lucky"].best == s.start and by["lucky"].kept == 0
    assert by["kept"].improvement == pytest.approx(0.010, abs=1e-9)
    assert [e.entrant for e in s.entrants] == ["kept", "lucky"]
    assert "lucky: best 1.0000 (6 runs), gain +0.0000 (no keep)" in standings_table(s)


def test_an_org_spec_that_departs_from_the_terms_is_named_field_by_field():
    contest = contest_from_resource(contest_body())
    expected = org_spec(contest, "lr", LR_ONLY, "a" * 40)
    changed = {**expected, "trainer": {**expected["trainer"], "timeBudgetSeconds": 999}}
    assert drifted_fields(expected, expected) == []
    assert drifted_fields(expected, changed) == ["spec.trainer.timeBudgetSeconds"]
    with pytest.raises(ContestSpecError, match=r"spec.entrants.0.bogus: unknown field"):
        body = contest_body()
        body["spec"]["entrants"][0]["bogus"] = 1
        contest_from_resource(body)


def _meta_ctx(tmp_path: Path) -> MetaContext:
    contest = contest_from_resource(contest_body())
    start = [1.000, 1.010, 0.990]
    table = standings(1, [entrant("lr", start, [0.90, 0.905, 0.895]),
                          entrant("nolr", start, [0.99, 0.995, 0.985]),
                          entrant("any", start, [0.95, 0.955, 0.945])], alpha=0.05)  # fmt: skip
    from autoresearch_operator.core.meta import EntrantHistory

    programs = {e.name: e.program for e in contest.spec.entrants}
    return MetaContext(
        "cup", 1, table, {e: EntrantHistory(p, ["LR up"], []) for e, p in programs.items()}, 1
    )


def test_the_openai_meta_proposer_rewrites_the_trailing_programs_and_evolves_what_it_got_wrong(
    tmp_path: Path, fake_openai
):
    ctx = _meta_ctx(tmp_path)
    fake_openai.reply(
        "Thinking...\n=== PROGRAM: any ===\n---\nexplore: ['LR']\nstep: 1.5\n---\nGo for LR.\n"
        "=== END ===\n=== PROGRAM: nolr ===\n---\nstep: -3\n---\nbad\n=== END ===\n",
        prompt_tokens=900, completion_tokens=300,
    )  # fmt: skip
    spec = contest_from_resource(
        contest_body(
            meta={"proposer": {"type": "openai", "model": "m", "baseURL": fake_openai.base_url}}
        )
    ).spec.meta.proposer
    meta = make_meta_proposer(spec, env={"OPENAI_API_KEY": "k"})
    written = meta.next_programs(ctx)
    prompt = fake_openai.requests[0].body["messages"][1]["content"]
    assert (
        "round 1 standings: lr leads" in prompt
        and "LR up" in prompt
        and "Tune the learning" in prompt
    )
    assert written.programs["lr"] == LR_ONLY  # the survivor is not rewritten
    assert parse_program(written.programs["any"]).strategy.step == 1.5
    assert "rewritten by openai:m" in written.notes["any"]
    assert "unusable" in written.notes["nolr"] and "step" in written.notes["nolr"]
    parse_program(written.programs["nolr"])  # evolved instead: valid
    assert written.usage.total == 1200


def test_a_garbage_meta_reply_loses_no_round():
    ctx = _meta_ctx(Path("."))
    written = parse_meta_reply("I cannot help with that.", ctx, TokenUsage(10, 5), "openai:m")
    assert set(written.programs) == {"lr", "nolr", "any"}
    assert all("evolved instead" in written.notes[e] for e in ("nolr", "any"))


def test_evolve_is_deterministic():
    ctx = _meta_ctx(Path("."))
    assert EvolveMetaProposer(3).next_programs(ctx) == EvolveMetaProposer(3).next_programs(ctx)
    assert EvolveMetaProposer(3).next_programs(ctx) != EvolveMetaProposer(4).next_programs(ctx)


def test_a_child_takes_explore_and_avoid_from_one_parent_so_they_never_cancel_out():
    # one parent explores the learning rates only, the other avoids them: mixing the two fields
    # left a child with no knob to change (found by the local contest once rejected proposals
    # stopped counting as experiments)
    lr = parse_program("---\nexplore: ['*_LR']\nstep: 2\n---\nx\n").strategy
    no_lr = parse_program("---\navoid: ['*_LR']\nchanges: 2\n---\ny\n").strategy
    pairs = set()
    for seed in range(200):
        child = crossover(lr, no_lr, random.Random(seed))
        pairs.add((child.explore, child.avoid))
    assert pairs == {(lr.explore, lr.avoid), (no_lr.explore, no_lr.avoid)}
