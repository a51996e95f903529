"""
The trusted harness. It owns the clock, the seed and the metric: it runs a candidate train.py in a
sandbox that cannot see the val or test split (sandbox.py), gives it one fixed window and kills it
(and everything it started) at the end, then runs the model it exported with its own interpreter,
checks it cannot see the future, and measures val_bpb (and, on request, test_bpb) itself.

    python harness.py --train-py train.py --data-dir /data --output-dir out [--profile tiny]
        [--time-budget 300] [--startup-seconds S] [--seed N] [--test-if-val-below X|inf]
        [--sandbox auto|bwrap|container] [--device auto|cpu|cuda] [--phase all|train|evaluate]

The window: the child may use S (start-up: import, compile, warm-up) + B (the budget) seconds; it
learns when they end from prepare.time_left(). It then has EXPORT_SECONDS to export, and is killed
at S + B + EXPORT_SECONDS after its start. A run that has not exported by then is a `timeout`.

--phase train runs train.py alone (only DATA_DIR/train needed) and --phase evaluate judges that
run afterwards (DATA_DIR/val needed, DATA_DIR/test when asked), so that a pod can train and
evaluate in two containers. See docs/harness.md for the threat model.

OUTPUT/train.log    the child's stdout and stderr, also streamed live to our stdout
OUTPUT/verdict/     written by the harness after the child and all it started are gone: the
                    export (model.json, model.safetensors), the child's stats.json (its claims)
                    and run.json (the harness's record of the run). Evaluation reads only this.
OUTPUT/result.json  the result: the fields of TrainResult (autoresearch_operator/records.py);
                    also, under 4 KiB, to $AUTORESEARCH_TERMINATION_LOG or /dev/termination-log
OUTPUT/code/        the train.py that ran, beside the fixed prepare.py

Exit 0 whenever a result was written, a crash result included; non-zero if the harness failed.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import stat
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import evaluation  # noqa: E402  (the fixed prepare.py, sandbox.py and evaluation.py beside this file)
import prepare  # noqa: E402
import sandbox  # noqa: E402

EVAL_TOKENS = {"full": 40 * 524288, "tiny": 32768}  # tokens scored at most, per split
EVAL_BATCH_SIZE = {"full": 16, "tiny": 8}  # sequences of MAX_SEQ_LEN per forward pass
EXPORT_SECONDS = {"full": 20, "tiny": 10}  # after the training window, to export; then the kill
EVALUATION_SECONDS = {"full": 600, "tiny": 120}  # loading, checking and scoring the export
STARTUP_SECONDS = {("full", "cuda"): 120, ("full", "cpu"): 60, ("tiny", "cuda"): 10,
                   ("tiny", "cpu"): 10}  # default start-up allowance  # fmt: skip
TERMINATION_LOG_BYTES = 4096  # Kubernetes' limit for a termination message
STATS_LIMIT = 1 << 16  # bytes of stats.json read
# What the child says about itself: reported, marked as its claims, never used for a decision.
CLAIMS = {"num_steps": int, "total_tokens_M": float, "tokens_per_second": float,
          "mfu_percent": float, "peak_vram_mb": float, "first_step_seconds": float}  # fmt: skip
REPORTED_CLAIMS = [name for name in CLAIMS if name != "first_step_seconds"]  # TrainResult's fields
SUMMARY_KEYS = ["val_bpb", "test_bpb", "training_seconds", "total_seconds", "peak_vram_mb",
                "mfu_percent", "total_tokens_M", "tokens_per_second", "num_steps", "num_params_M",
                "seed", "status", "reason", "detail"]  # fmt: skip
VERDICT_FILES = (prepare.MODEL_GRAPH, prepare.MODEL_WEIGHTS, "stats.json")


class HarnessError(Exception):
    """The harness could not run: bad arguments, unprepared data, no sandbox."""


def default_startup_seconds(profile, device):
    return STARTUP_SECONDS[(profile, device)]


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------


def read_claims(path):
    """train.py's own stats, as claims: finite numbers of the known names only."""
    try:
        stats = json.loads(evaluation.read_regular_file(path, STATS_LIMIT))
    except (evaluation.RejectedModel, ValueError):
        return {}
    if not isinstance(stats, dict):
        return {}
    if isinstance(stats.get("total_tokens"), (int, float)):
        stats["total_tokens_M"] = stats["total_tokens"] / 1e6
    return {
        name: kind(stats[name])
        for name, kind in CLAIMS.items()
        if isinstance(stats.get(name), (int, float)) and math.isfinite(stats[name])
    }


def make_result(run, status, reason=None, detail=None, val_bpb=None, test_bpb=None,
                claims=None, num_params=None):  # fmt: skip
    claims = claims or {}
    return {
        "status": status,
        "reason": reason,
        "detail": detail[:500] if detail else detail,
        "val_bpb": val_bpb,
        "test_bpb": test_bpb,
        "training_seconds": run["training_seconds"],
        "total_seconds": None,
        "startup_seconds": run["startup_seconds"],
        "time_budget": run["time_budget"],
        "export_seconds": run["export_seconds"],
        "seed": run["seed"],
        "num_params_M": num_params / 1e6 if num_params is not None else None,
        **{name: claims.get(name) for name in REPORTED_CLAIMS},
        "claimed": sorted(name for name in claims if name in REPORTED_CLAIMS),
        "log_tail": run["log_tail"],
    }


def fit_json(result, limit=TERMINATION_LOG_BYTES):
    """The result as JSON of at most `limit` bytes, dropping the start of log_tail as needed
    (the other fields are short: detail is capped at 500 characters)."""
    data = dict(result)
    while True:
        text = json.dumps(data, ensure_ascii=False)
        excess = len(text.encode("utf-8")) - limit
        if excess <= 0 or not data["log_tail"]:
            return text
        data["log_tail"] = data["log_tail"].encode()[excess:].decode("utf-8", errors="ignore")


def write_new_file(path, text):
    """Write text to path as a new regular file, whatever (link, folder) was there."""
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def write_result(result, output_dir):
    write_new_file(os.path.join(output_dir, "result.json"), json.dumps(result, indent=2))
    termination_log = os.environ.get("AUTORESEARCH_TERMINATION_LOG")
    if termination_log is None and os.access("/dev/termination-log", os.W_OK):
        termination_log = "/dev/termination-log"  # in a Kubernetes container
    if termination_log:
        with open(termination_log, "w", encoding="utf-8") as f:
            f.write(fit_json(result))


def print_summary(result):
    print("---")
    for key in SUMMARY_KEYS:
        value = result[key]
        if key in ("reason", "detail", "test_bpb") and value is None:
            continue
        if value is None:
            text = "n/a"
        elif key in ("val_bpb", "test_bpb"):
            text = f"{value:.6f}"
        else:
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
        claimed = "  (claimed by train.py)" if key in result["claimed"] else ""
        print(f"{key + ':':<18}{text}{claimed}")


# ---------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------


def load_split(data_dir, split):
    folder = os.path.join(data_dir, split)
    with open(os.path.join(folder, "meta.json")) as f:
        vocab_size = json.load(f)["vocab_size"]
    tokens = np.memmap(os.path.join(folder, f"{split}.bin"), dtype=np.uint16, mode="r")
    return tokens, np.load(os.path.join(folder, "token_bytes.npy")), vocab_size


def judge(run, data_dir, verdict_dir, profile, test_if_val_below):
    """The verdict on a finished run: a crash result, or the val_bpb (and test_bpb) measured here."""
    claims = read_claims(os.path.join(verdict_dir, "stats.json"))

    def crash(reason, detail, num_params=None):
        return make_result(run, "crash", reason, detail, claims=claims, num_params=num_params)

    if run.get("terminated"):
        return crash("exception", "training was stopped by SIGTERM: the pod was deleted, or the "
                     "candidate signalled the harness")  # fmt: skip
    if run["score_line"] is not None:
        return crash("rejected-by-harness", f"train.py printed its own score "
                     f"({run['score_line']!r}); only the harness measures val_bpb")  # fmt: skip
    if run["timed_out"]:
        window = run["startup_seconds"] + run["time_budget"]
        return crash("timeout", f"killed at the end of its window: {window:.0f}s (start-up "
                     f"{run['startup_seconds']:.0f}s + budget {run['time_budget']:.0f}s) + "
                     f"{run['export_seconds']:.0f}s to export")  # fmt: skip
    if run["returncode"] != 0:
        lines = [line.strip() for line in run["log_tail"].splitlines() if line.strip()]
        detail = f"train.py exited with code {run['returncode']}: {(lines or ['no output'])[-1]}"
        return crash("nan" if run["reported_nan"] else "exception", detail)
    if not os.path.exists(os.path.join(verdict_dir, prepare.MODEL_GRAPH)):
        return crash("exception", "train.py exited 0 without exporting its model "
                     "(prepare.save_model_for_eval)")  # fmt: skip

    tokens, token_bytes, vocab_size = load_split(data_dir, "val")
    seq_len, batch_size = prepare.SEQ_LEN_BY_PROFILE[profile], EVAL_BATCH_SIZE[profile]
    device, num_params = run["device"], None
    try:
        with evaluation.time_limit(EVALUATION_SECONDS[profile]):
            model = evaluation.load_model(verdict_dir, device)
            num_params = model.num_params
            print(f"harness: evaluating {num_params / 1e6:.2f}M params on {device}, every batch "
                  "twice (causality check)", flush=True)  # fmt: skip
            score = lambda split_tokens, split_bytes, salt: evaluation.score_bpb(  # noqa: E731
                model, split_tokens, split_bytes, vocab_size, seq_len, batch_size,
                EVAL_TOKENS[profile], run["seed"] * 2 + salt, device)  # fmt: skip
            val_bpb = score(tokens, token_bytes, 0)
            test_bpb = None
            if (
                test_if_val_below is not None
                and math.isfinite(val_bpb)
                and val_bpb < test_if_val_below
            ):
                test_tokens, test_bytes, _ = load_split(data_dir, "test")
                test_bpb = score(test_tokens, test_bytes, 1)
    except evaluation.RejectedModel as e:
        return crash("rejected-by-harness", str(e), num_params)
    except evaluation.EvaluationTimeout as e:
        return crash("timeout", str(e), num_params)
    except Exception as e:
        return crash("exception", f"evaluating the export failed: {type(e).__name__}: {e}",
                     num_params)  # fmt: skip
    if not math.isfinite(val_bpb):
        return crash("nan", f"val_bpb is {val_bpb}: the model's logits are not finite", num_params)
    return make_result(run, "ok", None, None, val_bpb, test_bpb, claims, num_params)


# ---------------------------------------------------------------------------
# The phases: train (no val split needed), evaluate (no train.py run), or both
# ---------------------------------------------------------------------------


def check_data(data_dir, parts):
    for part in parts:
        if not os.path.isfile(os.path.join(data_dir, part)):
            raise HarnessError(f"{data_dir} lacks {part}: run prepare.py --data-dir {data_dir}")


def eval_parts(test_if_val_below):
    splits = ["val"] + (["test"] if test_if_val_below is not None else [])
    return [f"{s}/{name}" for s in splits for name in ("meta.json", f"{s}.bin", "token_bytes.npy")]


def resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda: no CUDA device is visible")
    return device


def collect_verdict_inputs(artifacts_dir, verdict_dir):
    """Move the child's exports into a fresh verdict folder: regular files only, links ignored.
    Called once the child and everything it started are gone, so nothing can swap them after."""
    shutil.rmtree(verdict_dir, ignore_errors=True)
    os.makedirs(verdict_dir)
    for name in VERDICT_FILES:
        path = os.path.join(artifacts_dir, name)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.replace(path, os.path.join(verdict_dir, name))
    shutil.rmtree(artifacts_dir, ignore_errors=True)


def train_phase(train_py, data_dir, output_dir, time_budget, startup_seconds, profile, seed,
                sandbox_kind, device):  # fmt: skip
    """Run train_py sandboxed in its window; leaves OUTPUT/train.log and OUTPUT/verdict/."""
    started_at = time.time()
    data_dir, output_dir = os.path.realpath(data_dir), os.path.realpath(output_dir)
    if not os.path.isfile(train_py):
        raise HarnessError(f"--train-py {train_py}: no such file")
    check_data(data_dir, ["train/meta.json", "train/train.bin"])
    device = resolve_device(device)
    if startup_seconds is None:
        startup_seconds = default_startup_seconds(profile, device)
    try:
        sandbox_kind = sandbox.resolve_sandbox(sandbox_kind, data_dir)
    except sandbox.SandboxError as e:
        raise HarnessError(str(e)) from None

    code_dir = os.path.join(output_dir, "code")
    artifacts_dir = os.path.join(output_dir, "artifacts")
    for folder in (code_dir, artifacts_dir, os.path.join(output_dir, "verdict")):
        shutil.rmtree(folder, ignore_errors=True)
    for folder in (code_dir, artifacts_dir):
        os.makedirs(folder)
    for stale in ("result.json", "model.pt2", "run.json", "stats.json"):  # never judge stale files
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, stale))
    shutil.copy(train_py, os.path.join(code_dir, "train.py"))
    shutil.copy(os.path.join(HERE, "prepare.py"), os.path.join(code_dir, "prepare.py"))

    command = [os.path.abspath(sys.executable), "-u", os.path.join(code_dir, "train.py")]
    if sandbox_kind == "bwrap":
        command = sandbox.bwrap_command(data_dir, code_dir, artifacts_dir, device) + command
    export_seconds = EXPORT_SECONDS[profile]
    child_started = time.time()
    deadline = child_started + startup_seconds + time_budget
    env = sandbox.child_env(profile, time_budget, deadline, seed,
                            os.path.join(data_dir, "train"), artifacts_dir, device)  # fmt: skip
    print(f"harness: training {train_py} ({profile} profile, {device}, sandbox {sandbox_kind}, "
          f"seed {seed}); window {startup_seconds:.0f}s start-up + {time_budget:.0f}s budget, "
          f"killed {export_seconds:.0f}s later", flush=True)  # fmt: skip
    log_path = os.path.join(output_dir, "train.log")
    window = startup_seconds + time_budget + export_seconds
    run = sandbox.run_child(command, env, code_dir, log_path, window, sandbox_kind)
    collect_verdict_inputs(artifacts_dir, os.path.join(output_dir, "verdict"))
    run.update(started_at=started_at, device=device, sandbox=sandbox_kind, seed=seed,
               startup_seconds=float(startup_seconds), time_budget=float(time_budget),
               export_seconds=float(export_seconds), profile=profile)  # fmt: skip
    write_new_file(os.path.join(output_dir, "verdict", "run.json"), json.dumps(run, indent=2))
    return run


def evaluate_phase(data_dir, output_dir, profile, test_if_val_below=None):
    """Judge the run train_phase recorded; write OUTPUT/result.json and print the summary."""
    data_dir, output_dir = os.path.realpath(data_dir), os.path.realpath(output_dir)
    check_data(data_dir, eval_parts(test_if_val_below))
    with open(os.path.join(data_dir, "val", "meta.json")) as f:
        val_tokens = json.load(f)["num_tokens"]
    if val_tokens <= prepare.SEQ_LEN_BY_PROFILE[profile]:
        raise HarnessError(
            f"the val split has {val_tokens} tokens: too few for one {profile} window"
        )
    verdict_dir = os.path.join(output_dir, "verdict")
    try:
        run = json.loads(
            evaluation.read_regular_file(os.path.join(verdict_dir, "run.json"), 1 << 20)
        )
    except (evaluation.RejectedModel, ValueError) as e:
        raise HarnessError(f"no record of a training run in {verdict_dir}: {e}") from None
    result = judge(run, data_dir, verdict_dir, profile, test_if_val_below)
    result["total_seconds"] = time.time() - run["started_at"]
    write_result(result, output_dir)
    print_summary(result)
    return result


def run_harness(train_py, data_dir, output_dir, time_budget=300.0, startup_seconds=None,
                profile="full", seed=0, test_if_val_below=None, sandbox="auto", device="auto"):  # fmt: skip
    """Train train_py in its window, measure it, write OUTPUT/result.json; return the result."""
    if profile not in prepare.SEQ_LEN_BY_PROFILE:
        raise HarnessError(f"profile {profile!r}: not one of {sorted(prepare.SEQ_LEN_BY_PROFILE)}")
    check_data(data_dir, eval_parts(test_if_val_below))  # before training
    train_phase(train_py, data_dir, output_dir, time_budget, startup_seconds, profile, seed,
                sandbox, device)  # fmt: skip
    return evaluate_phase(data_dir, output_dir, profile, test_if_val_below)


def terminate(*_):
    raise sandbox.Terminated


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a candidate train.py and measure val_bpb")
    parser.add_argument("--train-py", help="the candidate train.py (phases all and train)")
    parser.add_argument("--data-dir", required=True, help="prepared by prepare.py")
    parser.add_argument("--output-dir", required=True, help="train.log, verdict/, result.json")
    parser.add_argument("--time-budget", type=float, default=300.0,
                        help="seconds of training after the start-up allowance (default: 300)")  # fmt: skip
    parser.add_argument("--startup-seconds", type=float, help="start-up allowance (import, "
                        "compile, warm-up) before the budget; default by profile and device")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="data-order seed passed to train.py")
    parser.add_argument("--test-if-val-below", type=float, metavar="X", help="also score the "
                        "held-out test split when val_bpb < X ('inf': always)")  # fmt: skip
    parser.add_argument("--profile", choices=sorted(prepare.SEQ_LEN_BY_PROFILE), default="full")
    parser.add_argument("--sandbox", choices=["auto", "bwrap", "container"], default="auto")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--phase", choices=["all", "train", "evaluate"], default="all")
    parser.add_argument("--termination-log", help="also write the result JSON (< 4 KiB) here, "
                        "e.g. /dev/termination-log in a pod")  # fmt: skip
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, terminate)  # unwind, so the child is killed too
    sandbox.protect_harness()
    if args.termination_log:
        os.environ["AUTORESEARCH_TERMINATION_LOG"] = args.termination_log
    os.makedirs(args.output_dir, exist_ok=True)
    try:
        if args.phase != "evaluate" and not args.train_py:
            raise HarnessError(f"--phase {args.phase} needs --train-py")
        if args.phase == "all":
            run_harness(args.train_py, args.data_dir, args.output_dir, args.time_budget,
                        args.startup_seconds, args.profile, args.seed, args.test_if_val_below,
                        args.sandbox, args.device)  # fmt: skip
        elif args.phase == "train":
            train_phase(args.train_py, args.data_dir, args.output_dir, args.time_budget,
                        args.startup_seconds, args.profile, args.seed, args.sandbox, args.device)  # fmt: skip
        else:
            evaluate_phase(args.data_dir, args.output_dir, args.profile, args.test_if_val_below)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        sys.exit(2)
    except sandbox.Terminated:
        sys.exit(143)


if __name__ == "__main__":
    main()
