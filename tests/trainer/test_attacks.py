"""Candidates that attack the harness (tests/trainer/attacks.py), each run under the real harness
and sandbox on the CPU: none gains anything. A crash names its reason; a run that completes is
scored by the harness alone, whatever the candidate wrote."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from attacks import ATTACKS, MARKER, TRAINER_DIR

import harness

pytestmark = pytest.mark.slow  # each imports torch in a sandbox and trains for seconds


def survivors(needle: str) -> list[str]:
    """Command lines of live processes (any namespace) that mention needle."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline and str(os.getpid()) != pid:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_an_attacking_candidate_gains_nothing(attack, run_train_py, baseline_train_py: str) -> None:
    Path(MARKER).unlink(missing_ok=True)
    # a start-up allowance that outlasts the export allowance, so claiming the window twice shows
    result, output_dir = run_train_py(attack.source(baseline_train_py), time_budget=2,
                                      startup_seconds=12)  # fmt: skip
    expected = ("ok", None) if attack.outcome == "ok" else ("crash", attack.outcome)
    assert (result["status"], result["reason"]) == expected, result["detail"]
    assert attack.because in (result["detail"] or ""), result["detail"]
    window = 12 + 2 + harness.EXPORT_SECONDS["tiny"]
    assert result["training_seconds"] < window + 5  # the harness's clock, not the candidate's
    assert not survivors("autoresearch-attack-marker"), "a process outlived the harness"
    assert not os.path.exists(MARKER), "the candidate wrote outside its sandbox"
    run = json.loads((output_dir / "verdict" / "run.json").read_text())
    assert run["time_budget"] == 2 and "log_tail" in run  # the harness's record, not a forgery
    if attack.outcome == "ok":
        assert 1.0 < result["val_bpb"] < 5.0  # measured by the harness, not the 0.01 it wrote
        assert json.loads((output_dir / "result.json").read_text()) == result


def test_the_sandbox_is_read_only_offline_and_without_our_secrets(
    run_train_py, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-the-candidate")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-not-for-the-candidate")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    targets = [data_dir / "train" / "train.bin", data_dir / "train" / "tokenizer.json",
               TRAINER_DIR / "harness.py", Path(sys.executable).resolve(),
               Path(harness.torch.__file__)]  # fmt: skip
    before = {path: path.stat().st_mtime_ns for path in targets}
    try:
        result, _ = run_train_py(
            "import ctypes, os, socket, sys\n"
            f"for path in {[str(t) for t in targets]!r} + [os.path.dirname(sys.executable)]:\n"
            "    for how in ('a', 'x'):\n"
            "        try:\n"
            "            p = path if how == 'a' else os.path.join(os.path.dirname(path), 'planted.py')\n"
            "            open(p, how).write('# planted')\n"
            "            print('WROTE', p, flush=True)\n"
            "        except OSError as e:\n"
            "            print('blocked', path, type(e).__name__, flush=True)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "MS_REMOUNT, MS_BIND = 32, 4096\n"
            f"for path in ({str(data_dir / 'train')!r}, '/usr', os.path.dirname(sys.executable)):\n"
            "    rc = libc.mount(None, path.encode(), None, MS_REMOUNT | MS_BIND, None)\n"
            "    print('REMOUNTED' if rc == 0 else 'remount blocked', path, flush=True)\n"
            "print('ENV', sorted(os.environ), os.environ.get('OPENAI_API_KEY'), flush=True)\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
            "    print('CONNECTED', flush=True)\n"
            "except OSError as e:\n"
            "    print('network blocked', type(e).__name__, flush=True)\n"
        )
    finally:
        listener.close()
    log = result["log_tail"]
    assert "WROTE" not in log and "REMOUNTED" not in log and "CONNECTED" not in log, log
    assert log.count("blocked") >= 2 * len(targets) + 3 + 1
    assert "not-for-the-candidate" not in log and "AWS_SECRET" not in log
    assert all(path.stat().st_mtime_ns == before[path] for path in targets)
    assert not any(p.name == "planted.py" for t in targets for p in t.parent.iterdir())


def train_as_pid_1(train_py: Path, train_only: Path, out: Path) -> subprocess.CompletedProcess:
    """The training phase as a pod's container runs it: the harness as PID 1 of a PID namespace."""
    return subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", "--", sys.executable,
         str(TRAINER_DIR / "harness.py"), "--phase", "train", "--sandbox", "container",
         "--train-py", str(train_py), "--data-dir", str(train_only), "--output-dir", str(out),
         "--profile", "tiny", "--device", "cpu", "--time-budget", "2", "--startup-seconds", "3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a container's PID namespace needs root and unshare here",
)
def test_in_a_container_the_harness_is_pid_1_and_nothing_outlives_it(
    data_dir: Path, tmp_path: Path, baseline_train_py: str
) -> None:
    train_only = tmp_path / "train-only"
    shutil.copytree(data_dir / "train", train_only / "train")  # as the training container's mount
    train_py = tmp_path / "train.py"
    train_py.write_text(ATTACKS[3].source(baseline_train_py))  # leave-process
    out = tmp_path / "out"
    trained = train_as_pid_1(train_py, train_only, out)
    assert trained.returncode == 0, trained.stderr
    assert "sandbox container" in trained.stdout and "daemon started" in trained.stdout
    assert not survivors("autoresearch-attack-marker"), "the daemon outlived the harness"
    assert Path(MARKER).exists()  # it ran, unsandboxed but for the container's own limits
    written = Path(MARKER).stat().st_mtime
    time.sleep(1)
    assert Path(MARKER).stat().st_mtime == written  # and stopped with the harness
    Path(MARKER).unlink()
    run = json.loads((out / "verdict" / "run.json").read_text())
    assert run["sandbox"] == "container" and run["returncode"] == 0

    # the candidate's only handle on PID 1 is a signal: STOP and KILL are dropped by the kernel,
    # TERM ends the run as a crash with a verdict, never a stopped clock or a missing record
    train_py.write_text(
        "import os, signal, time\n"
        "for sig in (signal.SIGSTOP, signal.SIGKILL):\n"
        "    os.kill(1, sig)\n"
        "print('still here', flush=True)\n"
        "time.sleep(1)\n"
        "os.kill(1, signal.SIGTERM)\n"
        "time.sleep(600)\n"
    )
    signalled = train_as_pid_1(train_py, train_only, out)
    assert signalled.returncode == 0, signalled.stderr
    assert "still here" in signalled.stdout
    run = json.loads((out / "verdict" / "run.json").read_text())
    assert run["terminated"] and run["training_seconds"] < 10
    evaluated = subprocess.run(
        [sys.executable, str(TRAINER_DIR / "harness.py"), "--phase", "evaluate", "--data-dir",
         str(data_dir), "--output-dir", str(out), "--profile", "tiny"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    assert (result["status"], result["reason"]) == ("crash", "exception"), evaluated.stderr
    assert "SIGTERM" in result["detail"]

    # the same harness outside a PID namespace of its own refuses the container mode
    refused = subprocess.run(
        [sys.executable, str(TRAINER_DIR / "harness.py"), "--phase", "train", "--sandbox",
         "container", "--train-py", str(train_py), "--data-dir", str(train_only),
         "--output-dir", str(tmp_path / "refused"), "--profile", "tiny", "--device", "cpu"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "not PID 1" in refused.stderr
