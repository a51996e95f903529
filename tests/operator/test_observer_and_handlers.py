"""The loop's observer (status throttling, Events, thread safety) and the kopf handlers' own logic."""

from __future__ import annotations

import asyncio
import logging
import threading

import kopf
import pytest
from org_records import RUN_SECONDS, THIRD, confirmed_history, history, record
from org_records import run as run_record

from autoresearch_operator.core.records import ExperimentRecord, Outcome, Role
from autoresearch_operator.k8s import handlers
from autoresearch_operator.k8s.config import OperatorConfig
from autoresearch_operator.k8s.daemon import Runtime, api_key_secret
from autoresearch_operator.k8s.observer import OrgObserver, StatusPublisher, describe_record
from autoresearch_operator.metrics import Heartbeat, OperatorMetrics
from autoresearch_operator.proposers import ProposerConfigError
from autoresearch_operator.spec import org_from_resource

BODY = {
    "apiVersion": "autoresearch.dev/v1alpha1",
    "kind": "ResearchOrg",
    "metadata": {"name": "explorer", "namespace": "research", "uid": "u", "generation": 1},
    "spec": {"program": "x"},
}


class Observed:
    """An OrgObserver for org research/explorer with what it sends: status patches, Events and
    metrics, captured in lists and a registry of its own."""

    def __init__(self) -> None:
        self.patches: list[dict] = []
        self.events: list[tuple] = []
        self.metrics = OperatorMetrics()
        self.publisher = StatusPublisher(self.patches.append, interval=0)
        self.observer = OrgObserver("research", "explorer", self.publisher,
                                    lambda *e: self.events.append(e), self.metrics)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_status_patches_are_throttled_but_phases_and_results_go_out_at_once():
    patches: list[dict] = []
    clock = Clock()
    publisher = StatusPublisher(patches.append, interval=3600, clock=clock)
    publisher.set_phase("Running", "running the research loop")
    assert [p["phase"] for p in patches] == ["Running"]
    publisher.started(0)
    assert len(patches) == 1  # within the interval: held back (a timer sends it later)
    assert publisher._timer is not None
    publisher.recorded(record(0, Outcome.KEEP, 1.5))  # a result: at once, with what was held
    assert len(patches) == 2 and patches[-1]["counts"]["total"] == 1
    assert publisher._timer is None  # nothing left for the timer to send twice
    publisher.started(1)
    publisher.set_phase("Completed", "budget spent")
    assert patches[-1]["phase"] == "Completed" and len(patches) == 3
    publisher.close()


def test_a_run_journaled_then_decided_at_once_is_one_patch_not_two():
    """Past the interval a change still waits `coalesce` for what follows it at once."""
    patches: list[dict] = []
    clock = Clock()
    publisher = StatusPublisher(patches.append, interval=5, coalesce=30, clock=clock)
    clock.now += 10  # the last patch is long ago
    publisher.run_recorded(run_record(0, 0, Role.BASELINE, "c" * 40, 1.5))
    assert patches == [] and publisher._timer is not None
    publisher.recorded(record(0, Outcome.KEEP, 1.5))
    assert len(patches) == 1 and patches[0]["counts"]["total"] == 1
    assert publisher._timer is None
    publisher.close()


def test_a_failed_patch_is_not_fatal_and_the_next_one_carries_everything():
    sent: list[dict] = []

    def flaky(status: dict) -> None:
        if not sent and status["counts"]["total"] == 0:
            sent.append({})
            raise RuntimeError("API server unavailable")
        sent.append(status)

    publisher = StatusPublisher(flaky, interval=0)
    publisher.set_phase("Running", "")
    publisher.recorded(record(0, Outcome.KEEP, 1.5))
    assert sent[-1]["counts"]["total"] == 1 and sent[-1]["phase"] == "Running"


def test_parallel_experiments_reported_from_many_threads_add_up():
    o = Observed()
    patches, publisher, events, metrics, observer = (
        o.patches, o.publisher, o.events, o.metrics, o.observer,
    )  # fmt: skip
    records = [record(n, Outcome.DISCARD, 1.6) for n in range(1, 41)]

    def run(rec) -> None:
        observer.phase("explorer", rec.experiment, "training", rec.description)
        observer.recorded("explorer", rec)

    threads = [threading.Thread(target=run, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    publisher.flush()
    assert patches[-1]["counts"] == {
        "total": 40, "kept": 0, "discarded": 40, "crashed": 0, "rejected": 0, "running": 0,
        "confirming": 0, "confirmed": 0, "runs": 40,
    }  # fmt: skip
    assert sum(1 for e in events if e[1] == "ExperimentStarted") == 40
    labels = {"namespace": "research", "org": "explorer"}
    assert metrics.registry.get_sample_value("autoresearch_running_experiments", labels) == 0


def test_every_decision_gets_an_event_and_crashes_are_warnings():
    kinds = {describe_record(r)[1]: describe_record(r) for r in history()}
    assert kinds["ExperimentKept"][0] == "Normal" and "1.420000" in kinds["ExperimentKept"][2]
    assert "did not beat" in kinds["ExperimentDiscarded"][2]  # a record from before details
    kind, _reason, message = kinds["ExperimentCrashed"]
    assert kind == "Warning" and "(invalid-proposal)" in message


def test_keep_and_discard_events_say_why_in_the_policys_words():
    records, _ = confirmed_history()
    _, reason, kept = describe_record(records[2])
    assert reason == "ExperimentKept"
    assert "val_bpb 1.420000, p = 0.0042" in kept and "significant at alpha 0.05" in kept
    _, reason, discarded = describe_record(records[1])
    assert reason == "ExperimentDiscarded" and "not promising" in discarded
    assert "p =" not in discarded  # screened out: no confirmation, no test


def test_a_confirmation_is_one_event_its_runs_only_status_and_metrics():
    o = Observed()
    patches, publisher, events, metrics, observer = (
        o.patches, o.publisher, o.events, o.metrics, o.observer,
    )  # fmt: skip
    records, open_runs = confirmed_history()
    publisher.set_records(records)
    screen, *verification = open_runs

    observer.phase("explorer", 3, "training", "idea 3")
    observer.run_recorded("explorer", screen)
    observer.phase("explorer", 3, "confirming", "2 more runs and 2 re-runs of the best")
    for run in verification:
        observer.phase("explorer", 3, "verifying", f"run {run.run}: {run.role.value}")
        observer.run_recorded("explorer", run)
    counts = patches[-1]["counts"]
    assert (counts["running"], counts["confirming"], counts["runs"]) == (1, 1, 12)
    assert patches[-1]["gpuSeconds"] == 12 * RUN_SECONDS
    assert [e[1] for e in events] == ["ExperimentStarted", "ExperimentConfirming"]
    assert events[1][2] == (
        "experiment 3 is promising: confirming with 2 more runs and 2 re-runs of the best"
    )
    labels = {"namespace": "research", "org": "explorer", "role": "champion"}
    assert metrics.registry.get_sample_value("autoresearch_runs_total", labels) == 1

    decided = ExperimentRecord(3, "idea 3", Outcome.DISCARD, commit=THIRD, val_bpb=1.39,
                               detail="not significant", p_value=0.3, runs=open_runs)  # fmt: skip
    observer.recorded("explorer", decided)
    counts = patches[-1]["counts"]
    assert (counts["running"], counts["confirming"], counts["runs"]) == (0, 0, 12)
    assert counts["total"] == 4 and events[-1][1] == "ExperimentDiscarded"


def test_after_a_restart_an_experiment_with_verification_runs_journaled_counts_as_confirming():
    patches: list[dict] = []
    publisher = StatusPublisher(patches.append, interval=0)
    records, open_runs = confirmed_history()
    publisher.set_records(records, open_runs[:1])  # only the screening run: not confirming yet
    assert patches[-1]["counts"]["confirming"] == 0
    publisher.set_records(records, open_runs)
    assert patches[-1]["counts"]["confirming"] == 1 and patches[-1]["counts"]["runs"] == 12


def test_the_api_key_comes_from_the_orgs_secret_else_the_operators_default():
    openai = {**BODY, "spec": {"program": "x", "proposer": {"type": "openai", "model": "m"}}}
    default = OperatorConfig(llm_secret_name="team-llm")
    assert api_key_secret(org_from_resource(openai), default).name == "team-llm"  # type: ignore[union-attr]
    with pytest.raises(ProposerConfigError, match="AUTORESEARCH_LLM_SECRET_NAME"):
        api_key_secret(org_from_resource(openai), OperatorConfig())
    own = {**openai, "spec": {**openai["spec"], "proposer": {
        "type": "openai", "model": "m", "apiKeySecretRef": {"name": "mine"}}}}  # fmt: skip
    assert api_key_secret(org_from_resource(own), default).name == "mine"  # type: ignore[union-attr]
    assert api_key_secret(org_from_resource(BODY), default) is None  # mutate needs no key


@pytest.fixture
def events(monkeypatch):
    posted: list[dict] = []
    monkeypatch.setattr(kopf, "event", lambda body, **kw: posted.append(kw))
    return posted


def memo(**config: object) -> kopf.Memo:
    runtime = Runtime(OperatorConfig(**config), None, OperatorMetrics())  # type: ignore[arg-type]
    return kopf.Memo(runtime=runtime)


def test_an_invalid_body_gets_phase_failed_and_an_event_naming_the_field(events):
    bad = {**BODY, "spec": {"program": "x", "budget": {"maxExperiments": 0}}}
    patch = kopf.Patch()
    handlers.validate(
        body=kopf.Body(bad), status=kopf.Status(kopf.Body(bad)), patch=patch, memo=memo(),
        logger=logging.getLogger("test"),
    )  # fmt: skip
    assert patch["status"]["phase"] == "Failed"
    assert "spec.budget.maxExperiments" in patch["status"]["message"]
    assert events[0]["type"] == "Warning" and events[0]["reason"] == "InvalidSpec"
    assert "spec.budget.maxExperiments" in events[0]["message"]


def test_a_valid_new_body_is_pending_and_a_running_one_is_left_alone(events):
    patch = kopf.Patch()
    body = kopf.Body(BODY)
    handlers.validate(
        body=body, status=body.status, patch=patch, memo=memo(), logger=logging.getLogger()
    )
    assert patch["status"]["phase"] == "Pending" and events == []
    running = kopf.Body({**BODY, "status": {"phase": "Running"}})
    patch = kopf.Patch()
    handlers.validate(
        body=running, status=running.status, patch=patch, memo=memo(), logger=logging.getLogger()
    )
    assert "status" not in patch


def test_the_operators_defaults_fill_in_what_an_org_omits_before_it_is_judged(events):
    """An openai org without a model is valid where the chart's llm.model fills it in."""
    body = kopf.Body({**BODY, "spec": {"program": "x", "proposer": {"type": "openai"}}})
    patch = kopf.Patch()
    handlers.validate(
        body=body, status=body.status, patch=patch, memo=memo(), logger=logging.getLogger()
    )
    assert patch["status"]["phase"] == "Failed" and "proposer.model" in patch["status"]["message"]
    patch = kopf.Patch()
    defaults = {"proposer": {"model": "gpt-4o-mini"}}
    handlers.validate(
        body=body, status=body.status, patch=patch, memo=memo(org_defaults=defaults),
        logger=logging.getLogger(),
    )  # fmt: skip
    assert patch["status"]["phase"] == "Pending"


def test_startup_keeps_kopf_bookkeeping_out_of_the_status_and_runs_one_replica():
    settings = kopf.OperatorSettings()
    heartbeat = Heartbeat(max_age=1e9)
    runtime = Runtime(OperatorConfig(max_orgs=10), None, OperatorMetrics())  # type: ignore[arg-type]

    async def start() -> None:
        await handlers.configure(
            settings=settings, memo=kopf.Memo(runtime=runtime, heartbeat=heartbeat)
        )

    asyncio.run(start())
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    assert settings.peering.standalone is True
    assert settings.scanning.disabled is True  # no CRD or namespace watch: not in deploy/rbac.yaml
    assert settings.posting.level == logging.WARNING
    assert settings.execution.max_workers >= 10  # a thread for every org's daemon


def test_a_failed_push_warns_once_and_sets_repo_pushed_false_until_a_push_succeeds():
    o = Observed()
    patches, events, observer = o.patches, o.events, o.observer
    observer.pushed("explorer", 3, "could not read from remote repository")
    observer.pushed("explorer", 4, "could not read from remote repository")
    warnings = [e for e in events if e[1] == "PushFailed"]
    assert len(warnings) == 1 and warnings[0][0] == "Warning" and "experiment 3" in warnings[0][2]
    condition = {c["type"]: c for c in patches[-1]["conditions"]}["RepoPushed"]
    assert condition["status"] == "False"
    observer.pushed("explorer", 5, None)
    condition = {c["type"]: c for c in patches[-1]["conditions"]}["RepoPushed"]
    assert (condition["status"], condition["reason"]) == ("True", "Pushed")
