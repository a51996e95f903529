"""
Where the harness runs a candidate train.py: a child process that cannot see the val or test
split, whose output is streamed and scanned line by line, which is killed at the end of its window,
and of which nothing survives the harness's return.

Sandboxes (every one holds the same bar, or the harness refuses to run):
  bwrap      bubblewrap: network, PIDs, IPC, UTS and (where allowed) users unshared, capabilities
             dropped, a fresh /tmp, and only the system folders, Python, DATA_DIR/train and the
             code (read-only) and the artifacts folder (writable) mounted. The sandbox's PID
             namespace dies with its first process, taking every process the child started.
  container  in a pod whose training container mounts DATA_DIR/train alone, read-only root
             filesystem: the harness must be PID 1 of the container's PID namespace, so that the
             child cannot signal or trace it (the kernel drops signals to a namespace's init from
             inside it, and the harness makes itself non-dumpable) and, when the child ends, the
             harness kills every other process in the namespace. Refused anywhere else.
"""

import collections
import contextlib
import ctypes
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import torch

SYSTEM_PATHS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc"]  # read-only in bwrap
PASS_ENV = ["LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH",
            "LD_LIBRARY_PATH"]  # nothing secret  # fmt: skip
LOG_TAIL_LINES = 60  # lines of the child's output kept for the result
LOG_MAX_BYTES = 64 << 20  # train.log stops growing here
SCORE_LINE = re.compile(r"^\s*val_bpb\s*[:=]")  # only the harness may report a score
NAN_LINE = re.compile(r"^FAIL: .*(nan|inf|diverg)", re.IGNORECASE)  # train.py's fail-fast line
PR_SET_DUMPABLE = 4


class Terminated(BaseException):
    """The harness got SIGTERM (raised by its handler, so the child is killed on the way out)."""


class SandboxError(Exception):
    """No sandbox of the kind asked for can run here."""


def bwrap_works():
    if shutil.which("bwrap") is None:
        return False
    probe = ["bwrap", "--unshare-all", "--cap-drop", "ALL", "--ro-bind", "/", "/", "true"]
    return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0


def container_problem(data_dir):
    """Why the container sandbox cannot hold here, or None."""
    if os.getpid() != 1:
        return ("the harness is not PID 1 of its own PID namespace (a container's main process), "
                "so the child could stop its clock or outlive it")  # fmt: skip
    hidden = [
        split for split in ("val", "test", "raw") if os.path.exists(os.path.join(data_dir, split))
    ]
    if hidden:
        return f"{data_dir} shows {', '.join(hidden)}: mount only the train split for training"
    return None


def resolve_sandbox(choice, data_dir):
    """The sandbox to use for --sandbox auto|bwrap|container, or SandboxError saying why none."""
    if choice in ("auto", "bwrap") and bwrap_works():
        return "bwrap"
    if choice == "bwrap":
        raise SandboxError("--sandbox bwrap: bubblewrap is not installed or cannot make namespaces")
    problem = container_problem(data_dir)
    if choice == "container" and problem:
        raise SandboxError(f"--sandbox container: {problem}")
    if choice == "container" or (choice == "auto" and problem is None):
        return "container"
    raise SandboxError(
        "no sandbox for train.py: install bubblewrap (apt-get install bubblewrap) and allow it to "
        "make namespaces, or, in a pod, run the harness as the training container's main process "
        f"with --sandbox container ({problem})"
    )


def protect_harness():
    """Make the harness non-dumpable: a same-user child can then neither ptrace it nor read or
    write its memory through /proc (relevant where they share a PID namespace: containers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


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
    command = ["bwrap", "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop", "ALL",
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
    for hidden in ("val", "test", "raw"):  # empty, in case DATA_DIR lies under a mounted folder
        command += ["--tmpfs", os.path.join(data_dir, hidden)]
    return command + ["--chdir", code_dir]


def child_env(profile, time_budget, deadline, seed, train_dir, artifacts_dir, device):
    """An allowlisted environment: no credentials of ours, only what train.py needs."""
    env = {name: os.environ[name] for name in PASS_ENV if name in os.environ}
    env.update(
        PATH=f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        HOME="/tmp",
        TMPDIR="/tmp",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        AUTORESEARCH_PROFILE=profile,
        AUTORESEARCH_TIME_BUDGET=str(time_budget),
        AUTORESEARCH_DEADLINE=f"{deadline:.3f}",
        AUTORESEARCH_SEED=str(seed),
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


def kill_everything_else():
    """As PID 1 of a container: SIGKILL every other process of the PID namespace and reap them."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)
    until = time.monotonic() + 10
    while time.monotonic() < until:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def run_child(command, env, cwd, log_path, timeout, sandbox_kind):
    """Run the child, stream its output to our stdout and log_path, kill it (and all it started)
    past timeout seconds or as soon as it prints a score. Returns how it ended, as a dict."""
    run = dict(returncode=None, timed_out=False, score_line=None, reported_nan=False)
    tail = collections.deque(maxlen=LOG_TAIL_LINES)
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)  # fmt: skip

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
    except Terminated:
        kill_group(proc)
        if sandbox_kind != "container":
            raise  # Ctrl-C or a stop of the local loop: no verdict, the loop re-runs it
        # As PID 1, SIGTERM comes from the pod's deletion or from the child itself (the only
        # signal it can send us): end the run as a crash, never as a missing verdict.
        kill_everything_else()
        run["terminated"] = True
        run["returncode"] = proc.wait()
    except BaseException:  # Ctrl-C of the harness: never leave a training run behind
        kill_group(proc)
        if sandbox_kind == "container":
            kill_everything_else()
        raise
    run["training_seconds"] = time.monotonic() - t0
    kill_group(proc)  # whatever it left behind in its process group
    if sandbox_kind == "container":
        kill_everything_else()  # and in other sessions: nothing may outlive the window
    reader.join(timeout=30)
    run["log_tail"] = "".join(tail)
    return run
