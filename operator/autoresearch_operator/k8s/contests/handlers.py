"""The ResearchContest kopf handlers: validation, and one daemon per contest (runner.py).

Importing this module registers them with kopf's default registry; the operator's settings
(k8s/handlers.py `configure`) apply to contests too.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kopf

from ...contest_spec import ContestSpecError, contest_from_resource
from ...crd_contest import PLURAL
from ...spec import API_GROUP, API_VERSION
from ..daemon import Runtime
from ..handlers import EVENT_MESSAGE_CHARS, event_poster
from ..status import FAILED, PENDING, failed_status
from .runner import ContestRunner


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec")
def validate_contest(
    body: kopf.Body, status: kopf.Status, patch: kopf.Patch, logger: Any, **_: Any
) -> None:
    """A body that does not validate gets phase Failed and an Event naming the bad field."""
    try:
        contest_from_resource(
            copy.deepcopy(dict(body)), where=f"ResearchContest {body.metadata.name}"
        )
    except ContestSpecError as err:
        patch.status.update(failed_status(str(err), status.get("conditions") or []))
        kopf.event(
            body, type="Warning", reason="InvalidSpec", message=str(err)[:EVENT_MESSAGE_CHARS]
        )
        logger.warning("%s", err)
        return
    if status.get("phase") in (None, FAILED):
        patch.status.update({"phase": PENDING, "message": "spec is valid; starting"})


def post_on(target: Mapping[str, Any], type: str, reason: str, message: str) -> None:
    """An Event on the contest or on one of its orgs, from the daemon's thread."""
    event_poster(dict(target))(type, reason, message)  # type: ignore[arg-type]


@kopf.daemon(API_GROUP, API_VERSION, PLURAL, initial_delay=1.0, cancellation_polling=2.0)
def run_contest(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """The contest's rounds, for as long as the contest exists and the operator runs."""
    runtime: Runtime = memo["runtime"]
    ContestRunner(
        runtime,
        body,
        stopped=lambda: bool(stopped),
        wait=lambda seconds: bool(stopped.wait(seconds)),
        post_event=post_on,
        log=logger,
    ).run()
    if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
        runtime.metrics.forget_contest(body["metadata"]["namespace"], body["metadata"]["name"])
