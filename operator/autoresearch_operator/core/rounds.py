"""A contest's rounds, the same for `autoresearch contest` and the operator.

The programs/<contest> branch is the contest's state (core/contest.py): round 1 is committed from
the entrants' own program.md files, starting from the baseline; when every org of a round has
spent its budget, the meta-proposer writes the next round's files, which are committed with the
commit they start from. The adapters only run the orgs `round_orgs` returns and call `advance`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..contest_spec import Contest, org_body
from ..spec import Org, org_from_resource
from .contest import (
    EntrantInput,
    RoundRecord,
    Standings,
    commit_round,
    kept_and_crashed,
    rounds,
    standings,
    standings_table,
)
from .gitrepo import BASELINE_BRANCH, OrgRepo
from .journal import Journal
from .meta import EntrantHistory, MetaContext, MetaProposer


def begin(repo: OrgRepo, contest: Contest, programs: Mapping[str, str]) -> RoundRecord:
    """The contest's current round, committing round 1 from the entrants' programs if needed."""
    done = rounds(repo, contest.name)
    if done:
        return done[-1]
    start = repo.resolve(f"refs/heads/{BASELINE_BRANCH}")
    assert start is not None, "repository has no baseline commit"
    missing = [e.name for e in contest.spec.entrants if e.name not in programs]
    if missing:
        raise ValueError(f"no program.md for entrants {', '.join(missing)}")
    return commit_round(
        repo, contest.name, 1, start,
        {e.name: programs[e.name] for e in contest.spec.entrants},
        {e.name: [] for e in contest.spec.entrants},
        f"round 1 of contest {contest.name}: the entrants' program.md as submitted",
    )  # fmt: skip


def round_bodies(
    contest: Contest, rec: RoundRecord, namespace: str | None = None
) -> dict[str, dict]:
    """entrant -> the ResearchOrg body of its org in this round."""
    return {
        e.name: org_body(
            contest, namespace, rec.round, e.name, rec.programs[e.name], rec.start_commit
        )
        for e in contest.spec.entrants
        if e.name in rec.programs
    }


def round_orgs(contest: Contest, rec: RoundRecord) -> dict[str, Org]:
    return {e: org_from_resource(body) for e, body in round_bodies(contest, rec).items()}


def round_standings(
    contest: Contest,
    rec: RoundRecord,
    journals: Mapping[str, Journal],
    done: Mapping[str, bool],
) -> Standings:
    """The round's standings from each entrant's journal (entrant -> Journal)."""
    orgs = round_orgs(contest, rec)
    inputs = []
    for entrant, org in orgs.items():
        records, open_runs = journals[entrant].read()
        inputs.append(EntrantInput(entrant, org.name, records, open_runs, done.get(entrant, False)))
    return standings(rec.round, inputs, contest.spec.alpha)


def next_start(contest: Contest, repo: OrgRepo, rec: RoundRecord, table: Standings) -> str:
    """Where the next round starts: the baseline, or the previous round's best (the leader's,
    else the rank-1 entrant's) when spec.startFrom is previousBest."""
    if contest.spec.startFrom == "baseline" or not table.entrants:
        start = repo.resolve(f"refs/heads/{BASELINE_BRANCH}")
        assert start is not None
        return start
    top = next((s for s in table.entrants if s.entrant == table.leader), table.entrants[0])
    return top.best_commit or rec.start_commit


def advance(
    contest: Contest,
    repo: OrgRepo,
    rec: RoundRecord,
    table: Standings,
    journals: Mapping[str, Journal],
    meta: MetaProposer,
) -> RoundRecord:
    """Write and commit the next round's programs (idempotent: a committed round is returned)."""
    committed = {r.round: r for r in rounds(repo, contest.name)}
    if rec.round + 1 in committed:
        return committed[rec.round + 1]
    histories = {}
    for entrant, program in rec.programs.items():
        records, _ = journals[entrant].read()
        kept, crashed = kept_and_crashed(records)
        histories[entrant] = EntrantHistory(program, kept, crashed)
    ctx = MetaContext(
        contest.name, rec.round, table, histories, contest.spec.meta.survivors,
        contest.spec.meta.proposer.seed,
    )  # fmt: skip
    written = meta.next_programs(ctx)
    summary = (
        written.summary(rec.round + 1, meta.name) + "\n\n" + standings_table(table)
        + (f"\nmeta tokens: {written.usage.total}" if written.usage.total else "")
    )  # fmt: skip
    return commit_round(
        repo, contest.name, rec.round + 1, next_start(contest, repo, rec, table),
        written.programs, written.parents, summary,
    )  # fmt: skip
