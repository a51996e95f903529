"""Each org's history in git: one branch per org, one commit per candidate, nothing ever lost.

Candidates are committed with plumbing (a private index file per call), so the work tree is never
touched and many orgs can share one repository. Every candidate gets a ref
`refs/autoresearch/<org>/tried/<n>`; only a kept one also moves the branch.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import git

TRAIN_PY = "train.py"
BASELINE_BRANCH = "baseline"
_AUTHOR = {
    "GIT_AUTHOR_NAME": "autoresearch",
    "GIT_AUTHOR_EMAIL": "autoresearch@localhost",
    "GIT_COMMITTER_NAME": "autoresearch",
    "GIT_COMMITTER_EMAIL": "autoresearch@localhost",
}


DEFAULT_HTTPS_USERNAME = "x-access-token"  # GitHub's name for a token; another goes in the URL
_PASSWORD_ENV = "AUTORESEARCH_GIT_PASSWORD"  # only in the environment of the one git process


class PushError(RuntimeError):
    """A push to the org's remote failed; the local history is intact."""


class UnknownCommit(ValueError):
    """A commit an org was told to start from is not in the repository."""


class CredentialsUnavailable(PushError):
    """The push credential could not be had (e.g. its Secret is missing): retrying now won't help."""


@dataclass(frozen=True)
class PushCredentials:
    """The credential of a push: an HTTPS token or password, or an SSH private key.

    Never part of the URL, a command line or a message; its repr shows only which kind it is.
    """

    secret: str = field(repr=False)

    def __post_init__(self) -> None:
        # `kubectl create secret --from-file` keeps the file's trailing newline
        object.__setattr__(self, "secret", self.secret.strip())

    @property
    def is_ssh_key(self) -> bool:
        return self.secret.startswith("-----BEGIN")

    def __repr__(self) -> str:
        return f"PushCredentials({'ssh key' if self.is_ssh_key else 'token'})"


def _is_http(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


@contextmanager
def push_auth(
    url: str, credentials: PushCredentials | None, known_hosts: Path
) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The git options and environment that make one push authenticate, and never prompt.

    A token goes to git through a credential helper that reads it from the git process's own
    environment (the user name is the URL's, else DEFAULT_HTTPS_USERNAME); helpers configured
    elsewhere are switched off, so nothing is stored or used instead. An SSH key is written to a
    0600 file for GIT_SSH_COMMAND and removed afterwards; host keys are accepted the first time
    and remembered in `known_hosts`.
    """
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": ""}  # empty: no core.askPass, no SSH_ASKPASS
    if credentials is None:
        yield [], env
        return
    if not credentials.secret:
        raise CredentialsUnavailable("the push credential is empty")
    if not credentials.is_ssh_key:
        if not _is_http(url):
            raise CredentialsUnavailable(
                "the push credential is a token or password, which only an http(s):// URL uses; "
                "for an SSH URL store an SSH private key"
            )
        lines = ("" if urlsplit(url).username else f"username={DEFAULT_HTTPS_USERNAME}\\n") + (
            "password=%s\\n"
        )
        helper = (
            f'!f() {{ if test "$1" = get; then printf \'{lines}\' "${_PASSWORD_ENV}"; fi; }}; f'
        )
        options = ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]
        yield options, {**env, _PASSWORD_ENV: credentials.secret}
        return
    if _is_http(url):
        raise CredentialsUnavailable(
            "the push credential is an SSH private key, but the URL is http(s)://; "
            "use an ssh:// or user@host:path URL, or store a token instead"
        )
    with tempfile.TemporaryDirectory(prefix="autoresearch-ssh-") as tmp:
        key = Path(tmp, "id")
        key.touch(mode=0o600)  # before the key is written: ssh refuses a key others can read
        key.write_text(credentials.secret + "\n")  # ssh refuses a key without its final newline
        ssh = [
            "ssh", "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "BatchMode=yes",
        ]  # fmt: skip
        yield [], {**env, "GIT_SSH_COMMAND": shlex.join(ssh)}


def _redact(text: str, credentials: PushCredentials | None) -> str:
    if credentials is None or len(credentials.secret) < 4:
        return text
    for line in credentials.secret.splitlines():
        if len(line.strip()) >= 4:
            text = text.replace(line.strip(), "***")
    return text


class OrgRepo:
    """A repository holding the baseline train.py and one branch per org."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.repo = git.Repo(self.path)

    @classmethod
    def open_or_init(cls, path: Path, baseline_train_py: str) -> OrgRepo:
        """Open the repository, creating it with a baseline commit of train.py the first time."""
        path = Path(path)
        if not (path / ".git").exists() and not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            git.Repo.init(path, initial_branch=BASELINE_BRANCH)
        self = cls(path)
        if not self._ref_exists(f"refs/heads/{BASELINE_BRANCH}"):
            sha = self._commit_file(
                None, baseline_train_py, "baseline: train.py as shipped in the trainer image"
            )
            self._update_ref(f"refs/heads/{BASELINE_BRANCH}", sha)
        return self

    # -- refs -------------------------------------------------------------------------------

    def _ref_exists(self, ref: str) -> bool:
        return self.resolve(ref) is not None

    def resolve(self, ref: str) -> str | None:
        try:
            return str(self.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}"))
        except git.GitCommandError:
            return None

    def _update_ref(self, ref: str, sha: str, old: str | None = None) -> None:
        args = [ref, sha] + ([old] if old else [])
        self.repo.git.update_ref(*args)

    def ensure_branch(self, branch: str, start: str | None = None) -> str:
        """The org branch's head, creating the branch at `start` (default: the baseline commit)
        if needed. A `start` that is no commit of this repository raises UnknownCommit."""
        head = self.resolve(f"refs/heads/{branch}")
        if head is None:
            if start is not None:
                head = self.resolve(start)
                if head is None or self.read_train_py_or_none(head) is None:
                    raise UnknownCommit(
                        f"spec.startCommit {start} is not a commit with a train.py in {self.path}"
                    )
            else:
                head = self.resolve(f"refs/heads/{BASELINE_BRANCH}")
            assert head is not None, "repository has no baseline commit"
            self._update_ref(f"refs/heads/{branch}", head)
        return head

    def branch_head(self, branch: str) -> str | None:
        return self.resolve(f"refs/heads/{branch}")

    def advance(self, branch: str, commit: str) -> None:
        """Point the org branch at a kept commit."""
        self._update_ref(f"refs/heads/{branch}", commit)

    @staticmethod
    def tried_ref(org: str, experiment: int) -> str:
        return f"refs/autoresearch/{org}/tried/{experiment}"

    def tried(self, org: str, experiment: int) -> str | None:
        return self.resolve(self.tried_ref(org, experiment))

    def tried_experiments(self, org: str) -> dict[int, str]:
        out = self.repo.git.for_each_ref(
            "--format=%(refname) %(objectname)", f"refs/autoresearch/{org}/tried/"
        )
        tried = {}
        for line in out.splitlines():
            ref, sha = line.split()
            tried[int(ref.rsplit("/", 1)[1])] = sha
        return tried

    # -- content ----------------------------------------------------------------------------

    def read_train_py(self, commit: str) -> str:
        return str(self.repo.git.show(f"{commit}:{TRAIN_PY}", strip_newline_in_stdout=False))

    def read_train_py_or_none(self, commit: str) -> str | None:
        try:
            return self.read_train_py(commit)
        except git.GitCommandError:
            return None

    def message(self, commit: str) -> str:
        return str(self.repo.commit(commit).message).strip()

    def commit_candidate(
        self, org: str, experiment: int, parent: str, train_py: str, message: str
    ) -> str:
        """Commit a candidate on top of `parent` and record it under its tried ref.

        Idempotent per experiment: if the tried ref exists, that commit is returned unchanged.
        """
        existing = self.tried(org, experiment)
        if existing is not None:
            return existing
        sha = self._commit_file(parent, train_py, message)
        self._update_ref(self.tried_ref(org, experiment), sha)
        return sha

    def _commit_file(self, parent: str | None, content: str, message: str) -> str:
        return self.commit_files(parent, {TRAIN_PY: content}, message)

    def commit_files(self, parent: str | None, files: dict[str, str], message: str) -> str:
        """A commit of `parent`'s tree with `files` (path -> text) written over it; no ref moves."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {**_AUTHOR, "GIT_INDEX_FILE": os.path.join(tmp, "index")}
            g = self.repo.git
            if parent:
                g.read_tree(parent, env=env)
            for path, content in files.items():
                blob = g.hash_object("-w", "--stdin", istream=subprocess.PIPE, as_process=True)
                blob_sha = blob.communicate(content.encode())[0].decode().strip()
                g.update_index("--add", "--cacheinfo", f"100644,{blob_sha},{path}", env=env)
            tree = g.write_tree(env=env)
            args = [tree] + (["-p", parent] if parent else []) + ["-m", message]
            return str(g.commit_tree(*args, env=env))

    def read_file(self, commit: str, path: str) -> str:
        return str(self.repo.git.show(f"{commit}:{path}", strip_newline_in_stdout=False))

    def log(self, ref: str) -> list[tuple[str, str]]:
        """(sha, full message) of every commit reachable from `ref`, newest first; [] if no ref."""
        if self.resolve(ref) is None:
            return []
        out = self.repo.git.log("--format=%H%x00%B%x1e", ref)
        entries = []
        for chunk in out.split("\x1e"):
            if chunk.strip():
                sha, _, message = chunk.strip().partition("\x00")
                entries.append((sha, message.strip()))
        return entries

    def update_branch(self, branch: str, sha: str, old: str | None = None) -> None:
        """Point `branch` at `sha`; with `old`, only if it still points there (compare-and-swap)."""
        self._update_ref(f"refs/heads/{branch}", sha, old)

    def push(
        self,
        url: str,
        org: str,
        branch: str,
        credentials: PushCredentials | None = None,
        timeout: float = 120,
    ) -> None:
        """Mirror the org's branch and all its tried refs to `url` (forced: the local repo rules).

        Without credentials git uses whatever it is configured with (an ssh agent, a credential
        helper), but never prompts.
        """
        refspecs = [
            f"+refs/heads/{branch}:refs/heads/{branch}",
            f"+refs/autoresearch/{org}/*:refs/autoresearch/{org}/*",
        ]
        known_hosts = Path(self.repo.git_dir) / "autoresearch_known_hosts"
        with push_auth(url, credentials, known_hosts) as (options, env):
            try:
                proc = subprocess.run(
                    ["git", *options, "push", "--quiet", url, *refspecs],
                    cwd=self.path, env={**os.environ, **env}, capture_output=True, text=True,
                    timeout=timeout, stdin=subprocess.DEVNULL,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise PushError(f"git push did not finish within {timeout:.0f}s") from None
        if proc.returncode != 0:
            detail = " ".join(proc.stderr.split())[-500:] or f"git push exited {proc.returncode}"
            raise PushError(_redact(detail, credentials))

    def merge_onto(self, base: str, candidate_src: str, new_best: str) -> str | None:
        """Three-way merge a candidate written against `base` onto `new_best`.

        Used when a proposal was prepared while another experiment ran and that experiment got
        kept. Returns the merged train.py, or None when the two changes conflict.
        """
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for name, text in (
                ("cand", candidate_src),
                ("base", self.read_train_py(base)),
                ("best", self.read_train_py(new_best)),
            ):
                files[name] = Path(tmp, name)
                files[name].write_text(text)
            proc = subprocess.run(
                [
                    "git",
                    "merge-file",
                    "-p",
                    str(files["cand"]),
                    str(files["base"]),
                    str(files["best"]),
                ],
                capture_output=True,
                text=True,
            )
            return proc.stdout if proc.returncode == 0 else None
