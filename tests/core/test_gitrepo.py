import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoresearch_operator.core.gitrepo import (
    DEFAULT_HTTPS_USERNAME,
    CredentialsUnavailable,
    OrgRepo,
    PushCredentials,
    PushError,
)
from support.git_http_server import GitHttpServer

BASE = "LR = 0.1\nDEPTH = 4\nWIDTH = 64\n"


def test_candidates_are_commits_under_tried_refs_and_only_keep_moves_the_branch(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    head = repo.ensure_branch("autoresearch/a")
    c1 = repo.commit_candidate("a", 1, head, BASE.replace("0.1", "0.2"), "raise LR")
    assert repo.branch_head("autoresearch/a") == head  # committing does not move the branch
    assert repo.tried("a", 1) == c1
    assert repo.message(c1) == "raise LR"
    assert repo.read_train_py(c1) == BASE.replace("0.1", "0.2")
    repo.advance("autoresearch/a", c1)
    assert repo.branch_head("autoresearch/a") == c1
    assert repo.repo.commit(c1).parents[0].hexsha == head


def test_commit_candidate_is_idempotent_per_experiment(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    head = repo.ensure_branch("autoresearch/a")
    first = repo.commit_candidate("a", 3, head, "X = 1\n", "first")
    again = repo.commit_candidate("a", 3, head, "X = 2\n", "second")
    assert again == first
    assert repo.tried_experiments("a") == {3: first}


def test_orgs_share_a_repository_without_touching_each_other(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    a = repo.ensure_branch("autoresearch/a")
    b = repo.ensure_branch("autoresearch/b")
    assert a == b  # both start at the baseline
    ca = repo.commit_candidate("a", 1, a, "A\n", "a1")
    repo.advance("autoresearch/a", ca)
    assert repo.branch_head("autoresearch/b") == b
    assert repo.tried_experiments("b") == {}
    # reopening finds the same baseline rather than making a new one
    again = OrgRepo.open_or_init(tmp_path / "repo", "something else\n")
    assert again.ensure_branch("autoresearch/c") == a


def test_merge_onto_rebases_independent_changes_and_refuses_conflicts(tmp_path: Path):
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    base = repo.ensure_branch("autoresearch/a")
    kept = repo.commit_candidate("a", 1, base, BASE.replace("LR = 0.1", "LR = 0.3"), "LR")
    merged = repo.merge_onto(base, BASE.replace("WIDTH = 64", "WIDTH = 128"), kept)
    assert merged == "LR = 0.3\nDEPTH = 4\nWIDTH = 128\n"
    assert repo.merge_onto(base, BASE.replace("LR = 0.1", "LR = 0.05"), kept) is None


# -- pushing with credentials ----------------------------------------------------------------
# A real git smart-HTTP server (git http-backend) that requires basic auth, on 127.0.0.1.

TOKEN = "s3cr3t-token-4f9a"


def _org_repo_with_history(tmp_path: Path) -> tuple[OrgRepo, str, str]:
    """An org 'a' whose branch holds a kept candidate, and a discarded one under its tried ref."""
    repo = OrgRepo.open_or_init(tmp_path / "repo", BASE)
    head = repo.ensure_branch("autoresearch/a")
    kept = repo.commit_candidate("a", 1, head, BASE.replace("0.1", "0.2"), "raise LR")
    discarded = repo.commit_candidate("a", 2, kept, BASE.replace("4", "8"), "deeper")
    repo.advance("autoresearch/a", kept)
    return repo, kept, discarded


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GitHttpServer]:
    with GitHttpServer(tmp_path / "served", DEFAULT_HTTPS_USERNAME, TOKEN) as s:
        s.create_bare("org.git")
        yield s


@pytest.fixture
def git_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME whose git config stores every credential it sees (credential.helper=store)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def test_a_push_with_the_token_lands_the_branch_and_tried_refs_on_the_server(
    tmp_path: Path, server: GitHttpServer
):
    repo, kept, discarded = _org_repo_with_history(tmp_path)
    repo.push(server.url("org.git"), "a", "autoresearch/a", PushCredentials(TOKEN + "\n"))
    assert server.refs("org.git") == {
        "refs/heads/autoresearch/a": kept,
        "refs/autoresearch/a/tried/1": kept,
        "refs/autoresearch/a/tried/2": discarded,
    }
    authenticated = {s.username for s in server.seen if s.status == 200}
    assert authenticated == {DEFAULT_HTTPS_USERNAME}


def test_the_url_user_name_is_sent_with_the_token(tmp_path: Path):
    repo, kept, _ = _org_repo_with_history(tmp_path)
    with GitHttpServer(tmp_path / "served", "alice", TOKEN) as server:
        server.create_bare("org.git")
        url = server.url("org.git").replace("http://", "http://alice@")
        repo.push(url, "a", "autoresearch/a", PushCredentials(TOKEN))
        assert server.refs("org.git")["refs/heads/autoresearch/a"] == kept


def test_the_token_is_never_on_a_command_line_nor_stored_by_a_credential_helper(
    tmp_path: Path, server: GitHttpServer, git_home: Path, monkeypatch: pytest.MonkeyPatch
):
    """Every git process started is logged by a `git` earlier on PATH; none sees the token."""
    real_git, shims = shutil.which("git"), tmp_path / "shims"
    shims.mkdir()
    log = tmp_path / "argv.log"
    _script(shims / "git", f'printf "%s\\n" "$*" >> {log}\nexec {real_git} "$@"\n')
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    repo, kept, _ = _org_repo_with_history(tmp_path)
    repo.push(server.url("org.git"), "a", "autoresearch/a", PushCredentials(TOKEN))
    assert server.refs("org.git")["refs/heads/autoresearch/a"] == kept
    assert " push " in log.read_text() and TOKEN not in log.read_text()
    assert not (git_home / ".git-credentials").exists()
    assert TOKEN not in repr(PushCredentials(TOKEN))


def test_a_wrong_token_fails_without_the_token_in_the_error(tmp_path: Path, server: GitHttpServer):
    repo, _, _ = _org_repo_with_history(tmp_path)
    wrong = "wrong-token-7c1e"
    with pytest.raises(PushError) as err:
        repo.push(server.url("org.git"), "a", "autoresearch/a", PushCredentials(wrong))
    assert "Authentication failed" in str(err.value)
    assert wrong not in str(err.value) and TOKEN not in str(err.value)
    assert server.refs("org.git") == {}


def test_without_credentials_a_push_fails_at_once_and_asks_nobody(
    tmp_path: Path, server: GitHttpServer, monkeypatch: pytest.MonkeyPatch
):
    """Neither a terminal prompt nor an askpass program from the environment is tried."""
    asked = tmp_path / "asked"
    _script(tmp_path / "askpass", f"touch {asked}\necho {TOKEN}\n")
    monkeypatch.setenv("GIT_ASKPASS", str(tmp_path / "askpass"))
    monkeypatch.setenv("SSH_ASKPASS", str(tmp_path / "askpass"))
    repo, _, _ = _org_repo_with_history(tmp_path)
    with pytest.raises(PushError, match="terminal prompts disabled"):
        repo.push(server.url("org.git"), "a", "autoresearch/a", None, timeout=30)
    assert not asked.exists()
    assert server.refs("org.git") == {}


# -- SSH keys: a fake `ssh` on PATH runs the remote git command locally, as sshd would ---------

SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"  # noqa: E501


def test_an_ssh_key_is_used_from_a_private_file_that_is_removed_after_the_push(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    shims, seen = tmp_path / "shims", tmp_path / "ssh-seen"
    shims.mkdir()
    seen.mkdir()
    # ssh [options] host command: record the options and the key file, then run the command
    _script(
        shims / "ssh",
        f"""
        while [ $# -gt 2 ]; do
          if [ "$1" = -i ]; then echo "$2" > {seen}/key-path; stat -c %a "$2" > {seen}/key-mode
            cp "$2" {seen}/key; fi
          echo "$1" >> {seen}/args; shift
        done
        echo "$1" > {seen}/host
        exec sh -c "$2"
        """,
    )
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True)
    repo, kept, discarded = _org_repo_with_history(tmp_path)

    repo.push(f"ssh://git@example.org{remote}", "a", "autoresearch/a", PushCredentials(SSH_KEY))

    pushed = subprocess.run(["git", "-C", str(remote), "for-each-ref", "--format=%(objectname)"],
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert sorted(pushed) == sorted([kept, kept, discarded])
    assert (seen / "host").read_text().strip() == "git@example.org"
    assert (seen / "key").read_text() == SSH_KEY
    assert (seen / "key-mode").read_text().strip() == "600"
    assert not Path((seen / "key-path").read_text().strip()).exists()  # removed after the push
    args = (seen / "args").read_text().split()
    for option in ("IdentitiesOnly=yes", "StrictHostKeyChecking=accept-new", "BatchMode=yes"):
        assert option in args
    known_hosts = f"UserKnownHostsFile={repo.path / '.git' / 'autoresearch_known_hosts'}"
    assert known_hosts in args  # trust on first use survives restarts, with the repository


def test_a_key_for_an_https_url_or_a_token_for_an_ssh_url_is_refused_before_git_runs(
    tmp_path: Path,
):
    repo, _, _ = _org_repo_with_history(tmp_path)
    with pytest.raises(CredentialsUnavailable, match="SSH private key, but the URL is http"):
        repo.push("https://example.org/org.git", "a", "autoresearch/a", PushCredentials(SSH_KEY))
    with pytest.raises(CredentialsUnavailable, match="only an http") as err:
        repo.push("git@example.org:org.git", "a", "autoresearch/a", PushCredentials(TOKEN))
    assert TOKEN not in str(err.value)


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body).lstrip("\n"))
    path.chmod(0o755)
