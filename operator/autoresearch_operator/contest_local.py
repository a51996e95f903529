"""`autoresearch contest`: a ResearchContest on this machine, its entrants taking turns.

The rounds are core/rounds.py's, as on a cluster: `begin` commits round 1 on programs/<contest>,
`round_orgs` gives each entrant's org (the shared terms, its program.md and proposer, the round's
start commit), `advance` has the meta-proposer write the next round. What is local is how the
orgs share the machine: one at a time, in turns. A turn runs one entrant's ResearchLoop until it
records one more experiment, then the next entrant's, round and round until every org has spent
its budget, so a machine's load (another process, thermal throttling) falls on every entrant
alike rather than on whoever ran last.

Nothing is kept in memory between turns that git and the journals do not hold, so a contest
stopped anywhere (Ctrl-C) resumes where it was: the loop is resumable by construction, and the
round comes from the programs branch. `<workdir>/contests/<name>/status.json` is rewritten after
every turn in the shape of the ResearchContest status, so `compare --contest` and
`plot --contest` read a local contest and a cluster's the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from .contest_spec import Contest
from .contest_status import contest_status
from .core.contest import RoundRecord, Standings, rounds
from .core.gitrepo import OrgRepo
from .core.interfaces import Executor, LoopObserver, Progress, Proposer, QuietObserver
from .core.journal import Journal
from .core.loop import ResearchLoop, budget_exhausted, reconcile
from .core.meta import MetaProposer
from .core.records import ExperimentRecord, RunRecord
from .core.rounds import advance, begin, round_orgs, round_standings
from .report import contest_status_file, org_dir
from .spec import Org

ExecutorFactory = Callable[[Path], Executor]  # an org's experiments folder -> its executor
ProposerFactory = Callable[[Org], Proposer]


class ContestObserver:
    """What `LocalContest` tells whoever shows it; the defaults show nothing."""

    def org(self, org: Org) -> AbstractContextManager[LoopObserver]:
        """The observer of one turn of `org` (the CLI's live display)."""
        return nullcontext(QuietObserver())

    def standings(self, status: dict[str, Any]) -> None:
        """Every entrant still running has had one more turn: the contest status so far."""

    def round_done(self, status: dict[str, Any], next_round: RoundRecord | None) -> None:
        """A round's orgs have all spent their budgets; `next_round` was just committed (None
        after the last round)."""


class _TurnCounter:
    """Passes everything on to the turn's observer and counts the experiments recorded."""

    def __init__(self, inner: LoopObserver):
        self.inner = inner
        self.decided = 0

    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        self.inner.phase(org, experiment, phase, detail)

    def progress(self, org: str, p: Progress) -> None:
        self.inner.progress(org, p)

    def run_recorded(self, org: str, run: RunRecord) -> None:
        self.inner.run_recorded(org, run)

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        self.decided += 1
        self.inner.recorded(org, rec)

    def pushed(self, org: str, experiment: int, error: str | None) -> None:
        self.inner.pushed(org, experiment, error)


class LocalContest:
    """One contest in a workdir: its orgs under `<workdir>/orgs/<org>`, their commits in `repo`."""

    def __init__(
        self,
        contest: Contest,
        programs: dict[str, str],
        workdir: Path,
        repo: OrgRepo,
        executor: ExecutorFactory,
        proposer: ProposerFactory,
        meta: MetaProposer,
        observer: ContestObserver | None = None,
    ):
        self.contest = contest
        self.programs = programs  # round 1's program.md per entrant (later rounds: from git)
        self.workdir = workdir
        self.repo = repo
        self.executor = executor
        self.proposer = proposer
        self.meta = meta
        self.observer = observer or ContestObserver()
        self._ended: dict[int, Standings] = {}  # rounds whose every org is done never change

    # -- reading a round back ----------------------------------------------------------------

    def journals(self, rec: RoundRecord) -> dict[str, Journal]:
        return {e: Journal(org_dir(self.workdir, o.name)) for e, o in round_orgs(self.contest, rec).items()}  # fmt: skip

    def done(self, rec: RoundRecord) -> dict[str, bool]:
        """entrant -> its org has spent its budget (the loop's own rule, from git and journal)."""
        journals = self.journals(rec)
        return {
            e: budget_exhausted(org, reconcile(org, self.repo, journals[e])) is not None
            for e, org in round_orgs(self.contest, rec).items()
        }

    def standings(self, rec: RoundRecord) -> Standings:
        return round_standings(self.contest, rec, self.journals(rec), self.done(rec))

    def history(self) -> list[tuple[Standings, RoundRecord]]:
        """Every round committed so far, with its standings from its orgs' journals."""
        out = []
        for rec in rounds(self.repo, self.contest.name):
            table = self._ended.get(rec.round) or self.standings(rec)
            if table.done:
                self._ended[rec.round] = table
            out.append((table, rec))
        return out

    def write_status(self) -> dict[str, Any]:
        """Write status.json (atomically) and return it."""
        status = contest_status(self.contest.name, self.contest.spec.rounds, self.history())
        path = contest_status_file(self.workdir, self.contest.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        os.replace(tmp, path)
        return status

    # -- running it ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Play every round not played yet; returns the final status."""
        rec = begin(self.repo, self.contest, self.programs)
        while True:
            if rec.round <= self.contest.spec.rounds:
                self.play_round(rec)
            table = self.standings(rec)
            status = self.write_status()
            if rec.round >= self.contest.spec.rounds:
                self.observer.round_done(status, None)
                return status
            rec = advance(self.contest, self.repo, rec, table, self.journals(rec), self.meta)
            self.observer.round_done(self.write_status(), rec)

    def play_round(self, rec: RoundRecord) -> None:
        """Turns until every org of the round has spent its budget."""
        orgs = round_orgs(self.contest, rec)
        journals = self.journals(rec)
        executors = {e: self.executor(journals[e].directory / "experiments") for e in orgs}
        proposers = {e: self.proposer(org) for e, org in orgs.items()}
        while True:
            active = [e for e, finished in self.done(rec).items() if not finished]
            if not active:
                return
            for entrant in active:
                self.turn(orgs[entrant], journals[entrant], executors[entrant], proposers[entrant])
                status = self.write_status()
            self.observer.standings(status)

    def turn(self, org: Org, journal: Journal, executor: Executor, proposer: Proposer) -> int:
        """Run `org` until it records one more experiment (or its budget is spent); returns how
        many it recorded. The loop reconciles from git and the journal each time it starts."""
        journal.directory.mkdir(parents=True, exist_ok=True)
        with self.observer.org(org) as shown:
            counter = _TurnCounter(shown)
            ResearchLoop(
                org, self.repo, journal, executor, proposer, observer=counter,
                should_stop=lambda: counter.decided > 0,
            ).run()  # fmt: skip
        return counter.decided
