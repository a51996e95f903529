"""How a running org shows itself: status patches, Events and metrics, fed by the loop.

`OrgObserver` is the loop's LoopObserver. It may be called from several threads at once (the
loop trains runs in parallel), so all state sits behind one lock, and the status is always
recomputed whole from the journaled runs and decided experiments (k8s/status.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..core.interfaces import Progress
from ..core.records import ExperimentRecord, Outcome, Proposal, ProposalContext, RunRecord
from ..metrics import OperatorMetrics
from ..proposers import Proposer
from .status import DESCRIPTION_CHARS, DETAIL_CHARS, clip, status_from_state

PatchStatus = Callable[[dict[str, Any]], None]
PostEvent = Callable[[str, str, str], None]  # (type, reason, message)


class StatusPublisher:
    """Holds what the status is computed from; patches it at most every `interval` seconds,
    except phase changes and decided experiments, which go out at once (a result reaches
    `kubectl get` without waiting for the interval). A failed patch is retried with the next
    one."""

    def __init__(
        self,
        patch: PatchStatus,
        *,
        interval: float,
        coalesce: float = 0.5,
        previous: dict[str, Any] | None = None,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._patch, self.interval, self._clock = patch, interval, clock
        # even past the interval, a change waits this long for the ones that follow it at once
        # (a run journaled, then its experiment decided: one patch, not two)
        self.coalesce = min(coalesce, interval)
        self.log = log or logging.getLogger(__name__)
        self._lock = threading.RLock()
        previous = previous or {}
        self.phase: str = previous.get("phase") or "Pending"
        self.message: str = previous.get("message") or ""
        self.branch: str | None = previous.get("branch")
        self.generation: int | None = previous.get("observedGeneration")
        self.records: list[ExperimentRecord] = []
        self.open_runs: dict[tuple[int, int], RunRecord] = {}  # journaled, experiment undecided
        self.running: set[int] = set()  # experiments with a run training
        self.confirming: set[int] = set()  # promising experiments, confirmation under way
        self._conditions: list[dict[str, Any]] = list(previous.get("conditions") or [])
        self.push_error: str | None | bool = False  # see status.conditions_for
        self._last_patch = float("-inf")
        self._timer: threading.Timer | None = None

    def status(self) -> dict[str, Any]:
        with self._lock:
            return status_from_state(
                phase=self.phase,
                message=self.message,
                records=self.records,
                running=self.running,
                open_runs=list(self.open_runs.values()),
                confirming=len(self.confirming),
                branch=self.branch,
                observed_generation=self.generation,
                previous_conditions=self._conditions,
                push_error=self.push_error,
            )

    def set_phase(self, phase: str, message: str, generation: int | None = None) -> bool:
        """Change the phase and publish now; False when nothing changed (nothing is sent)."""
        with self._lock:
            changed = (phase, message) != (self.phase, self.message)
            self.phase, self.message = phase, message
            if generation is not None and generation != self.generation:
                self.generation, changed = generation, True
            if changed:
                self.flush()
            return changed

    def set_records(
        self, records: Sequence[ExperimentRecord], open_runs: Sequence[RunRecord] = ()
    ) -> None:
        """Everything the journal holds, at the start of each of the daemon's passes (after a
        restart too), when no loop is training: the loop reports what it starts again."""
        with self._lock:
            self.records = sorted(records, key=lambda r: r.experiment)
            decided = {r.experiment for r in records}
            self.open_runs = {r.key: r for r in open_runs if r.experiment not in decided}
            self.running = set()
            # an experiment with a confirmation run or a re-run journaled is being confirmed
            self.confirming = {r.experiment for r in self.open_runs.values() if r.role.verification}
        self.publish()

    def started(self, experiment: int) -> None:
        with self._lock:
            self.running.add(experiment)
        self.publish()

    def idle(self) -> None:
        """No loop trains (it stopped on a failure): nothing is running, whatever was started."""
        with self._lock:
            self.running = set()
        self.publish()

    def confirming_started(self, experiment: int) -> None:
        with self._lock:
            self.confirming.add(experiment)
        self.publish()

    def run_recorded(self, run: RunRecord) -> None:
        """A journaled run: open until its experiment is decided (a run that finishes after
        that, e.g. a re-run beside a confirmation that crashed, joins the decided record)."""
        with self._lock:
            decided = next((r for r in self.records if r.experiment == run.experiment), None)
            if decided is None:
                self.open_runs[run.key] = run
            elif all(r.key != run.key for r in decided.runs):
                decided.runs.append(run)
        self.publish()

    def recorded(self, rec: ExperimentRecord) -> None:
        with self._lock:
            self.records = sorted(
                [r for r in self.records if r.experiment != rec.experiment] + [rec],
                key=lambda r: r.experiment,
            )
            self.open_runs = {k: r for k, r in self.open_runs.items() if k[0] != rec.experiment}
            self.running.discard(rec.experiment)
            self.confirming.discard(rec.experiment)
            self.flush()

    def pushed(self, error: str | None) -> None:
        with self._lock:
            self.push_error = error
        self.publish()

    def publish(self) -> None:
        """Patch soon (after `coalesce`) if the last patch is old enough, else once the
        interval has passed."""
        with self._lock:
            wait = max(self._last_patch + self.interval - self._clock(), self.coalesce)
            if wait <= 0:
                self.flush()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._flush_from_timer)
                self._timer.daemon = True
                self._timer.start()

    def _flush_from_timer(self) -> None:
        with self._lock:
            self._timer = None
            self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._timer is not None:  # this patch carries what the timer would have sent
                self._timer.cancel()
                self._timer = None
            status = self.status()
            self._last_patch = self._clock()
            try:
                self._patch(status)
            except Exception as err:  # the next publish sends the whole status again
                self.log.warning("could not patch the status: %s", err)
                return
            self._conditions = status["conditions"]

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def _bpb(value: float | None) -> str:
    return "-" if value is None else f"{value:.6f}"


def describe_record(rec: ExperimentRecord) -> tuple[str, str, str]:
    """(event type, reason, message) for a decided experiment: what it scored and, in the
    policy's words (rec.detail), why it was kept, discarded or counted as a crash."""
    head = f"experiment {rec.experiment}"
    if rec.commit:
        head += f" ({rec.commit[:7]})"
    description = clip(rec.description, DESCRIPTION_CHARS)
    why = f" ({clip(rec.detail, DETAIL_CHARS)})" if rec.detail else ""
    score = f"val_bpb {_bpb(rec.val_bpb)}"
    if rec.p_value is not None:
        score += f", p = {rec.p_value:.3g}"
    if rec.outcome is Outcome.KEEP:
        return "Normal", "ExperimentKept", f"{head} kept: {score}{why}: {description}"
    if rec.outcome is Outcome.DISCARD:
        why = why or f" (did not beat {_bpb(rec.best_val_bpb)})"
        return "Normal", "ExperimentDiscarded", f"{head} discarded: {score}{why}: {description}"
    return "Warning", "ExperimentCrashed", f"{head} crashed ({rec.reason}): {rec.detail or ''}"


class OrgObserver:
    """The loop's observer for one ResearchOrg: status, Events and metrics.

    Events mark what a person follows (a run started, a confirmation begun, a decision); the
    confirmation runs themselves only update the status, to keep API requests low."""

    def __init__(
        self,
        namespace: str,
        name: str,
        publisher: StatusPublisher,
        post_event: PostEvent,
        metrics: OperatorMetrics,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ):
        self.namespace, self.name = namespace, name
        self.publisher, self.post_event, self.metrics = publisher, post_event, metrics
        self.log = log or logging.getLogger(__name__)

    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        self.log.info("experiment %d: %s %s", experiment, phase, detail)
        if phase in ("training", "verifying"):
            self.publisher.started(experiment)
            self.metrics.set_running(self.namespace, self.name, len(self.publisher.running))
            if phase == "training":
                self.post_event("Normal", "ExperimentStarted", f"experiment {experiment}: {detail}")
        elif phase == "confirming":
            self.publisher.confirming_started(experiment)
            self.post_event(
                "Normal",
                "ExperimentConfirming",
                f"experiment {experiment} is promising: confirming with {detail}",
            )
        elif phase == "resuming":
            self.post_event(
                "Normal", "ExperimentResumed", f"experiment {experiment}: re-running {detail}"
            )

    @property
    def wants_progress(self) -> bool:
        """Progress lines only go to the debug log: without --verbose, no log is read."""
        return self.log.isEnabledFor(logging.DEBUG)

    def progress(self, org: str, p: Progress) -> None:
        if p.line:
            self.log.debug(
                "experiment %d run %d at %.0fs: %s", p.experiment, p.run, p.wall_seconds, p.line
            )

    def run_recorded(self, org: str, run: RunRecord) -> None:
        self.publisher.run_recorded(run)
        self.metrics.record_run(self.namespace, self.name, run)

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        self.publisher.recorded(rec)
        self.metrics.record(self.namespace, self.name, rec)
        self.metrics.set_running(self.namespace, self.name, len(self.publisher.running))
        self.post_event(*describe_record(rec))

    def pushed(self, org: str, experiment: int, error: str | None) -> None:
        """After every decision the loop pushes to spec.repo.url; a failure is a Warning."""
        if error is not None and self.publisher.push_error != error:
            self.post_event("Warning", "PushFailed", f"after experiment {experiment}: {error}")
        self.publisher.pushed(error)


class TimedProposer:
    """A proposer that reports how long each proposal took (rejected ones included)."""

    def __init__(self, inner: Proposer, observe: Callable[[float], None]):
        self.inner, self.observe = inner, observe
        self.name = inner.name

    def propose(self, ctx: ProposalContext) -> Proposal:
        start = time.monotonic()
        try:
            return self.inner.propose(ctx)
        finally:
            self.observe(time.monotonic() - start)
