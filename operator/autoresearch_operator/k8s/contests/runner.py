"""One ResearchContest's life on the cluster, run in its kopf daemon thread.

Each pass derives everything again from what survives the operator: the rounds committed on
programs/<contest> (core/rounds.py), the orgs that exist and their journals. It creates the
current round's orgs (an existing one is adopted), puts an org that left the terms back on them,
publishes the standings, and once every org of the round has spent its budget asks the
meta-proposer for the next round's program.md files and commits them; the next pass creates
that round's orgs. Decisions are in decide.py.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from ...contest_spec import Contest, ContestSpecError, contest_from_resource
from ...contest_status import contest_status
from ...core.contest import RoundRecord, Standings, rounds
from ...core.gitrepo import OrgRepo
from ...core.journal import Journal
from ...core.meta import EvolveMetaProposer, MetaProposer
from ...core.rounds import advance, begin, round_bodies, round_orgs, round_standings
from ...core.state import budget_exhausted, observe
from ...crd_contest import PLURAL as CONTESTS
from ...proposers import ProposerConfigError
from ...spec import API_GROUP, API_VERSION
from ..daemon import RETRY_SECONDS, ResourceRunner, proposer_secret, read_secret_for
from ..jobs import KubernetesError
from ..secrets import SecretNotAllowed, openai_endpoint
from ..status import COMPLETED, FAILED, conditions_for
from . import decide
from .orgs import ContestOrgs, PostEvent


class ContestRunner(ResourceRunner[PostEvent]):
    """Drives one contest; `run()` returns when the daemon is stopped."""

    STOPPING = "stopping; the orgs keep running and the next operator takes over"

    def _setup(self) -> None:
        self.objects = client.CustomObjectsApi(self.runtime.api)
        self.orgs = ContestOrgs(self.jobs, self.name, self.post_event, self.log)
        self.committed: list[RoundRecord] = []  # this runner is the only one committing rounds
        self.finished: dict[int, Standings] = {}  # rounds that are over do not change
        self.last_patch = float("-inf")

    def _pass(self) -> None:
        snapshot = copy.deepcopy(dict(self.body))
        generation = snapshot["metadata"].get("generation")
        try:
            contest = contest_from_resource(snapshot, defaults=self.config.org_defaults)
        except ContestSpecError:  # the create/update handlers report it; wait for a fixed spec
            self._wait_for_change(generation)
            return
        repo = self.runtime.repo(self.namespace)
        try:
            if not self.committed:
                self.committed = rounds(repo, contest.name) or [
                    begin(repo, contest, self._programs(contest))
                ]
            committed, rec = self.committed, self.committed[-1]
            orgs = self.orgs.existing()
            self.orgs.create_round(contest, rec, orgs, snapshot)
            self.orgs.restore_terms(contest, committed, orgs, snapshot)
        except KubernetesError as err:
            self._fail(str(err), snapshot, generation)
            return
        table = self._standings(contest, repo, rec)
        history = [(self._standings(contest, repo, r), r) for r in committed if r.round < rec.round]
        history.append((table, rec))
        self.runtime.metrics.set_contest(self.namespace, self.name, [t for t, _ in history])
        if table.done and rec.round < contest.spec.rounds:
            try:
                meta = self._meta_proposer(contest)
            except (KubernetesError, ProposerConfigError, SecretNotAllowed) as err:
                self._fail(str(err), snapshot, generation)
                return
            nxt = advance(contest, repo, rec, table, self._journals(contest, rec), meta)
            self.committed.append(nxt)
            self.post_event(snapshot, "Normal", "RoundFinished", decide.round_finished(table))
            self.log.info("round %d committed (%s)", nxt.round, nxt.commit[:12])
            return  # the next pass creates its orgs
        failures = {
            e: (o.get("status") or {}).get("message", "")
            for e, o in ContestOrgs.of_round(rec, orgs).items()
            if (o.get("status") or {}).get("phase") == FAILED
        }
        phase, message = decide.phase_of(rec.round, contest.spec.rounds, table, failures)
        status = contest_status(contest.name, contest.spec.rounds, history)
        if phase == COMPLETED and (snapshot.get("status") or {}).get("phase") != COMPLETED:
            self.post_event(snapshot, "Normal", "RoundFinished", decide.round_finished(table))
            self.post_event(snapshot, "Normal", COMPLETED, message)
        self._publish(snapshot, {**status, "phase": phase, "message": message}, generation)
        if phase == COMPLETED:  # still look now and then: a finished org must keep its terms
            self._wait_for_change(generation, timeout=RETRY_SECONDS)
        else:
            self.wait(self.config.poll_seconds)

    # -- the rounds' orgs -------------------------------------------------------------------------

    def _programs(self, contest: Contest) -> dict[str, str]:
        """Each entrant's round-1 program.md: inline, or from its ConfigMap key."""
        out = {}
        for e in contest.spec.entrants:
            if e.program is not None:
                out[e.name] = e.program
            elif e.programRef is not None:
                out[e.name] = self.jobs.read_configmap_key(e.programRef.name, e.programRef.key)
        return out

    # -- standings --------------------------------------------------------------------------------

    def _journals(self, contest: Contest, rec: RoundRecord) -> dict[str, Journal]:
        return {
            entrant: Journal(self.config.journal_dir(self.namespace, body["metadata"]["name"]))
            for entrant, body in round_bodies(contest, rec).items()
        }

    def _standings(self, contest: Contest, repo: OrgRepo, rec: RoundRecord) -> Standings:
        if rec.round in self.finished:
            return self.finished[rec.round]
        journals = self._journals(contest, rec)
        done = {
            e: budget_exhausted(org, observe(org, repo, journals[e])) is not None
            for e, org in round_orgs(contest, rec).items()
        }
        table = round_standings(contest, rec, journals, done)
        if table.done:
            self.finished[rec.round] = table
        return table

    def _meta_proposer(self, contest: Contest) -> MetaProposer:
        spec = contest.spec.meta.proposer
        if spec.type == "evolve":
            return EvolveMetaProposer(seed=spec.seed)
        from ...proposers.meta_openai import make_meta_proposer

        secret = proposer_secret(spec, self.config, "spec.meta.proposer")
        assert secret is not None
        key = read_secret_for(
            self.jobs, secret, self.config, openai_endpoint(spec.baseURL),
            "spec.meta.proposer.baseURL",
        )  # fmt: skip
        return make_meta_proposer(spec, env={spec.apiKeyEnv: key})

    # -- status -----------------------------------------------------------------------------------

    def _publish(self, snapshot: dict, status: dict[str, Any], generation: int | None) -> None:
        """Patch what changed, phase changes at once, anything else at most every interval."""
        old = snapshot.get("status") or {}
        status["observedGeneration"] = generation
        status["conditions"] = conditions_for(
            status["phase"], status["message"], old.get("conditions") or [], datetime.now(UTC)
        )
        patch = decide.merge_patch(old, status)
        patch.pop("kopf", None)
        now = time.monotonic()
        urgent = status["phase"] in (FAILED, COMPLETED) or status["phase"] != old.get("phase")
        if not patch or (
            not urgent and now - self.last_patch < self.config.status_interval_seconds
        ):
            return
        try:
            self.objects.patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, self.namespace, CONTESTS, self.name, {"status": patch}
            )
            self.last_patch = now
        except ApiException as err:
            if err.status != 404:  # 404: the contest was deleted
                self.log.warning("could not patch the status: %s", err)

    def _fail(self, message: str, snapshot: dict, generation: int | None) -> None:
        old = snapshot.get("status") or {}
        if (old.get("phase"), old.get("message")) != (FAILED, message):
            self.post_event(snapshot, "Warning", FAILED, message)
            self.log.warning("failed: %s", message)
        self._publish(snapshot, {**old, "phase": FAILED, "message": message}, generation)
        self._wait_for_change(generation, timeout=RETRY_SECONDS)
