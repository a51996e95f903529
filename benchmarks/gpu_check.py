"""make gpu-check: the GPU path of train.py (bf16, torch.compile, MFU) proven in one prepared run.

Prepares a corpus with trainer-image/prepare.py, trains the baseline train.py under the trusted
harness for one budget, and reports tokens/s, MFU, peak VRAM, start-up seconds, val_bpb,
test_bpb, the harness's own training and total seconds, and the duty cycle (budget / wall), as
JSON (--report) and as a one-screen table. Exits 1 if the run crashed, 2 if nothing ran.

    make gpu-check                        # full profile, 300 s budget, cuda, with .venv's python
    make gpu-check PY=python3             # a machine that has its own torch and no .venv
    .venv/bin/python benchmarks/gpu_check.py --profile tiny --time-budget 3 --device cpu \\
        --startup-seconds 10 --vocab-size 512 --report /tmp/gpu-check.json     # CPU, seconds

Like the trainer it needs only the standard library, numpy, torch, tokenizers and safetensors
(it reads the harness's window and the GPU peak table from trainer-image/), so a GPU machine's
own PyTorch is enough.

A device machine receives only the checkout, not ../shared. Stage the corpus in the ignored
.gpu-check/ folder first (this copies it to .gpu-check/corpus/ and stops):

    .venv/bin/python benchmarks/gpu_check.py --stage-only

then run there with carry [".gpu-check"], writing the report where it comes back:

    make gpu-check PY=python3 GPU_CHECK_ARGS="--report $OUT/gpu-check.json"

A --corpus that does not exist on the machine is read from its staged copy in --data-cache.
On one H200 the call takes prepare (seconds) + the harness's window (120 s start-up allowance +
300 s budget + export) + evaluation: about 8 minutes; give the call a timeout of 9.5 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINER_DIR = REPO / "trainer-image"
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
DEFAULT_DATA_CACHE = REPO / ".gpu-check"
DEFAULT_REPORT = REPO / "runs" / "gpu-check.json"
sys.path.insert(0, str(TRAINER_DIR))

import torch  # noqa: E402

import harness  # noqa: E402  (its window: start-up, export and evaluation allowances)
import prepare  # noqa: E402  (the GPU peak table that train.py's MFU divides by)

sys.path.insert(0, str(REPO / "operator"))  # harness_cli is stdlib only: no install needed
from autoresearch_operator.harness_cli import harness_args  # noqa: E402

# Issue 9's targets, for the full profile on a GPU (the reference reports 39.8 % MFU on an H100).
TARGET_MFU_PERCENT = 40.0
TARGET_DUTY_CYCLE = 0.93
WATCHDOG_SLACK_SECONDS = 120.0  # past the harness's own bound: interpreter, imports, check

# What train.py may say about its start-up, in stats.json or in its log (`key: value`, `key=value`).
STARTUP_KEYS = ("first_step_seconds", "startup_seconds", "compile_seconds")
FIRST_STEP_LINE = re.compile(r"\bstep\s+0*1\b(?!\.)")  # train.py's progress line of step 1
CHILD_SPAWN_LINE = re.compile(r"^harness: training\b")  # printed just before the child starts


# ---------------------------------------------------------------------------
# Corpus, data and the two command lines
# ---------------------------------------------------------------------------


def stage_corpus(corpus: str, data_cache: Path) -> str:
    """The source to prepare from: a local corpus is copied into DATA_CACHE/corpus/ (so the cache
    alone, carried to another machine, can run the check); a missing one is read from that copy."""
    if prepare.is_url(corpus):
        return corpus
    source, staged = Path(corpus), data_cache / "corpus" / Path(corpus).name
    if source.is_file():
        if not staged.is_file() or staged.stat().st_size != source.stat().st_size:
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, staged.with_suffix(".tmp"))
            os.replace(staged.with_suffix(".tmp"), staged)
        return str(staged)
    if staged.is_file():
        print(f"gpu-check: {corpus} is not here; using its staged copy {staged}")
        return str(staged)
    raise SystemExit(
        f"gpu-check: corpus {corpus} not found, nor a staged copy at {staged}; on the machine that "
        "has it run: python benchmarks/gpu_check.py --stage-only --corpus PATH"
    )


def data_dir_for(source: str, data_cache: Path, vocab_size: int | None) -> Path:
    stem = Path(source.rstrip("/")).stem or "corpus"
    return data_cache / "data" / f"{stem}-vocab{vocab_size or prepare.VOCAB_SIZE}"


def prepare_command(source: str, data_dir: Path, vocab_size: int | None) -> list[str]:
    command = [sys.executable, str(TRAINER_DIR / "prepare.py"), "--data-dir", str(data_dir),
               "--source", source]  # fmt: skip
    return command + (["--vocab-size", str(vocab_size)] if vocab_size else [])


def harness_command(args: argparse.Namespace, data_dir: Path, output_dir: Path) -> list[str]:
    """The same command line the executors build (harness_cli), always scoring the test split."""
    return [sys.executable, "-u", str(TRAINER_DIR / "harness.py"), *harness_args(
        train_py=str(args.train_py), data_dir=str(data_dir), output_dir=str(output_dir),
        profile=args.profile, time_budget=args.time_budget,
        startup_seconds=startup_allowance(args), seed=args.seed if args.seed is not None else 0,
        sandbox=args.sandbox, device=args.device, test_if_val_below=math.inf,
    )]  # fmt: skip


def resolved_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def startup_allowance(args: argparse.Namespace) -> float:
    if args.startup_seconds is not None:
        return args.startup_seconds
    return float(harness.default_startup_seconds(args.profile, resolved_device(args.device)))


# ---------------------------------------------------------------------------
# Running the harness: stream its output, timestamp the lines that tell the start-up
# ---------------------------------------------------------------------------


def run_streaming(command: list[str], timeout: float) -> tuple[int, float, list[tuple[float, str]]]:
    """Run command, echo its output live, and return (exit code, wall seconds, its lines with
    the seconds since launch when each arrived). Past timeout it gets SIGTERM (the harness then
    kills its child), then SIGKILL."""
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1)  # fmt: skip
    lines: list[tuple[float, str]] = []

    def on_timeout(*_: object) -> None:
        print(f"gpu-check: the harness ran past {timeout:.0f}s: stopping it", flush=True)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    previous = signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
            sys.stdout.write(line)
            sys.stdout.flush()
        code = proc.wait()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if proc.poll() is None:  # interrupted: never leave the harness (and its child) behind
            proc.kill()
            proc.wait()
    return code, time.monotonic() - t0, lines


def claimed_startup_seconds(output_dir: Path, train_log: str) -> float | None:
    """The start-up train.py claims: first_step_seconds (its start to step 1 done: imports, model,
    compile) from its stats.json, read with the harness's own reader, else the last
    `first_step_seconds: X` (or startup_seconds, compile_seconds; `=` too) in its log."""
    claims = harness.read_claims(str(output_dir / "verdict" / "stats.json"))
    if claims.get("first_step_seconds") is not None:
        return claims["first_step_seconds"]
    pattern = re.compile(rf"\b({'|'.join(STARTUP_KEYS)})\s*[:=]\s*([0-9]+(?:\.[0-9]*)?)")
    found = [float(m.group(2)) for m in pattern.finditer(train_log)]
    return found[-1] if found else None


def observed_first_step_seconds(lines: list[tuple[float, str]]) -> float | None:
    """Seconds from the child's spawn (the harness's "training" line, else the harness's launch)
    to its step-1 progress line, as the lines arrived here. None when there is no such line or
    the output came in one burst at the end (not streamed live: the timestamps mean nothing)."""
    spawned = next((t for t, line in lines if CHILD_SPAWN_LINE.search(line)), 0.0)
    first = next((t for t, line in lines if t >= spawned and FIRST_STEP_LINE.search(line)), None)
    if first is None or lines[-1][0] - first < 0.5:
        return None
    return first - spawned


def startup_seconds(output_dir: Path, train_log: str, lines: list[tuple[float, str]],
                    allowance: float) -> tuple[float, str]:  # fmt: skip
    """The best start-up figure there is, and where it came from."""
    claimed = claimed_startup_seconds(output_dir, train_log)
    if claimed is not None:
        return claimed, "train.py's claim: its start to step 1 done"
    observed = observed_first_step_seconds(lines)
    if observed is not None:
        return observed, "observed: child spawn to its step-1 line"
    return allowance, "the allowance: train.py reported no start-up time"


# ---------------------------------------------------------------------------
# The device, the report and the table
# ---------------------------------------------------------------------------


def device_facts(device: str) -> dict[str, object]:
    """Device name, torch version, and the peak bf16 FLOP/s that train.py's MFU divides by
    (prepare.peak_bf16_flops: the one table). Asked after the run, so that this process holds
    no GPU memory while the harness trains."""
    if resolved_device(device) == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = prepare.peak_bf16_flops(name)
    else:
        name, peak = (
            f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)",
            None,
        )
    return {"device_name": name, "torch_version": torch.__version__, "peak_flops": peak}


def build_report(args: argparse.Namespace, result: dict, facts: dict, harness_wall: float,
                 prepare_seconds: float, startup: tuple[float, str], paths: dict) -> dict:  # fmt: skip
    targets_apply = args.profile == "full" and facts.get("peak_flops") is not None
    duty = args.time_budget / harness_wall if harness_wall > 0 else None
    mfu = result.get("mfu_percent")
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "status": result.get("status"),
        "reason": result.get("reason"),
        "detail": result.get("detail"),
        "profile": args.profile,
        "device": args.device,
        "device_name": facts.get("device_name"),
        "torch_version": facts.get("torch_version"),
        "host": platform.node(),
        "peak_flops": facts.get("peak_flops"),
        "time_budget": args.time_budget,
        "startup_allowance": result.get("startup_seconds"),
        "export_allowance": result.get("export_seconds"),
        "seed": result.get("seed"),
        "tokens_per_second": result.get("tokens_per_second"),
        "mfu_percent": mfu,
        "peak_vram_mb": result.get("peak_vram_mb"),
        "claimed": result.get("claimed", []),
        "startup_seconds": startup[0],
        "startup_seconds_source": startup[1],
        "val_bpb": result.get("val_bpb"),
        "test_bpb": result.get("test_bpb"),
        "training_seconds": result.get("training_seconds"),
        "total_seconds": result.get("total_seconds"),
        "harness_wall_seconds": harness_wall,
        "prepare_seconds": prepare_seconds,
        "duty_cycle": duty,
        "num_params_M": result.get("num_params_M"),
        "num_steps": result.get("num_steps"),
        "total_tokens_M": result.get("total_tokens_M"),
        "targets": {"mfu_percent": TARGET_MFU_PERCENT, "duty_cycle": TARGET_DUTY_CYCLE},
        "meets_targets": {  # None where the targets do not apply (tiny profile, CPU, unknown GPU)
            "mfu_percent": (mfu is not None and mfu >= TARGET_MFU_PERCENT)
            if targets_apply
            else None,
            "duty_cycle": (duty is not None and duty >= TARGET_DUTY_CYCLE)
            if targets_apply
            else None,
        },
        **paths,
    }


def fmt(value: object, spec: str = "", unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:{spec}}{unit}"


def verdict(met: bool | None, target: str) -> str:
    return {None: f"(target {target} on a GPU, full profile)", True: f"meets {target}",
            False: f"MISSES {target}"}[met]  # fmt: skip


def table(report: dict) -> str:
    """The report as one screen of plain text: name, value, where the value comes from."""
    claim = "train.py's claim"
    met, peak = report["meets_targets"], report["peak_flops"]
    peak_text = f"of {peak / 1e12:.0f} TFLOP/s" if peak else "no GPU peak known"
    status = report["status"]
    if status != "ok":
        status += f" ({report['reason']}: {report['detail']})"
    rows = [
        ("status", status, ""),
        ("device", report["device_name"], f"torch {report['torch_version']}"),
        ("model", f"{fmt(report['num_params_M'], '.1f', 'M')} params",
         f"{report['profile']} profile, {fmt(report['num_steps'])} steps ({claim}), "
         f"seed {fmt(report['seed'])}"),
        ("tokens/s", fmt(report["tokens_per_second"], ",.0f"), claim),
        ("MFU", fmt(report["mfu_percent"], ".1f", " %"),
         f"{claim}; {peak_text}; "
         + verdict(met["mfu_percent"], f">= {TARGET_MFU_PERCENT:.0f} %")),
        ("peak VRAM", fmt(report["peak_vram_mb"], ",.0f", " MiB"), claim),
        ("start-up", fmt(report["startup_seconds"], ".1f", " s"),
         f"{report['startup_seconds_source']} "
         f"(allowance {fmt(report['startup_allowance'], '.0f', ' s')})"),
        ("val_bpb", fmt(report["val_bpb"], ".4f"), "harness"),
        ("test_bpb", fmt(report["test_bpb"], ".4f"), "harness, held-out split"),
        ("training", fmt(report["training_seconds"], ".1f", " s"),
         f"harness: child spawn to exit (budget {report['time_budget']:.0f} s, "
         f"export {fmt(report['export_allowance'], '.0f', ' s')})"),
        ("total", fmt(report["total_seconds"], ".1f", " s"), "harness: start to result"),
        ("wall", fmt(report["harness_wall_seconds"], ".1f", " s"),
         f"harness process, launch to exit (prepare: {report['prepare_seconds']:.1f} s more)"),
        ("duty cycle", fmt(report["duty_cycle"], ".3f"),
         "budget / wall; " + verdict(met["duty_cycle"], f">= {TARGET_DUTY_CYCLE}")),
    ]  # fmt: skip
    rule = "-" * 96
    lines = [f"gpu-check {report['when']} on {report['host']}", rule]
    lines += [f"{name:<12}{value:<21} {note}" for name, value, note in rows]
    return "\n".join([*lines, rule, f"report: {report['report']}"])


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--corpus", default=str(DEFAULT_CORPUS), help="text file (or URL) to prepare")
    add("--data-cache", type=Path, default=DEFAULT_DATA_CACHE,
        help="the staged corpus and prepared data (default: %(default)s, git-ignored)")  # fmt: skip
    add("--report", type=Path, default=DEFAULT_REPORT,
        help="the JSON report; the harness's output goes to REPORT-run/ beside it")  # fmt: skip
    add("--profile", choices=sorted(prepare.SEQ_LEN_BY_PROFILE), default="full")
    add("--time-budget", type=float, default=300.0, help="seconds of training")
    add("--device", choices=["auto", "cpu", "cuda"], default="cuda")
    add("--startup-seconds", type=float, help="start-up allowance (default: the harness's)")
    add("--seed", type=int, help="data-order seed (default: 0, the harness's)")
    add("--sandbox", choices=["auto", "bwrap", "container"], default="auto")
    add("--vocab-size", type=int, help="tokenizer vocabulary (default: prepare.py's)")
    add("--train-py", type=Path, default=TRAINER_DIR / "train.py")
    add("--stage-only", action="store_true", help="copy the corpus into --data-cache and stop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = stage_corpus(args.corpus, args.data_cache)
    if args.stage_only:
        print(f"gpu-check: staged {source}; carry {args.data_cache} to the device machine")
        return 0

    data_dir = data_dir_for(source, args.data_cache, args.vocab_size)
    report_path = args.report.resolve()
    output_dir = report_path.with_name(report_path.stem + "-run")
    shutil.rmtree(output_dir, ignore_errors=True)  # never read an earlier run's result
    output_dir.mkdir(parents=True)

    t0 = time.monotonic()
    if subprocess.run(prepare_command(source, data_dir, args.vocab_size)).returncode != 0:
        print("gpu-check: prepare.py failed", file=sys.stderr)
        return 2
    prepare_seconds = time.monotonic() - t0

    command = harness_command(args, data_dir, output_dir)
    allowance = startup_allowance(args)
    bound = (allowance + args.time_budget + harness.EXPORT_SECONDS[args.profile]
             + harness.EVALUATION_SECONDS[args.profile])  # fmt: skip
    print("gpu-check: " + " ".join(command), flush=True)
    code, wall, lines = run_streaming(command, bound + WATCHDOG_SLACK_SECONDS)
    result_path = output_dir / "result.json"
    if not result_path.is_file():
        print(f"gpu-check: the harness exited {code} without a result", file=sys.stderr)
        return 2
    result = json.loads(result_path.read_text())
    train_log_path = output_dir / "train.log"
    train_log = train_log_path.read_text(errors="replace") if train_log_path.is_file() else ""
    startup = startup_seconds(output_dir, train_log, lines, allowance)

    paths = {"report": str(report_path), "output_dir": str(output_dir), "data_dir": str(data_dir),
             "corpus": source, "harness_command": command, "harness_exit_code": code}  # fmt: skip
    report = build_report(
        args, result, device_facts(args.device), wall, prepare_seconds, startup, paths
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.with_suffix(".tmp").write_text(json.dumps(report, indent=2) + "\n")
    os.replace(report_path.with_suffix(".tmp"), report_path)
    print("\n" + table(report))
    return 0 if report["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
