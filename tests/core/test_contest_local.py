"""The local contest runner (`autoresearch contest`) without training: the real loop, mutate
proposer, git repository and journals, with a scripted executor whose val_bpb is a function of
train.py's knobs and the seed. What they prove: entrants take turns of one experiment each until
every org has spent its budget, status.json follows every turn, and a contest interrupted in the
middle of a round ends exactly as an uninterrupted one."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from pathlib import Path

import pytest

from autoresearch_operator.contest_local import ContestObserver, LocalContest
from autoresearch_operator.contest_spec import contest_from_resource
from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.interfaces import ExperimentJob, QuietObserver
from autoresearch_operator.core.meta import EvolveMetaProposer
from autoresearch_operator.core.records import ExperimentRecord, TrainResult
from autoresearch_operator.proposers import make_proposer
from autoresearch_operator.report import contest_status_file

KNOBS_PY = "LR = 0.05  # learning rate\nWIDTH = 8  # model width\nDROPOUT = 0.3  # dropout\n"
BEST = {"LR": 0.2, "WIDTH": 8, "DROPOUT": 0.3}


class KnobExecutor:
    slots = 1

    def cancel(self) -> None:
        pass

    def run(self, job: ExperimentJob, on_progress=None) -> TrainResult:
        values = {}
        for line in job.train_py.splitlines():
            name, _, rest = line.partition("=")
            values[name.strip()] = float(rest.split("#")[0])
        loss = 1.0 + sum(math.log(values[k] / v) ** 2 * 0.05 for k, v in BEST.items())
        loss += ((job.seed * 2654435761) % 1000 / 1000 - 0.5) * 0.004
        return TrainResult(status="ok", val_bpb=loss, training_seconds=60.0, total_seconds=90.0,
                           seed=job.seed)  # fmt: skip


def contest():
    entrant = lambda name, program: {"name": name, "program": program,  # noqa: E731
                                     "proposer": {"type": "mutate", "seed": 1}}  # fmt: skip
    return contest_from_resource({
        "apiVersion": "autoresearch.dev/v1alpha1", "kind": "ResearchContest",
        "metadata": {"name": "cup"},
        "spec": {
            "entrants": [entrant("lr", "---\nexplore: ['LR']\nstep: 2\n---\nTune LR.\n"),
                         entrant("nolr", "---\navoid: ['LR']\n---\nNot LR.\n"),
                         entrant("any", "Anything.\n")],
            "terms": {"trainer": {"profile": "tiny", "timeBudgetSeconds": 5},
                      "budget": {"maxExperiments": 3},
                      "keepPolicy": {"noiseRuns": 2, "confirmRuns": 1}},
            "rounds": 2,
            "meta": {"proposer": {"type": "evolve", "seed": 1}, "survivors": 1},
        },
    })  # fmt: skip


class Recorder(ContestObserver):
    """Logs (org, experiment) per decision; raises KeyboardInterrupt at decision `stop_at`."""

    def __init__(self, stop_at: int | None = None):
        self.decided: list[tuple[str, int]] = []
        self.passes = 0
        self.stop_at = stop_at
        outer = self

        class Shown(QuietObserver):
            def recorded(self, org: str, rec: ExperimentRecord) -> None:
                outer.decided.append((org, rec.experiment))
                if len(outer.decided) == outer.stop_at:
                    raise KeyboardInterrupt

        self.shown = Shown()

    def org(self, org):
        return nullcontext(self.shown)

    def standings(self, status) -> None:
        self.passes += 1


def local(workdir: Path, observer: ContestObserver) -> LocalContest:
    c = contest()
    return LocalContest(
        c, {e.name: e.program or "" for e in c.spec.entrants}, workdir,
        OrgRepo.open_or_init(workdir / "repo", KNOBS_PY),
        executor=lambda folder: KnobExecutor(),
        proposer=lambda org: make_proposer(org.spec.proposer.model_dump()),
        meta=EvolveMetaProposer(seed=1), observer=observer,
    )  # fmt: skip


def test_entrants_take_turns_of_one_experiment_until_every_budget_is_spent(tmp_path: Path):
    seen = Recorder()
    status = local(tmp_path, seen).run()
    for round_ in (1, 2):
        turns = [(o.split("-")[-1], n) for o, n in seen.decided if o.startswith(f"cup-r{round_}-")]
        assert turns == [(e, n) for n in range(3) for e in ("lr", "nolr", "any")]
    assert seen.passes == 6  # standings shown after each pass: 3 per round
    assert status == json.loads(contest_status_file(tmp_path, "cup").read_text())
    assert status["round"] == 2 and [r["round"] for r in status["history"]] == [1]
    for r in (status["history"][0], status["current"]):
        assert all(s["done"] and s["experiments"] == 3 for s in r["standings"])
        assert r.get("leader") or r["tied"]
    lineage = {x["entrant"]: x["parents"] for x in status["current"]["lineage"]}
    assert lineage[status["history"][0]["standings"][0]["entrant"]] != []


def test_an_interrupted_contest_resumes_and_ends_as_an_uninterrupted_one(tmp_path: Path):
    whole = local(tmp_path / "whole", Recorder()).run()
    with pytest.raises(KeyboardInterrupt):
        local(tmp_path / "cut", Recorder(stop_at=13)).run()  # round 2, mid-pass
    cut = json.loads(contest_status_file(tmp_path / "cut", "cup").read_text())
    assert cut["round"] == 2 and not all(s["done"] for s in cut["current"]["standings"])
    resumed = local(tmp_path / "cut", Recorder()).run()

    def results(status: dict) -> list:
        return [[(s["entrant"], s["valBpb"], s["experiments"], s["kept"]) for s in r["standings"]]
                for r in [*status["history"], status["current"]]]  # fmt: skip

    assert results(resumed) == results(whole)
