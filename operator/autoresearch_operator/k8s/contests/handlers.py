"""The ResearchContest kopf handlers: validation, and one daemon per contest (runner.py).

Importing this module registers them with kopf's default registry; the operator's settings
(k8s/handlers.py `configure`) apply to contests too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from ...contest_spec import ContestSpecError, contest_from_resource
from ...crd_contest import PLURAL
from ...spec import API_GROUP, API_VERSION
from ..daemon import Runtime
from ..handlers import check_spec, event_poster, stopped_for_good
from .runner import ContestRunner


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec")
def validate_contest(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    defaults = memo["runtime"].config.org_defaults
    check_spec(
        body, status, patch, logger,
        lambda b, where: contest_from_resource(b, where=where, defaults=defaults),
        ContestSpecError,
    )  # fmt: skip


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
    if stopped_for_good(stopped):
        runtime.metrics.forget_contest(body["metadata"]["namespace"], body["metadata"]["name"])
