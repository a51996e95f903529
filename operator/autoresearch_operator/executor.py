"""Where experiments run. One small interface; the local one runs the trusted harness as a child.

The Kubernetes Job executor (operator) reads the same result JSON from a pod's termination
message, so both produce identical TrainResults.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import time
from pathlib import Path

from .core.interfaces import Executor, ExperimentJob, Progress, ProgressCallback
from .core.records import CrashReason, TrainResult
from .harness_cli import harness_args

__all__ = ["Executor", "ExperimentJob", "LocalExecutor", "Progress", "ProgressCallback"]

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINER_DIR = Path(os.environ.get("AUTORESEARCH_TRAINER_DIR", REPO_ROOT / "trainer-image"))
_LOSS = re.compile(r"\bloss[\s:=]+([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)", re.IGNORECASE)
_STEP = re.compile(r"^\s*step\s+(\d+)", re.IGNORECASE)


def baseline_train_py() -> str:
    return (TRAINER_DIR / "train.py").read_text()


def _visible_gpus() -> list[str]:
    """GPU indices this process may use (CUDA_VISIBLE_DEVICES or nvidia-smi), without importing torch."""
    if (visible := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return [g for g in visible.split(",") if g.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def parse_progress(line: str) -> tuple[int | None, float | None]:
    """(step, loss) from a trainer progress line; either may be None."""
    step = _STEP.search(line)
    loss = _LOSS.search(line)
    return (int(step.group(1)) if step else None, float(loss.group(1)) if loss else None)


class LocalExecutor:
    """Runs `harness.py` as a subprocess, one experiment at a time per device."""

    def __init__(
        self,
        data_dir: Path,
        experiments_dir: Path,
        *,
        device: str = "auto",
        sandbox: str = "auto",
        keep_model: bool = False,
    ):
        self.data_dir = Path(data_dir).resolve()  # the harness runs with cwd=trainer-image/
        self.experiments_dir = Path(experiments_dir).resolve()
        self.device = device
        self.sandbox = sandbox
        self.keep_model = keep_model
        self.gpus = _visible_gpus() if device in ("auto", "cuda") else []
        self.slots = max(1, len(self.gpus))  # one experiment per GPU; one at a time on the CPU
        self._live: set[subprocess.Popen[str]] = set()
        self._free_gpus: queue.Queue[str] = queue.Queue()
        for gpu in self.gpus:
            self._free_gpus.put(gpu)

    def cancel(self) -> None:
        """Stop every running harness (it kills its training child): the loop was interrupted."""
        for proc in list(self._live):
            proc.terminate()

    def output_dir(self, experiment: int, run: int = 0) -> Path:
        """experiments/0007 for an experiment's first run, experiments/0007-run-2 for its third."""
        return self.experiments_dir / (f"{experiment:04d}" + (f"-run-{run}" if run else ""))

    def run(self, job: ExperimentJob, on_progress: ProgressCallback | None = None) -> TrainResult:
        out = self.output_dir(job.experiment, job.run)
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").unlink(missing_ok=True)
        train_py = out / "train.py"
        train_py.write_text(job.train_py)
        cmd = [
            sys.executable,
            "-u",
            str(TRAINER_DIR / "harness.py"),
            *harness_args(
                train_py=str(train_py),
                data_dir=str(self.data_dir),
                output_dir=str(out),
                profile=job.profile,
                time_budget=job.time_budget,
                startup_seconds=job.startup_seconds,
                seed=job.seed,
                sandbox=self.sandbox,
                device=self.device,
                test_if_val_below=job.test_if_val_below,
            ),
        ]
        gpu = self._free_gpus.get() if self.gpus else None  # blocks until a GPU is free
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        try:
            return self._run(job, out, cmd, env, on_progress)
        finally:
            if gpu is not None:
                self._free_gpus.put(gpu)

    def _run(
        self,
        job: ExperimentJob,
        out: Path,
        cmd: list[str],
        env: dict[str, str],
        on_progress: ProgressCallback | None,
    ) -> TrainResult:
        start = time.monotonic()
        tail: list[str] = []
        progress = Progress(job.experiment, 0.0, run=job.run)
        with (out / "harness.log").open("w") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=TRAINER_DIR,
            )
            self._live.add(proc)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line])[-40:]
                step, loss = parse_progress(line)
                progress.wall_seconds = time.monotonic() - start
                progress.line = line.rstrip()
                if step is not None:
                    progress.step = step
                if loss is not None:
                    progress.loss = loss
                if on_progress:
                    on_progress(progress)
            rc = proc.wait()
            self._live.discard(proc)
        if not self.keep_model:  # the exported weights; the rest of verdict/ is small
            (out / "verdict" / "model.safetensors").unlink(missing_ok=True)
        result_path = out / "result.json"
        if not result_path.exists():
            return TrainResult(
                status="crash",
                reason=CrashReason.INFRASTRUCTURE.value,
                detail=f"the harness exited with code {rc} without writing result.json",
                total_seconds=time.monotonic() - start,
                log_tail="".join(tail)[-3000:],
            )
        return TrainResult.from_json(json.loads(result_path.read_text()))
