"""Pushing with spec.repo.credentialsSecretRef's credential: asked for before every push, a
missing one reported without retries or lost results, and locally read from the environment.

The remote is the real git smart-HTTP server in tests/support/git_http_server.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_loop import BASELINE, PushWatcher, ScriptedExecutor, ScriptedProposer

from autoresearch_operator.cli import REPO_CREDENTIALS_ENV, local_push_credentials
from autoresearch_operator.core.gitrepo import (
    DEFAULT_HTTPS_USERNAME,
    CredentialsUnavailable,
    OrgRepo,
    PushCredentials,
)
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.loop import ResearchLoop
from autoresearch_operator.core.records import Outcome
from autoresearch_operator.spec import org_from_resource
from support.git_http_server import GitHttpServer

TOKEN = "ghp_loop-test-token-0b7d"


def org_pushing_to(url: str, experiments: int = 3):
    return org_from_resource({
        "metadata": {"name": "demo"},
        "spec": {"program": "x", "budget": {"maxExperiments": experiments},
                 "repo": {"url": url, "credentialsSecretRef": {"name": "git-push"}}},
    })  # fmt: skip


def test_a_credential_that_appears_later_pushes_everything_recorded_before_it(tmp_path: Path):
    """Experiment 0's push has no credential (the Secret is not there yet): it is reported once,
    not retried, and the next push, with the credential, carries experiment 0's refs too."""
    calls: list[int] = []

    def credentials() -> PushCredentials:
        calls.append(len(calls))
        if len(calls) == 1:
            raise CredentialsUnavailable("spec.repo.credentialsSecretRef: Secret git-push: 404")
        return PushCredentials(TOKEN)

    with GitHttpServer(tmp_path / "served", DEFAULT_HTTPS_USERNAME, TOKEN) as server:
        server.create_bare("org.git")
        org = org_pushing_to(server.url("org.git"))
        repo = OrgRepo.open_or_init(tmp_path / "repo", BASELINE)
        journal, watcher = Journal(tmp_path / "j"), PushWatcher()
        state = ResearchLoop(
            org, repo, journal, ScriptedExecutor(), ScriptedProposer([1.5, 1.9]), watcher,
            push_credentials=credentials,
        ).run()  # fmt: skip
        refs = server.refs("org.git")

    assert watcher.pushes == [
        (0, "spec.repo.credentialsSecretRef: Secret git-push: 404"),
        (1, None),
        (2, None),
    ]
    assert calls == [0, 1, 2]  # one call per decision: a missing Secret is not retried
    assert [r.outcome for r in journal.load()] == [Outcome.KEEP, Outcome.KEEP, Outcome.DISCARD]
    assert refs["refs/heads/autoresearch/demo"] == state.best_commit
    assert sorted(r for r in refs if "/tried/" in r) == [
        f"refs/autoresearch/demo/tried/{n}" for n in range(3)
    ]


def test_locally_the_credential_comes_from_the_environment_variable_the_error_names():
    org = org_pushing_to("https://example.org/org.git")
    with pytest.raises(CredentialsUnavailable, match=REPO_CREDENTIALS_ENV):
        local_push_credentials(org, environ={})
    found = local_push_credentials(org, environ={REPO_CREDENTIALS_ENV: TOKEN + "\n"})
    assert found == PushCredentials(TOKEN)
    without_ref = org_from_resource({"metadata": {"name": "demo"},
                                     "spec": {"program": "x", "repo": {"url": "/tmp/r.git"}}})  # fmt: skip
    assert local_push_credentials(without_ref, environ={REPO_CREDENTIALS_ENV: TOKEN}) is None


def test_the_secret_key_defaults_to_token():
    org = org_pushing_to("https://example.org/org.git")
    assert org.spec.repo.credentialsSecretRef is not None
    assert org.spec.repo.credentialsSecretRef.key == "token"
