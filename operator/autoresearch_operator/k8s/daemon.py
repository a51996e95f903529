"""One ResearchOrg's life on the cluster, run in its kopf daemon thread.

Each pass reads the latest body, decides the phase (status.next_phase) and does that one thing:
wait while Paused or Completed, run the prepare Job while Preparing, run the research loop
(the same ResearchLoop as `autoresearch run`) while Running. The loop stops scheduling when the
spec changes (the next pass picks the new spec up) or the daemon is stopped (running Jobs keep
going and are adopted by the next operator).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

from ..contest_spec import TERMS_ANNOTATION, terms_hash
from ..core.gitrepo import CredentialsUnavailable, OrgRepo, PushCredentials, UnknownCommit
from ..core.journal import Journal
from ..core.loop import BaselineFailed, ResearchLoop, budget_exhausted, reconcile
from ..crd import PLURAL
from ..executor import baseline_train_py
from ..metrics import OperatorMetrics
from ..proposers import Proposer, ProposerConfigError, make_proposer
from ..spec import (
    API_GROUP,
    API_VERSION,
    Org,
    OrgSpecError,
    ProposerSpec,
    SecretKeyRef,
    org_from_resource,
)
from . import builders
from .config import OperatorConfig
from .executor import KubernetesExecutor
from .informer import JobInformer, PodInformer
from .jobs import Interrupted, JobClient, KubernetesError
from .observer import OrgObserver, PostEvent, StatusPublisher, TimedProposer
from .results import job_failure, job_succeeded, newest_pod
from .secrets import SecretNotAllowed, check_destination, openai_endpoint
from .status import FAILED, PREPARING, RUNNING, next_phase

RETRY_SECONDS = 60.0  # a failed org (missing Secret, failed prepare Job) looks again this often
BASELINE_RETRY_SECONDS = 600.0  # a crashed baseline means a broken environment: retry rarely
TERMS_RETRY_SECONDS = 5.0  # an org off its contest's terms looks again this often


@dataclass
class Runtime:
    """What every org's daemon shares; built once by operator_main and kept in kopf's memo."""

    config: OperatorConfig
    api: client.ApiClient
    metrics: OperatorMetrics
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _informers: dict[str, tuple[JobInformer, PodInformer]] = field(default_factory=dict)
    policed: set[str] = field(default_factory=set)  # namespaces whose NetworkPolicy exists

    def informers(self, namespace: str) -> tuple[JobInformer, PodInformer]:
        """One watch of the operator's Jobs and one of their pods per namespace, shared by
        every org there."""
        with self._lock:
            if namespace not in self._informers:
                self._informers[namespace] = (
                    JobInformer(self.api, namespace).start(),
                    PodInformer(self.api, namespace).start(),
                )
            return self._informers[namespace]

    def repo(self, namespace: str) -> OrgRepo:
        with self._lock:  # two orgs starting at once must not both create the repository
            return OrgRepo.open_or_init(self.config.repo_path(namespace), baseline_train_py())


def api_key_secret(org: Org, config: OperatorConfig) -> SecretKeyRef | None:
    """Which Secret holds the org's LLM API key: its own reference, else the operator's default."""
    return proposer_secret(org.spec.proposer, config, "spec.proposer")


def proposer_secret(
    proposer: ProposerSpec, config: OperatorConfig, where: str
) -> SecretKeyRef | None:
    """Which Secret holds an openai proposer's API key (`where` names the field in messages)."""
    if proposer.type != "openai":
        return None
    if proposer.apiKeySecretRef is not None:
        return proposer.apiKeySecretRef
    if config.llm_secret_name:
        return SecretKeyRef(name=config.llm_secret_name, key=config.llm_secret_key)
    raise ProposerConfigError(
        f"{where}.apiKeySecretRef is not set and the operator has no default "
        "(AUTORESEARCH_LLM_SECRET_NAME)"
    )


def read_secret_for(
    jobs: JobClient, ref: SecretKeyRef, config: OperatorConfig, url: str, field: str
) -> str:
    """The Secret's value, if it may be sent to `url` (set by `field`); SecretNotAllowed names
    the field otherwise, and the value is never decoded."""

    def check(annotations: dict[str, str]) -> None:
        check_destination(
            url, field=field, secret=f"{jobs.namespace}/{ref.name}",
            configured=config.secret_hosts, annotations=annotations,
        )  # fmt: skip

    return jobs.read_secret_key(ref.name, ref.key, check)


def prepare_data(jobs: JobClient, config: OperatorConfig) -> str | None:
    """Run the prepare Job to completion; None when the data is ready, else why it is not."""
    if not config.data_sources:
        return None  # the claim is prepared out of band
    body = builders.prepare_job(
        jobs.namespace,
        image=config.trainer_image,
        data_claim=config.data_claim,
        sources=config.data_sources,
        vocab_size=config.data_vocab_size,
        resources=config.prepare_resources,
    )
    name = body["metadata"]["name"]
    created, _ = jobs.create_or_adopt_job(body)
    final = jobs.wait_finished(name, uid=created["metadata"].get("uid"))
    if final is None:
        return f"the prepare Job {name} was deleted before it finished; it will be re-created"
    if job_succeeded(final):
        return None
    pod = newest_pod(jobs.finished_pods(final))
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or [{}]
    message = ((statuses[0].get("state") or {}).get("terminated") or {}).get("message") or ""
    tail = " ".join(message.split())[-400:]
    return (
        f"preparing the data failed (Job {name}: {job_failure(final)}){': ' + tail if tail else ''}; "
        f"delete the Job to retry"
    )


Poster = TypeVar("Poster")  # how a runner posts Events: on its own object, or on any


class ResourceRunner(Generic[Poster]):
    """What the org and contest daemons share: their wiring, the loop of passes until the daemon
    is stopped, and waiting for the spec to change. A subclass supplies `_pass` (and `_setup`
    for its own parts); `post_event` is whatever Event poster it needs."""

    STOPPING = "stopping"  # logged when the daemon is stopped mid-pass

    def __init__(
        self,
        runtime: Runtime,
        body: Mapping[str, Any],
        *,
        stopped: Callable[[], bool],
        wait: Callable[[float], bool],
        post_event: Poster,
        log: logging.Logger | logging.LoggerAdapter[Any],
    ):
        self.runtime, self.config, self.body = runtime, runtime.config, body
        self.stopped, self.wait, self.post_event, self.log = stopped, wait, post_event, log
        meta = body["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        job_informer, pod_informer = runtime.informers(self.namespace)
        self.jobs = JobClient(
            runtime.api, self.namespace, wait=wait, poll_seconds=self.config.poll_seconds,
            log=log, informer=job_informer, pods=pod_informer,
        )  # fmt: skip
        self._setup()

    def _setup(self) -> None:
        """The subclass's own parts, once the shared ones exist."""

    def run(self) -> None:
        try:
            while not self.stopped():
                self._pass()
        except Interrupted:
            self.log.info(self.STOPPING)
        finally:
            self.close()

    def close(self) -> None:
        """Called once the daemon stops."""

    def _pass(self) -> None:
        raise NotImplementedError

    def _changed(self, generation: int | None) -> bool:
        return self.body.get("metadata", {}).get("generation") != generation

    def _wait_for_change(self, generation: int | None, timeout: float | None = None) -> None:
        """Until the spec changes, `timeout` passes, or the daemon is stopped."""
        waited = 0.0
        while not self._changed(generation) and (timeout is None or waited < timeout):
            if self.wait(1.0):
                return
            waited += 1.0


class OrgRunner(ResourceRunner[PostEvent]):
    """Drives one org; `run()` returns when the daemon is stopped."""

    STOPPING = "stopping; running Jobs are left to finish and will be adopted"

    def _setup(self) -> None:
        self.publisher = StatusPublisher(
            self._patch_status,
            interval=self.config.status_interval_seconds,
            previous=dict(self.body.get("status") or {}),
            log=self.log,
        )
        self.data_ready = False

    # -- the passes ---------------------------------------------------------------------------

    def close(self) -> None:
        self.publisher.close()

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.body))

    def _pass(self) -> None:
        snapshot = self._snapshot()
        generation = snapshot["metadata"].get("generation")
        try:
            org = org_from_resource(snapshot, defaults=self.config.org_defaults)
        except OrgSpecError:  # the create/update handlers report it; wait for a fixed spec
            self._wait_for_change(generation)
            return
        terms = (snapshot["metadata"].get("annotations") or {}).get(TERMS_ANNOTATION)
        if terms is not None and terms != terms_hash(snapshot["spec"]):
            self._fail(
                f"spec differs from its contest's terms ({TERMS_ANNOTATION}); the contest "
                "restores it",
                generation,
                retry_after=TERMS_RETRY_SECONDS,  # the restore may touch the annotation only
            )
            return
        try:
            org, proposer = self._resolve(org)
        except (KubernetesError, ProposerConfigError, SecretNotAllowed) as err:
            self._fail(str(err), generation)
            return
        repo = self.runtime.repo(self.namespace)
        journal = Journal(self.config.journal_dir(self.namespace, self.name))
        try:
            state = reconcile(org, repo, journal)
        except UnknownCommit as err:
            self._fail(str(err), generation)
            return
        self.publisher.branch = org.branch
        self.publisher.set_records(state.records, state.open_runs)
        self.runtime.metrics.replay(self.namespace, self.name, state.records, state.open_runs)
        self.runtime.metrics.set_running(self.namespace, self.name, 0)  # no loop trains yet
        phase, message = next_phase(
            paused=org.spec.paused,
            exhausted=budget_exhausted(org, state),
            data_ready=self.data_ready,
            recorded=len(state.records),
        )
        if not (phase == PREPARING and self.publisher.phase == FAILED):
            self._set_phase(phase, message, generation)  # a failed prepare stays Failed until done
        if phase == PREPARING:
            problem = prepare_data(self.jobs, self.config)
            if problem is not None:
                self._fail(problem, generation)
            self.data_ready = problem is None
            return
        if phase != RUNNING:  # Paused or Completed: nothing to do until the spec changes
            self._wait_for_change(generation)
            return
        if self.config.network_policy and self.namespace not in self.runtime.policed:
            try:  # before the first candidate runs: its pod must have no network
                if self.jobs.ensure_network_policy(builders.network_policy(self.namespace)):
                    self.log.info("created NetworkPolicy %s", builders.NETWORK_POLICY)
            except KubernetesError as err:
                self._fail(
                    f"{err} (set AUTORESEARCH_NETWORK_POLICY=false to run without)", generation
                )
                return
            self.runtime.policed.add(self.namespace)
        observer = OrgObserver(
            self.namespace, self.name, self.publisher, self.post_event, self.runtime.metrics,
            log=self.log,
        )  # fmt: skip
        loop = ResearchLoop(
            org,
            repo,
            journal,
            KubernetesExecutor(self.jobs, org, snapshot, data_claim=self.config.data_claim),
            proposer,
            observer=observer,
            should_stop=lambda: self.stopped() or self._changed(generation),
            push_credentials=lambda: self._push_credentials(org),
        )
        try:
            loop.run()
        except KubernetesError as err:  # e.g. RBAC or an invalid trainer spec: the Job was refused
            self._fail(str(err), generation)
        except BaselineFailed as err:  # not recorded: after the fix, the baseline runs again
            summary = str(err).splitlines()[0]
            self._fail(
                f"{summary}; fix the cause, then change the spec (or wait "
                f"{BASELINE_RETRY_SECONDS / 60:.0f} minutes) to run it again",
                generation,
                retry_after=BASELINE_RETRY_SECONDS,
            )

    def _resolve(self, org: Org) -> tuple[Org, Proposer]:
        """Fill in what lives in other objects: program.md from a ConfigMap, the API key."""
        ref = org.spec.programRef
        if ref is not None:
            text = self.jobs.read_configmap_key(ref.name, ref.key)
            org = org.model_copy(update={"program_text": text})
        secret = api_key_secret(org, self.config)
        env = {}
        if secret is not None:  # the key stays in the operator: trainer pods never see it
            env[org.spec.proposer.apiKeyEnv] = read_secret_for(
                self.jobs, secret, self.config, openai_endpoint(org.spec.proposer.baseURL),
                "spec.proposer.baseURL",
            )  # fmt: skip
        proposer = make_proposer(org.spec.proposer.model_dump(), env=env)
        metrics, ns, name = self.runtime.metrics, self.namespace, self.name
        return org, TimedProposer(proposer, lambda s: metrics.observe_proposal(ns, name, s))

    def _push_credentials(self, org: Org) -> PushCredentials | None:
        """spec.repo.credentialsSecretRef's value, read before every push so that a Secret
        created or rotated later is used; a missing one fails the push, not the org."""
        ref, url = org.spec.repo.credentialsSecretRef, org.spec.repo.url
        if ref is None or url is None:
            return None
        try:
            return PushCredentials(
                read_secret_for(self.jobs, ref, self.config, url, "spec.repo.url")
            )
        except KubernetesError as err:
            raise CredentialsUnavailable(f"spec.repo.credentialsSecretRef: {err}") from None
        except SecretNotAllowed as err:
            raise CredentialsUnavailable(str(err)) from None

    # -- phases ---------------------------------------------------------------------------------

    def _set_phase(self, phase: str, message: str, generation: int | None) -> None:
        before = self.publisher.phase
        self.publisher.set_phase(phase, message, generation)
        self.runtime.metrics.set_phase(self.namespace, self.name, phase)
        if phase != before:
            kind = "Warning" if phase == FAILED else "Normal"
            self.post_event(kind, phase, message)
            self.log.info("%s: %s", phase, message)

    def _fail(self, message: str, generation: int | None, retry_after: float | None = None) -> None:
        if (self.publisher.phase, self.publisher.message) != (FAILED, message):
            self.post_event("Warning", "Failed", message)
            self.log.warning("failed: %s", message)
        self.publisher.idle()  # e.g. the baseline run that crashed is not running any more
        self.runtime.metrics.set_running(self.namespace, self.name, 0)
        self.publisher.set_phase(FAILED, message, generation)
        self.runtime.metrics.set_phase(self.namespace, self.name, FAILED)
        self._wait_for_change(generation, timeout=retry_after or RETRY_SECONDS)

    def _patch_status(self, status: dict[str, Any]) -> None:
        try:
            client.CustomObjectsApi(self.runtime.api).patch_namespaced_custom_object_status(
                API_GROUP, API_VERSION, self.namespace, PLURAL, self.name, {"status": status}
            )
        except ApiException as err:
            if err.status != 404:  # 404: the org was deleted; nothing left to report on
                raise
