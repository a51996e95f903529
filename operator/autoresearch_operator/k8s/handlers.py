"""The kopf handlers: thin. Validation in spec.py, decisions in status.py, the work in daemon.py.

Importing this module registers the handlers with kopf's default registry.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

import kopf

from ..crd import PLURAL
from ..spec import API_GROUP, API_VERSION, OrgSpecError, org_from_resource
from .daemon import OrgRunner, Runtime
from .observer import PostEvent
from .status import FAILED, PENDING, failed_status

EVENT_MESSAGE_CHARS = 1000
HEARTBEAT_SECONDS = 5.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    runtime: Runtime = memo["runtime"]
    # kopf's bookkeeping goes into annotations: the CRD's structural schema would prune it from
    # the status, and then kopf would re-run handlers forever.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Daemons need kopf's finalizer, so that a deleted org's daemon stops before the object goes.
    settings.persistence.finalizer = f"{API_GROUP}/operator"
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly
    settings.peering.standalone = True  # one replica (Deployment strategy Recreate)
    # The CRD is installed before the operator starts (Helm's crds/), and the namespaces are
    # named: no need to watch CRDs and namespaces, nor the RBAC rules for it (deploy/rbac.yaml).
    settings.scanning.disabled = True
    settings.execution.max_workers = runtime.config.max_orgs + 8  # one thread per org daemon
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330

    heartbeat, loop = memo["heartbeat"], asyncio.get_running_loop()

    def beat() -> None:  # proves to /healthz that the event loop is turning
        heartbeat.beat()
        loop.call_later(HEARTBEAT_SECONDS, beat)

    beat()


def _snapshot(body: kopf.Body) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


def check_spec(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    logger: Any,
    parse: Callable[[dict[str, Any], str], object],
    invalid: type[Exception],
) -> None:
    """A body that does not validate gets phase Failed and an Event naming the bad field; a
    valid one that was Failed (or is new) goes Pending."""
    try:
        parse(_snapshot(body), f"{body.get('kind', 'resource')} {body.metadata.name}")
    except invalid as err:
        patch.status.update(failed_status(str(err), status.get("conditions") or []))
        kopf.event(
            body, type="Warning", reason="InvalidSpec", message=str(err)[:EVENT_MESSAGE_CHARS]
        )
        logger.warning("%s", err)
        return
    if status.get("phase") in (None, FAILED):
        patch.status.update({"phase": PENDING, "message": "spec is valid; starting"})


def stopped_for_good(stopped: kopf.DaemonStopped) -> bool:
    """The daemon stopped because its resource was deleted (not an operator shutdown)."""
    return stopped.reason is not None and bool(
        stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED
    )


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, field="spec")
def validate(
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: kopf.Memo,
    logger: Any,
    **_: Any,
) -> None:
    defaults = memo["runtime"].config.org_defaults  # what the org omits, from the chart values
    check_spec(
        body, status, patch, logger,
        lambda b, where: org_from_resource(b, where=where, defaults=defaults),
        OrgSpecError,
    )  # fmt: skip


def event_poster(body: kopf.Body) -> PostEvent:
    """Post Events on `body` from any thread: the loop reports from its worker threads, which do
    not carry kopf's context, so each post runs in a copy of the daemon thread's context."""
    context, lock, target = (
        contextvars.copy_context(),
        threading.Lock(),
        cast(kopf.Body, _snapshot(body)),
    )

    def post(type: str, reason: str, message: str) -> None:
        with lock:
            context.run(
                kopf.event, target, type=type, reason=reason, message=message[:EVENT_MESSAGE_CHARS]
            )

    return post


# A stopping daemon notices within a second; kopf's default re-check of it is every 60 s, which
# would hold a deleted org's finalizer (and a contest's garbage collection) that long.
@kopf.daemon(API_GROUP, API_VERSION, PLURAL, initial_delay=1.0, cancellation_polling=2.0)
def run_org(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """The org's loop, for as long as the org exists and the operator runs."""
    runtime: Runtime = memo["runtime"]
    OrgRunner(
        runtime,
        body,
        stopped=lambda: bool(stopped),
        wait=lambda seconds: bool(stopped.wait(seconds)),
        post_event=event_poster(body),
        log=logger,
    ).run()
    if stopped_for_good(stopped):
        runtime.metrics.forget(body["metadata"]["namespace"], body["metadata"]["name"])
