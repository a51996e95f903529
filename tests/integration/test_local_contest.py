"""A whole contest on the CPU with `autoresearch contest`: two `mutate` entrants whose
program.md front-matter differ, two rounds, the offline evolve meta-proposer between them; the
real harness, real tiny training, real git. Then `compare --contest` and `plot --contest`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from autoresearch_operator import cli
from autoresearch_operator.core.contest import programs_branch, rounds
from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.program import parse_program
from autoresearch_operator.report import contest_status_file

pytestmark = pytest.mark.slow

PROGRAMS = {
    "lr": "---\nexplore: ['*_LR']\nstep: 2\n---\nTune the learning rates only.\n",
    "bold": "---\navoid: ['*_LR']\nchanges: 2\nrisk: high\n---\nAnything but the learning rates.\n",
}
EXPERIMENTS = 2  # the baseline and one candidate per org and round


def contest_yaml(path: Path) -> Path:
    """The smallest terms that still train: 3 s of start-up, 1 s of training, two noise runs of
    the baseline (so the round has a sigma and the gains their intervals), the one-run rule."""
    body = {
        "apiVersion": "autoresearch.dev/v1alpha1",
        "kind": "ResearchContest",
        "metadata": {"name": "cpu-cup"},
        "spec": {
            "entrants": [
                {"name": n, "program": p, "proposer": {"type": "mutate", "seed": 1}}
                for n, p in PROGRAMS.items()
            ],  # fmt: skip
            "terms": {
                "trainer": {"profile": "tiny", "timeBudgetSeconds": 1, "startupSeconds": 3},
                "budget": {"maxExperiments": EXPERIMENTS},
                "keepPolicy": {"noiseRuns": 2, "confirmRuns": 0, "screenSigmas": 0},
            },
            "rounds": 2,
            "meta": {"proposer": {"type": "evolve", "seed": 2}, "survivors": 1},
        },
    }
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_two_mutate_entrants_with_different_front_matter_play_two_rounds_on_the_cpu(
    prepared_workdir: Path, corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    workdir = tmp_path / "runs"
    shutil.copytree(prepared_workdir / "data", workdir / "data")
    args = ["contest", str(contest_yaml(tmp_path / "contest.yaml")), "--workdir", str(workdir),
            "--corpus", str(corpus), "--vocab-size", "512", "--device", "cpu"]  # fmt: skip
    assert cli.main(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "standings so far" in out and "round 1 done" in out

    # both rounds' orgs ran their whole budget from the round's shared start
    repo = OrgRepo(workdir / "repo")
    r1, r2 = rounds(repo, "cpu-cup")
    for rec in (r1, r2):
        for entrant in PROGRAMS:
            org = f"cpu-cup-r{rec.round}-{entrant}"
            records = Journal(workdir / "orgs" / org).load()
            # every proposal became an experiment: no program left its proposer nothing to do
            assert [(r.experiment, r.rejected) for r in records] == [
                (n, False) for n in range(EXPERIMENTS)
            ], (org, [r.detail for r in records])
            assert len(records[0].runs) == 2  # the noise runs of the start
            baseline = repo.repo.commit(repo.tried(org, 0))
            assert baseline.parents[0].hexsha == rec.start_commit

    # status.json: standings with intervals (or a tie) for both rounds
    status = json.loads(contest_status_file(workdir, "cpu-cup").read_text())
    assert status["round"] == 2 and status["rounds"] == 2
    for r in (status["history"][0], status["current"]):
        assert r["sigma"] > 0 and len(r["standings"]) == 2
        for s in r["standings"]:
            assert s["done"] and s["experiments"] == EXPERIMENTS
            assert s["improvementLow"] <= s["improvement"] <= s["improvementHigh"], s
        assert r.get("leader") or set(r["tied"]) <= set(PROGRAMS), r["verdict"]

    # round 2's program.md files on programs/cpu-cup, with their parents in the commit message
    assert repo.resolve(f"refs/heads/{programs_branch('cpu-cup')}") == r2.commit
    winner = status["history"][0]["standings"][0]["entrant"]
    assert r2.programs[winner] == r1.programs[winner] and r2.parents[winner] == [winner]
    for entrant in set(PROGRAMS) - {winner}:
        assert winner in r2.parents[entrant]
        assert f"Parents-{entrant}: {', '.join(r2.parents[entrant])}" in r2.message
        parse_program(r2.programs[entrant])  # valid front-matter
        assert r2.programs[entrant] != r1.programs[entrant]
    assert "round 1 standings" in r2.message

    # compare --contest prints both rounds, the verdict and the lineage; plot --contest draws them
    assert cli.main(["compare", "--contest", "cpu-cup", "--workdir", str(workdir)]) == 0
    shown = capsys.readouterr().out
    assert "round 1 of 2" in shown and "round 2 of 2" in shown and "lineage" in shown
    assert all(entrant in shown for entrant in PROGRAMS)
    png = tmp_path / "contest.png"
    assert cli.main(["plot", "--contest", "cpu-cup", "--workdir", str(workdir),
                     "--output", str(png)]) == 0  # fmt: skip
    assert png.stat().st_size > 10_000
