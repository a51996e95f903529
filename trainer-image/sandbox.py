"""
Where the harness runs a candidate train.py: a child process that cannot see the val split,
whose output is streamed and scanned line by line, and which is killed past its wall-time limit.

Sandboxes, strongest first:
  bwrap  bubblewrap: network, PIDs and IPC unshared, a fresh /tmp, and only the system folders,
         Python, DATA_DIR/train (read-only) and the artifacts folder (writable) mounted.
  user   root without bwrap: train.py runs as the unprivileged user `nobody`, and DATA_DIR/val
         and DATA_DIR/raw become root-only (0700). Weaker: the rest of the disk stays readable.
  none   no confinement, for containers where the val split is not mounted at all.
"""

import collections
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import torch

SANDBOX_USER = "nobody"  # runs train.py in the user sandbox
SYSTEM_PATHS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"]  # read-only in bwrap
PASS_ENV = ["LANG", "LC_ALL", "OMP_NUM_THREADS", "PYTHONPATH", "LD_LIBRARY_PATH"]  # nothing secret
LOG_TAIL_LINES = 60  # lines of the child's output kept for the result
LOG_MAX_BYTES = 64 << 20  # train.log stops growing here
SCORE_LINE = re.compile(r"^\s*val_bpb\s*[:=]")  # only the harness may report a score
NAN_LINE = re.compile(r"^FAIL: .*(nan|inf|diverg)", re.IGNORECASE)  # train.py's fail-fast line


class SandboxError(Exception):
    """No sandbox of the kind asked for can run here."""


def bwrap_works():
    if shutil.which("bwrap") is None:
        return False
    probe = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"]
    return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0


def sandbox_user_can_run_python():
    """Root, and `nobody` can start this interpreter (every folder on its path searchable)."""
    if os.geteuid() != 0:
        return False
    try:
        user = pwd.getpwnam(SANDBOX_USER)
        probe = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, timeout=60,
                               cwd="/", user=user.pw_uid, group=user.pw_gid, extra_groups=[])  # fmt: skip
    except (KeyError, OSError):
        return False
    return probe.returncode == 0


def resolve_sandbox(choice):
    """The sandbox to use for --sandbox auto|bwrap|user|none, or SandboxError saying why none."""
    if choice in ("auto", "bwrap") and bwrap_works():
        return "bwrap"
    if choice == "bwrap":
        raise SandboxError("--sandbox bwrap: bubblewrap is not installed or cannot make namespaces")
    if choice in ("auto", "user") and sandbox_user_can_run_python():
        return "user"
    if choice == "user":
        raise SandboxError(
            f"--sandbox user: the harness must run as root, and the user {SANDBOX_USER!r} must be "
            f"able to run {sys.executable} (every folder on its path searchable)"
        )
    if choice == "none":
        banner = "=" * 78
        print(f"{banner}\nharness: WARNING: --sandbox none: train.py runs unconfined and could read"
              f" the val split.\nharness: WARNING: use it only where the val split is not mounted"
              f" (a container).\n{banner}")  # fmt: skip
        return "none"
    raise SandboxError(
        "no sandbox for train.py: install bubblewrap (apt-get install bubblewrap), or run the "
        f"harness as root so that train.py runs as the unprivileged user {SANDBOX_USER!r}; pass "
        "--sandbox none only where the val split is not mounted (a container)"
    )


# ---------------------------------------------------------------------------
# Building the child's command and environment
# ---------------------------------------------------------------------------


def python_roots():
    """Folders holding the interpreter and its packages (torch may come from PYTHONPATH)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    roots |= {os.path.dirname(os.path.dirname(module.__file__)) for module in (torch, np)}
    roots = sorted({os.path.realpath(root) for root in roots})
    return [r for r in roots if not any(r.startswith(o + "/") for o in roots + SYSTEM_PATHS)]


def bwrap_command(data_dir, code_dir, artifacts_dir, device):
    command = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all",
               "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # fmt: skip
    for path in SYSTEM_PATHS + python_roots():
        command += ["--ro-bind-try", path, path]
    if device == "cuda":
        for node in sorted(glob.glob("/dev/nvidia*")):
            command += ["--dev-bind", node, node]
        command += ["--ro-bind-try", "/sys", "/sys"]
    train_dir = os.path.join(data_dir, "train")
    command += ["--ro-bind", train_dir, train_dir, "--ro-bind", code_dir, code_dir]
    command += ["--bind", artifacts_dir, artifacts_dir]
    for hidden in ("val", "raw"):  # empty, in case DATA_DIR lies under a mounted folder
        command += ["--tmpfs", os.path.join(data_dir, hidden)]
    return command + ["--chdir", code_dir]


def lock_down_for_user(data_dir, code_dir, writable_dirs):
    """Prepare the user sandbox: val and raw root-only, the child's folders its own, and a
    check that the user can reach the train split and the code (else the harness is at fault)."""
    user = pwd.getpwnam(SANDBOX_USER)
    for hidden in ("val", "raw"):
        if os.path.isdir(os.path.join(data_dir, hidden)):
            os.chmod(os.path.join(data_dir, hidden), 0o700)
    for folder in writable_dirs:
        os.chown(folder, user.pw_uid, user.pw_gid)
    train_bin = os.path.join(data_dir, "train", "train.bin")
    train_py = os.path.join(code_dir, "train.py")
    probe = f"open({train_bin!r}, 'rb').close(); open({train_py!r}).close()"
    check = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=60, cwd="/",
                           user=user.pw_uid, group=user.pw_gid, extra_groups=[])  # fmt: skip
    if check.returncode != 0:
        raise SandboxError(f"the user {SANDBOX_USER!r} cannot read {train_bin} or {train_py}: "
                           "make their folders searchable (chmod o+x) and the files readable")  # fmt: skip
    return user


def child_env(profile, time_budget, train_dir, artifacts_dir, device, home):
    """A clean environment: no credentials of ours, only what train.py needs."""
    env = {name: os.environ[name] for name in PASS_ENV if name in os.environ}
    env.update(
        PATH=f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        HOME=home,
        TMPDIR=home,
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        AUTORESEARCH_PROFILE=profile,
        AUTORESEARCH_TIME_BUDGET=str(time_budget),
        AUTORESEARCH_TRAIN_DIR=train_dir,
        AUTORESEARCH_OUTPUT_DIR=artifacts_dir,
        AUTORESEARCH_DEVICE=device,
    )
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        if device == "cuda" and name in os.environ:
            env[name] = os.environ[name]
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


# ---------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------


def kill_group(proc):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap's --die-with-parent takes the sandbox down too


def run_child(command, env, cwd, log_path, timeout, user=None):
    """Run the child, stream its output to our stdout and log_path, kill it past timeout seconds
    or as soon as it prints a score. Returns how it ended, as a JSON-friendly dict."""
    run = dict(returncode=None, timed_out=False, score_line=None, reported_nan=False)
    tail = collections.deque(maxlen=LOG_TAIL_LINES)
    as_user = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[]) if user else {}
    t0 = time.time()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                            **as_user)  # fmt: skip

    def pump():
        written = 0
        with open(log_path, "w", encoding="utf-8") as log:
            for raw in iter(lambda: proc.stdout.readline(1 << 16), b""):
                line = raw.decode("utf-8", errors="replace")
                sys.stdout.write(line)
                sys.stdout.flush()
                if written < LOG_MAX_BYTES:
                    written += log.write(line)
                    log.flush()
                tail.append(line)
                if SCORE_LINE.match(line) and run["score_line"] is None:
                    run["score_line"] = line.strip()[:200]
                    kill_group(proc)
                run["reported_nan"] = run["reported_nan"] or bool(NAN_LINE.match(line))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        run["returncode"] = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        run["timed_out"] = True
        kill_group(proc)
        run["returncode"] = proc.wait()
    except BaseException:  # Ctrl-C or SIGTERM of the harness: never leave a training run behind
        kill_group(proc)
        raise
    run["wall_seconds"] = time.time() - t0
    kill_group(proc)  # whatever it left behind in its process group
    reader.join(timeout=30)
    run["log_tail"] = "".join(tail)
    return run
