"""The trusted harness's command line (trainer-image/harness.py), built in one place for the
local executor and the Kubernetes Job alike, so both give a candidate the same window."""

from __future__ import annotations

import math


def threshold_arg(value: float) -> str:
    """--test-if-val-below's value: "inf" asks for the test score whatever val_bpb is."""
    return "inf" if math.isinf(value) and value > 0 else repr(float(value))


def harness_args(
    *,
    data_dir: str,
    output_dir: str,
    profile: str,
    time_budget: int,
    startup_seconds: int,
    seed: int,
    sandbox: str,
    phase: str = "all",
    train_py: str | None = None,
    device: str | None = None,
    test_if_val_below: float | None = None,
    termination_log: str | None = None,
) -> list[str]:
    """The arguments after `harness.py`. The window (start-up + budget, then the harness's fixed
    export allowance) and the seed go to every phase, so each phase's result reports them; the
    test threshold only to the phases that evaluate (None: the test split is never scored)."""
    args = ["--phase", phase] if phase != "all" else []
    if train_py is not None:
        args += ["--train-py", train_py]
    args += [
        "--data-dir", data_dir,
        "--output-dir", output_dir,
        "--profile", profile,
        "--time-budget", str(time_budget),
        "--startup-seconds", str(startup_seconds),
        "--seed", str(seed),
        "--sandbox", sandbox,
    ]  # fmt: skip
    if device is not None:
        args += ["--device", device]
    if test_if_val_below is not None and phase != "train":
        args += ["--test-if-val-below", threshold_arg(test_if_val_below)]
    if termination_log is not None:
        args += ["--termination-log", termination_log]
    return args
