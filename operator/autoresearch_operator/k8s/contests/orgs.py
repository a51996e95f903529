"""The ResearchOrgs a contest owns, through the Kubernetes API: list, create, restore.

Creates are idempotent (409: the org exists, made before a restart, and is adopted); an org
whose spec left the contest's terms is patched back (decide.restore) with a TermsRestored
Event on the contest and on the org.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from kubernetes.client.rest import ApiException

from ...contest_spec import CONTEST_LABEL, ENTRANT_LABEL, ROUND_LABEL, Contest
from ...core.contest import RoundRecord
from ...core.rounds import round_bodies
from ...crd import PLURAL as ORGS
from ...spec import API_GROUP, API_VERSION
from ..jobs import JobClient, api_error
from . import decide

PostEvent = Callable[[Mapping[str, Any], str, str, str], None]  # (object, type, reason, message)


class ContestOrgs:
    def __init__(
        self,
        jobs: JobClient,
        contest: str,
        post_event: PostEvent,
        log: logging.Logger | logging.LoggerAdapter[Any],
    ):
        self.jobs, self.namespace, self.contest = jobs, jobs.namespace, contest
        self.objects = jobs.objects
        self.post_event, self.log = post_event, log

    def existing(self) -> dict[str, dict[str, Any]]:
        """The contest's orgs that exist, by name."""
        what = f"list the orgs of contest {self.contest}"
        try:
            listed = self.jobs.call(
                what, self.objects.list_namespaced_custom_object,
                API_GROUP, API_VERSION, self.namespace, ORGS,
                label_selector=f"{CONTEST_LABEL}={self.contest}",
            )  # fmt: skip
        except ApiException as err:
            raise api_error(what, err) from err
        return {o["metadata"]["name"]: o for o in cast(dict[str, Any], listed)["items"]}

    @staticmethod
    def of_round(rec: RoundRecord, orgs: dict[str, dict]) -> dict[str, dict]:
        """entrant -> its org in the round, of those that exist."""
        return {
            o["metadata"]["labels"].get(ENTRANT_LABEL, name): o
            for name, o in orgs.items()
            if o["metadata"]["labels"].get(ROUND_LABEL) == str(rec.round)
        }

    def create_round(
        self, contest: Contest, rec: RoundRecord, orgs: dict[str, dict], owner: dict
    ) -> None:
        """Create the round's orgs that do not exist yet, owned by the contest."""
        created = []
        for body in round_bodies(contest, rec, self.namespace).values():
            name = body["metadata"]["name"]
            if name in orgs:
                continue
            try:
                self.jobs.call(
                    f"create ResearchOrg {name}", self.objects.create_namespaced_custom_object,
                    API_GROUP, API_VERSION, self.namespace, ORGS, decide.owned_org(body, owner),
                )  # fmt: skip
                created.append(name)
            except ApiException as err:
                if err.status != 409:  # it exists (made before a restart): adopted next pass
                    raise api_error(f"create ResearchOrg {name}", err) from err
        if created:
            self.post_event(
                owner, "Normal", "RoundStarted",
                f"round {rec.round}: created {', '.join(created)}, starting from "
                f"{rec.start_commit[:12]}",
            )  # fmt: skip

    def restore_terms(
        self, contest: Contest, committed: list[RoundRecord], orgs: dict[str, dict], owner: dict
    ) -> None:
        """An org of any round whose spec left the terms gets them back."""
        for rec in committed:
            for body in round_bodies(contest, rec, self.namespace).values():
                actual = orgs.get(body["metadata"]["name"])
                if actual is None or actual["metadata"].get("deletionTimestamp"):
                    continue
                fields, patch = decide.restore(body, actual, owner)
                if patch is not None:
                    self._patch(actual, patch, fields, owner)

    def _patch(self, actual: dict, patch: dict, fields: list[str], owner: dict) -> None:
        name = actual["metadata"]["name"]
        try:
            self.jobs.call(
                f"restore ResearchOrg {name}", self.objects.patch_namespaced_custom_object,
                API_GROUP, API_VERSION, self.namespace, ORGS, name, patch,
            )  # fmt: skip
        except ApiException as err:
            if err.status == 404:  # deleted meanwhile
                return
            raise api_error(f"restore ResearchOrg {name}", err) from err
        if fields:
            message = decide.terms_restored(name, fields)
            self.log.warning("%s", message)
            for target in (owner, actual):
                self.post_event(target, "Warning", "TermsRestored", message)
