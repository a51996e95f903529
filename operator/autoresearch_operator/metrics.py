"""Prometheus metrics of the operator, and the one HTTP port serving /metrics and /healthz.

Every org's series are derived from the same ledger as its status (core/ledger.py, k8s/status.py):
counters advance once per experiment number and once per (experiment, run), so replaying the
journal after a restart, or twice, never double-counts; `autoresearch_experiments_total` summed
by outcome equals `status.counts` and `autoresearch_gpu_seconds_total` equals status.gpuSeconds.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer

from .core.ledger import Ledger, runs_of_record
from .core.records import ExperimentRecord, Outcome, RunRecord
from .k8s.status import PHASES

if TYPE_CHECKING:
    from .core.contest import Standings

NO_REASON = "none"  # the reason label of kept and discarded experiments
_DURATION_BUCKETS = (30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 14400)
_LATENCY_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
ORG = ("namespace", "org")
CONTEST = ("namespace", "contest")
ENTRANT = (*CONTEST, "entrant")


class OperatorMetrics:
    """All metrics in their own registry; thread-safe (loops record from worker threads)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.best = Gauge("autoresearch_best_val_bpb", "Best kept val_bpb.", ORG, registry=r)
        self.best_test = Gauge(
            "autoresearch_best_test_bpb", "test_bpb (held-out split) of the best kept experiment.",
            ORG, registry=r,
        )  # fmt: skip
        self.baseline = Gauge(
            "autoresearch_baseline_val_bpb", "val_bpb of the unmodified train.py.", ORG, registry=r
        )
        self.last = Gauge(
            "autoresearch_last_val_bpb", "val_bpb of the latest decided experiment that had one "
            "(status.lastExperiment.valBpb).", ORG, registry=r,
        )  # fmt: skip
        self.experiments = Counter(
            "autoresearch_experiments", "Experiments recorded, by outcome and crash reason.",
            (*ORG, "outcome", "reason"), registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "autoresearch_experiment_duration_seconds",
            "Wall time of a trained experiment, from its Job's creation to its decision.",
            ORG, buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.gpu_seconds = Counter(
            "autoresearch_gpu_seconds",
            "GPU seconds used: the harness's wall time of every run (status.gpuSeconds).", ORG,
            registry=r,
        )  # fmt: skip
        self.runs = Counter(
            "autoresearch_runs", "Training runs recorded, by role (baseline, screen, confirm, "
            "champion); verification is confirm + champion.", (*ORG, "role"), registry=r,
        )  # fmt: skip
        self.verification_gpu_seconds = Counter(
            "autoresearch_verification_gpu_seconds", "GPU seconds of confirmation runs and "
            "champion re-runs (status.verificationGpuSeconds).", ORG, registry=r,
        )  # fmt: skip
        self.noise = Gauge(
            "autoresearch_noise_sigma_bpb", "The org's noise floor: pooled sigma of val_bpb "
            "between runs of the same code (status.noise.sigma).", ORG, registry=r,
        )  # fmt: skip
        self.llm_tokens = Counter(
            "autoresearch_llm_tokens", "LLM tokens used by the proposer (status.llmTokens).", ORG,
            registry=r,
        )  # fmt: skip
        self.llm_cost = Counter(
            "autoresearch_llm_cost_usd", "What the proposer cost in USD at proposer.pricing "
            "(status.llmCostUSD); absent for an org without a price.", ORG, registry=r,
        )  # fmt: skip
        self.proposal_latency = Histogram(
            "autoresearch_proposal_latency_seconds", "Time the proposer took per proposal.", ORG,
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.running = Gauge(
            "autoresearch_running_experiments", "Experiments training now.", ORG, registry=r
        )
        self.phase = Gauge(
            "autoresearch_org_phase", "1 for the org's current phase, 0 for the others.",
            (*ORG, "phase"), registry=r,
        )  # fmt: skip
        self.contest_round = Gauge(
            "autoresearch_contest_round", "The round a contest is in (status.round).", CONTEST,
            registry=r,
        )  # fmt: skip
        self.contest_improvement = Gauge(
            "autoresearch_contest_improvement_bpb", "An entrant's improvement in the current "
            "round: the shared start's val_bpb minus its best's (positive is better).", ENTRANT,
            registry=r,
        )  # fmt: skip
        self.contest_gpu_hours = Gauge(
            "autoresearch_contest_gpu_hours", "GPU-hours an entrant's orgs used, all rounds so "
            "far, verification included.", ENTRANT, registry=r,
        )  # fmt: skip
        self.contest_rank = Gauge(
            "autoresearch_contest_rank", "An entrant's rank in the current round (1 is the "
            "lowest best val_bpb; a leader is named only at the contest's alpha).", ENTRANT,
            registry=r,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._entrants: dict[tuple[str, str], set[str]] = {}
        self._seen: dict[tuple[str, str], dict[int, ExperimentRecord]] = {}
        self._runs: dict[tuple[str, str], dict[tuple[int, int], RunRecord]] = {}
        self._roles: dict[tuple[str, str], set[str]] = {}
        self._outcome_labels: dict[tuple[str, str], set[tuple[str, str]]] = {}

    # -- recording --------------------------------------------------------------------------

    def record_run(self, namespace: str, org: str, run: RunRecord) -> None:
        """Count one journaled run; a second call for the same (experiment, run) does nothing."""
        with self._lock:
            if self._count_run(namespace, org, run):
                self._update_gauges(namespace, org)

    def record(self, namespace: str, org: str, rec: ExperimentRecord) -> None:
        """Count one decided experiment and its runs; what was counted before is skipped."""
        with self._lock:
            if self._count_record(namespace, org, rec):
                self._update_gauges(namespace, org)

    def replay(
        self,
        namespace: str,
        org: str,
        records: Iterable[ExperimentRecord],
        open_runs: Iterable[RunRecord] = (),
    ) -> None:
        """Count what the journal holds (after a restart); already counted ones are skipped."""
        with self._lock:
            counted = [self._count_record(namespace, org, rec) for rec in records]
            counted += [self._count_run(namespace, org, run) for run in open_runs]
            if any(counted):
                self._update_gauges(namespace, org)

    def _count_run(self, namespace: str, org: str, run: RunRecord) -> bool:
        runs = self._runs.setdefault((namespace, org), {})
        if run.key in runs:
            return False
        runs[run.key] = run
        self._roles.setdefault((namespace, org), set()).add(run.role.value)
        self.runs.labels(namespace, org, run.role.value).inc()
        if run.result.gpu_seconds:
            self.gpu_seconds.labels(namespace, org).inc(run.result.gpu_seconds)
            if run.role.verification:
                self.verification_gpu_seconds.labels(namespace, org).inc(run.result.gpu_seconds)
        return True

    def _count_record(self, namespace: str, org: str, rec: ExperimentRecord) -> bool:
        counted = [self._count_run(namespace, org, run) for run in runs_of_record(rec)]
        seen = self._seen.setdefault((namespace, org), {})
        if rec.experiment in seen:
            return any(counted)
        seen[rec.experiment] = rec
        reason = (rec.reason or NO_REASON) if rec.outcome is Outcome.CRASH else NO_REASON
        self._outcome_labels.setdefault((namespace, org), set()).add((rec.outcome.value, reason))
        self.experiments.labels(namespace, org, rec.outcome.value, reason).inc()
        self.llm_tokens.labels(namespace, org).inc(rec.usage.total)
        if rec.cost_usd is not None:
            self.llm_cost.labels(namespace, org).inc(rec.cost_usd)
        if rec.commit and rec.started_at is not None and rec.finished_at is not None:
            self.duration.labels(namespace, org).observe(rec.finished_at - rec.started_at)
        return True

    def _update_gauges(self, namespace: str, org: str) -> None:
        """best, best test, baseline and sigma from the ledger of what was counted; last from
        the latest decided experiment with a score (status.lastExperiment)."""
        key = (namespace, org)
        runs: dict[int, list[RunRecord]] = {}
        for run in sorted(self._runs.get(key, {}).values(), key=lambda r: r.key):
            runs.setdefault(run.experiment, []).append(run)
        # every counted run, a late one (finished after its experiment's decision) included
        records = [
            replace(r, runs=runs.pop(r.experiment, [])) for r in self._seen.get(key, {}).values()
        ]
        ledger = Ledger(records, [run for rest in runs.values() for run in rest])
        best, baseline = ledger.best, ledger.baseline
        for gauge, value in (
            (self.best, best.mean if best else None),
            (self.best_test, best.test_mean if best else None),
            (self.baseline, baseline.mean if baseline else None),
            (self.noise, ledger.noise.sigma),
        ):
            if value is not None:
                gauge.labels(namespace, org).set(value)
            else:  # e.g. a new best without a test score must not show the old best's
                with contextlib.suppress(KeyError):
                    gauge.remove(namespace, org)
        scored = [r for r in records if r.val_bpb is not None]
        if scored:
            latest = max(scored, key=lambda r: (r.finished_at or 0.0, r.experiment))
            self.last.labels(namespace, org).set(latest.val_bpb)  # type: ignore[arg-type]

    def set_running(self, namespace: str, org: str, running: int) -> None:
        self.running.labels(namespace, org).set(running)

    def set_phase(self, namespace: str, org: str, phase: str) -> None:
        for p in PHASES:
            self.phase.labels(namespace, org, p).set(1 if p == phase else 0)

    def observe_proposal(self, namespace: str, org: str, seconds: float) -> None:
        self.proposal_latency.labels(namespace, org).observe(seconds)

    def forget(self, namespace: str, org: str) -> None:
        """Drop every series of a deleted org."""
        key = (namespace, org)
        with self._lock:
            self._seen.pop(key, None)
            self._runs.pop(key, None)
            for outcome, reason in self._outcome_labels.pop(key, set()):
                self.experiments.remove(namespace, org, outcome, reason)
            for role in self._roles.pop(key, set()):
                self.runs.remove(namespace, org, role)
            for metric in (self.best, self.best_test, self.baseline, self.last, self.duration,
                           self.gpu_seconds, self.llm_tokens, self.llm_cost, self.proposal_latency,
                           self.running, self.verification_gpu_seconds, self.noise):  # fmt: skip
                with contextlib.suppress(KeyError):
                    metric.remove(namespace, org)
            for p in PHASES:
                with contextlib.suppress(KeyError):
                    self.phase.remove(namespace, org, p)

    # -- contests -------------------------------------------------------------------------------

    def set_contest(self, namespace: str, contest: str, history: Sequence[Standings]) -> None:
        """A contest's rounds so far, oldest first: the current round's ranks and improvements,
        each entrant's GPU-hours over every round."""
        if not history:
            return
        current = history[-1]
        gpu_hours: dict[str, float] = {}
        for table in history:
            for s in table.entrants:
                gpu_hours[s.entrant] = gpu_hours.get(s.entrant, 0.0) + s.gpu_hours
        with self._lock:
            self.contest_round.labels(namespace, contest).set(current.round)
            for s in current.entrants:
                self.contest_rank.labels(namespace, contest, s.entrant).set(s.rank)
                if s.improvement is not None:
                    self.contest_improvement.labels(namespace, contest, s.entrant).set(
                        s.improvement
                    )
                else:
                    with contextlib.suppress(KeyError):
                        self.contest_improvement.remove(namespace, contest, s.entrant)
            for entrant, hours in gpu_hours.items():
                self.contest_gpu_hours.labels(namespace, contest, entrant).set(hours)
            self._entrants.setdefault((namespace, contest), set()).update(gpu_hours)

    def forget_contest(self, namespace: str, contest: str) -> None:
        """Drop every series of a deleted contest."""
        with self._lock:
            with contextlib.suppress(KeyError):
                self.contest_round.remove(namespace, contest)
            for entrant in self._entrants.pop((namespace, contest), set()):
                for metric in (self.contest_improvement, self.contest_gpu_hours,
                               self.contest_rank):  # fmt: skip
                    with contextlib.suppress(KeyError):
                        metric.remove(namespace, contest, entrant)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- the HTTP endpoint ---------------------------------------------------------------------


class Heartbeat:
    """Liveness: the operator's event loop calls `beat()` every few seconds; if it stops (a
    wedged loop, a dead reactor), /healthz starts failing and the kubelet restarts the pod.
    Readiness: /readyz answers 200 only once kopf has started (its startup handler beats first)
    and while the beat is fresh."""

    def __init__(self, max_age: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.max_age, self._clock = max_age, clock
        self._last = clock()
        self.started = False

    def beat(self) -> None:
        self._last = self._clock()
        self.started = True

    def ready(self) -> bool:
        return self.started and self.alive()

    def age(self) -> float:
        return self._clock() - self._last

    def alive(self) -> bool:
        return self.age() <= self.max_age


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds
        pass


def wsgi_app(metrics: OperatorMetrics, heartbeat: Heartbeat) -> Callable[..., Any]:
    """/healthz for the liveness probe, /readyz for readiness, everything else is the
    Prometheus exposition."""
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path in ("/healthz", "/readyz"):
            ok = heartbeat.alive() if path == "/healthz" else heartbeat.ready()
            state = "ok" if ok else "stale" if heartbeat.started else "starting"
            body = f"{state}: last heartbeat {heartbeat.age():.0f}s ago\n"
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [body.encode()]
        return prometheus(environ, start_response)

    return app


def serve(
    metrics: OperatorMetrics, heartbeat: Heartbeat, port: int, host: str = "0.0.0.0"
) -> ThreadingWSGIServer:
    """Serve /metrics, /healthz and /readyz on `port` from a daemon thread; `.shutdown()` stops it."""
    server = make_server(
        host, port, wsgi_app(metrics, heartbeat), ThreadingWSGIServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return server
