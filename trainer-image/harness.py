"""
The trusted harness. It runs a candidate train.py in a sandbox that cannot see the val split
(sandbox.py), kills it past its time budget, then loads the model it exported (model.pt2),
checks that the model is causal, and measures val_bpb with its own code on the pinned val split.

    python harness.py --train-py train.py --data-dir /data --output-dir out [--profile tiny]
        [--time-budget 300] [--grace S] [--sandbox auto|bwrap|user|none] [--device auto|cpu|cuda]
        [--phase all|train|evaluate]

--phase train runs train.py alone (only DATA_DIR/train needed) and --phase evaluate judges that
run afterwards (DATA_DIR/val needed), so that a pod can train and evaluate in two containers.

OUTPUT/train.log    the child's stdout and stderr, also streamed live to our stdout
OUTPUT/model.pt2    the exported model; OUTPUT/stats.json: the child's own, untrusted, stats
OUTPUT/run.json     how the child ended (exit code, timeout, score line, log tail)
OUTPUT/result.json  the result: the fields of TrainResult (autoresearch_operator/records.py);
                    also, under 4 KiB, to $AUTORESEARCH_TERMINATION_LOG or /dev/termination-log
OUTPUT/code/        the train.py that ran, beside the fixed prepare.py (read-only to the child)

The child may write only OUTPUT/artifacts/ (emptied into OUTPUT/ when it ends) and its /tmp.
Exit 0 whenever a result was written, a crash result included; non-zero if the harness failed.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import prepare  # noqa: E402  (the fixed prepare.py and sandbox.py beside this file)
import sandbox  # noqa: E402

EVAL_TOKENS = {"full": 40 * 524288, "tiny": 32768}  # val tokens scored at most
EVAL_BATCH_SIZE = {"full": 16, "tiny": 8}  # sequences of MAX_SEQ_LEN per forward pass
CAUSAL_RTOL = 1e-4  # earlier logits may move by this fraction of the largest logit (fp32 noise)
TERMINATION_LOG_BYTES = 4096  # Kubernetes' limit for a termination message
SUMMARY_KEYS = ["val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "status", "reason", "detail"]  # fmt: skip


class HarnessError(Exception):
    """The harness could not run: bad arguments, unprepared data, no sandbox."""


def default_grace(time_budget):
    return 60.0 + time_budget / 5  # start-up, torch.compile and export (as the operator's spec)


# ---------------------------------------------------------------------------
# Evaluation (the fixed metric) and the causality check
# ---------------------------------------------------------------------------


def val_windows(tokens, seq_len, count):
    """The first `count` non-overlapping windows of seq_len + 1 tokens: (count, seq_len + 1)."""
    size = tokens.itemsize
    rows = np.lib.stride_tricks.as_strided(tokens, (count, seq_len + 1), (seq_len * size, size))
    return torch.from_numpy(rows.astype(np.int64))


@torch.no_grad()
def evaluate_bpb(model, tokens, token_bytes, seq_len, batch_size, max_tokens, device="cpu"):
    """Bits per byte: the summed cross-entropy (nats) of the scored val tokens over ln 2 times
    their exact UTF-8 byte count. Tokens of 0 bytes (BOS) count in neither sum."""
    windows = min(max_tokens, len(tokens) - 1) // seq_len
    if windows == 0:
        raise ValueError(f"the val split ({len(tokens)} tokens) is shorter than one window")
    batch_size = min(batch_size, windows)
    windows -= windows % batch_size  # equal batches, of the size the causality check saw
    data = val_windows(tokens, seq_len, windows)
    byte_table = torch.as_tensor(np.asarray(token_bytes), dtype=torch.int64, device=device)
    device_type = torch.device(device).type
    total_nats, total_bytes = 0.0, 0
    for start in range(0, windows, batch_size):
        chunk = data[start : start + batch_size].to(device)
        x, y = chunk[:, :-1], chunk[:, 1:].reshape(-1)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"):
            logits = model(x)
        nats = F.cross_entropy(logits.float().reshape(y.numel(), -1), y, reduction="none")
        nbytes = byte_table[y]
        total_nats += nats[nbytes > 0].sum(dtype=torch.float64).item()
        total_bytes += nbytes.sum().item()
    return total_nats / (math.log(2) * total_bytes)


@torch.no_grad()
def check_causal(model, windows, vocab_size):
    """None when position t's logits depend only on the tokens <= t of its own row, else why
    not: changes the tokens after t (and, separately, the other rows) and compares in fp32."""
    B, T = windows.shape
    base = model(windows).float()
    if tuple(base.shape) != (B, T, vocab_size):
        return f"the model's logits have shape {tuple(base.shape)}, not {(B, T, vocab_size)}"
    tolerance = CAUSAL_RTOL * max(base.abs().max().item(), 1e-3)
    generator = torch.Generator().manual_seed(0)

    def logits_with_changed(rows, cols):
        changed = windows.clone()
        noise = torch.randint(vocab_size, changed[rows, cols].shape, generator=generator)
        changed[rows, cols] = noise.to(windows.device)
        return model(changed).float()

    for t in sorted({0, T // 2, T - 2}):
        earlier = logits_with_changed(slice(None), slice(t + 1, None))[:, : t + 1]
        moved = (earlier - base[:, : t + 1]).abs().max().item()
        if moved > tolerance:
            return (f"logits at positions <= {t} moved by {moved:.3g} when only later tokens "
                    "changed: the model sees the future")  # fmt: skip
    if B > 1:
        moved = (logits_with_changed(slice(1, None), slice(None))[0] - base[0]).abs().max().item()
        if moved > tolerance:
            return f"row 0's logits moved by {moved:.3g} when only the other rows changed"
    return None


def load_exported(path):
    """The exported model (on the device it was exported from) and its parameter count."""
    program = torch.export.load(path)
    names = program.graph_signature.parameters
    return program.module(), sum(program.state_dict[name].numel() for name in names)


# ---------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------


def read_stats(path):
    """train.py's own stats (informative, untrusted): finite numbers only."""
    try:
        with open(path) as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(stats, dict):
        return {}
    return {k: v for k, v in stats.items() if isinstance(v, int | float) and math.isfinite(v)}


def make_result(status, reason=None, detail=None, val_bpb=None, stats=None, num_params=None,
                log_tail=""):  # fmt: skip
    stats = stats or {}
    num_params = num_params if num_params is not None else stats.get("num_params")
    return {
        "status": status,
        "reason": reason,
        "detail": detail[:500] if detail else detail,
        "val_bpb": val_bpb,
        "training_seconds": stats.get("training_seconds"),
        "total_seconds": None,
        "peak_vram_mb": stats.get("peak_vram_mb"),
        "mfu_percent": stats.get("mfu_percent"),
        "total_tokens_M": stats["total_tokens"] / 1e6 if "total_tokens" in stats else None,
        "num_steps": int(stats["num_steps"]) if "num_steps" in stats else None,
        "num_params_M": num_params / 1e6 if num_params is not None else None,
        "log_tail": log_tail,
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


def write_result(result, output_dir):
    path = os.path.join(output_dir, "result.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
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
        if key in ("reason", "detail") and value is None:
            continue
        if value is None:
            text = "n/a"
        elif key == "val_bpb":
            text = f"{value:.6f}"
        else:
            text = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"{key + ':':<18}{text}")


def judge(run, data_dir, output_dir, profile, time_budget, grace):
    """The verdict on a finished run: a crash result, or the val_bpb measured here."""
    stats = read_stats(os.path.join(output_dir, "stats.json"))
    num_params = None

    def crash(reason, detail):
        return make_result("crash", reason, detail, None, stats, num_params, run["log_tail"])

    if run["score_line"] is not None:
        return crash("rejected-by-harness", f"train.py printed its own score "
                     f"({run['score_line']!r}); only the harness measures val_bpb")  # fmt: skip
    if run["timed_out"]:
        return crash("timeout", f"killed after {run['wall_seconds']:.0f}s of wall time: past "
                     f"the {time_budget:.0f}s budget + {grace:.0f}s grace")  # fmt: skip
    if run["returncode"] != 0:
        lines = [line.strip() for line in run["log_tail"].splitlines() if line.strip()]
        detail = f"train.py exited with code {run['returncode']}: {(lines or ['no output'])[-1]}"
        return crash("nan" if run["reported_nan"] else "exception", detail)
    model_path = os.path.join(output_dir, "model.pt2")
    if not os.path.isfile(model_path):
        return crash("exception", "train.py exited 0 without exporting model.pt2 "
                     "(prepare.save_model_for_eval)")  # fmt: skip

    val_dir = os.path.join(data_dir, "val")
    with open(os.path.join(val_dir, "meta.json")) as f:
        vocab_size = json.load(f)["vocab_size"]
    tokens = np.memmap(os.path.join(val_dir, "val.bin"), dtype=np.uint16, mode="r")
    token_bytes = np.load(os.path.join(val_dir, "token_bytes.npy"))  # a copy train.py never saw
    seq_len, batch_size = prepare.SEQ_LEN_BY_PROFILE[profile], EVAL_BATCH_SIZE[profile]
    try:
        model, num_params = load_exported(model_path)
    except Exception as e:
        return crash("exception", f"could not load model.pt2: {type(e).__name__}: {e}")
    device = run["device"]
    print(f"harness: checking causality, then evaluating {num_params / 1e6:.2f}M params on "
          f"{device}", flush=True)  # fmt: skip
    try:
        sample = val_windows(tokens, seq_len, min(batch_size, (len(tokens) - 1) // seq_len))
        problem = check_causal(model, sample[:, :-1].to(device), vocab_size)
        if problem:
            return crash("rejected-by-harness", problem)
        val_bpb = evaluate_bpb(model, tokens, token_bytes, seq_len, batch_size,
                               EVAL_TOKENS[profile], device)  # fmt: skip
    except Exception as e:
        return crash("exception", f"evaluating model.pt2 failed: {type(e).__name__}: {e}")
    if not math.isfinite(val_bpb):
        return crash("nan", f"val_bpb is {val_bpb}: the model's logits are not finite")
    return make_result("ok", None, None, val_bpb, stats, num_params, run["log_tail"])


# ---------------------------------------------------------------------------
# The phases: train (no val split needed), evaluate (no train.py run), or both
# ---------------------------------------------------------------------------


def check_data(data_dir, parts):
    for part in parts:
        if not os.path.isfile(os.path.join(data_dir, part)):
            raise HarnessError(f"{data_dir} lacks {part}: run prepare.py --data-dir {data_dir}")


def resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise HarnessError("--device cuda: no CUDA device is visible")
    return device


def train_phase(train_py, data_dir, output_dir, time_budget, grace, profile, sandbox_kind, device):
    """Run train_py sandboxed; leaves OUTPUT/train.log, model.pt2, stats.json and run.json."""
    started_at = time.time()
    data_dir, output_dir = os.path.realpath(data_dir), os.path.realpath(output_dir)
    if not os.path.isfile(train_py):
        raise HarnessError(f"--train-py {train_py}: no such file")
    check_data(data_dir, ["train/meta.json", "train/train.bin"])
    device = resolve_device(device)
    try:
        sandbox_kind = sandbox.resolve_sandbox(sandbox_kind)
    except sandbox.SandboxError as e:
        raise HarnessError(str(e)) from None

    code_dir = os.path.join(output_dir, "code")
    artifacts_dir = os.path.join(output_dir, "artifacts")
    home = os.path.join(output_dir, "home") if sandbox_kind == "user" else "/tmp"
    for folder in {code_dir, artifacts_dir, home} - {"/tmp"}:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    for stale in ("model.pt2", "stats.json", "run.json", "result.json"):  # never judge stale files
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, stale))
    shutil.copy(train_py, os.path.join(code_dir, "train.py"))
    shutil.copy(os.path.join(HERE, "prepare.py"), os.path.join(code_dir, "prepare.py"))

    user, command = None, [sys.executable, "-u", os.path.join(code_dir, "train.py")]
    if sandbox_kind == "bwrap":
        command = sandbox.bwrap_command(data_dir, code_dir, artifacts_dir, device) + command
    elif sandbox_kind == "user":
        try:
            user = sandbox.lock_down_for_user(data_dir, code_dir, [artifacts_dir, home])
        except sandbox.SandboxError as e:
            raise HarnessError(str(e)) from None
    train_dir = os.path.join(data_dir, "train")
    env = sandbox.child_env(profile, time_budget, train_dir, artifacts_dir, device, home)

    print(f"harness: training {train_py} ({profile} profile, {device}, sandbox {sandbox_kind});"
          f" budget {time_budget:.0f}s, killed after {time_budget + grace:.0f}s", flush=True)  # fmt: skip
    log_path = os.path.join(output_dir, "train.log")
    run = sandbox.run_child(command, env, code_dir, log_path, time_budget + grace, user)
    for name in ("model.pt2", "stats.json"):  # out of the child's reach; regular files only
        path = os.path.join(artifacts_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            os.replace(path, os.path.join(output_dir, name))
            os.chown(os.path.join(output_dir, name), os.getuid(), os.getgid())
    shutil.rmtree(artifacts_dir, ignore_errors=True)
    run.update(started_at=started_at, device=device, sandbox=sandbox_kind)
    with open(os.path.join(output_dir, "run.json"), "w") as f:
        json.dump(run, f, indent=2)
    return run


def evaluate_phase(data_dir, output_dir, time_budget, grace, profile):
    """Judge the run train_phase recorded; write OUTPUT/result.json and print the summary."""
    data_dir, output_dir = os.path.realpath(data_dir), os.path.realpath(output_dir)
    check_data(data_dir, ["val/meta.json", "val/val.bin", "val/token_bytes.npy"])
    with open(os.path.join(data_dir, "val", "meta.json")) as f:
        val_tokens = json.load(f)["num_tokens"]
    if val_tokens <= prepare.SEQ_LEN_BY_PROFILE[profile]:
        raise HarnessError(
            f"the val split has {val_tokens} tokens: too few for one {profile} window"
        )
    try:
        with open(os.path.join(output_dir, "run.json")) as f:
            run = json.load(f)
    except (OSError, ValueError) as e:
        raise HarnessError(f"no record of a training run in {output_dir}: {e}") from None
    result = judge(run, data_dir, output_dir, profile, time_budget, grace)
    result["total_seconds"] = time.time() - run["started_at"]
    write_result(result, output_dir)
    print_summary(result)
    return result


def run_harness(train_py, data_dir, output_dir, time_budget=300.0, grace=None, profile="full",
                sandbox="auto", device="auto"):  # fmt: skip
    """Train train_py in a sandbox, measure it, write OUTPUT/result.json; return the result."""
    grace = default_grace(time_budget) if grace is None else grace
    if profile not in prepare.SEQ_LEN_BY_PROFILE:
        raise HarnessError(f"profile {profile!r}: not one of {sorted(prepare.SEQ_LEN_BY_PROFILE)}")
    check_data(data_dir, ["val/meta.json", "val/val.bin", "val/token_bytes.npy"])  # before training
    train_phase(train_py, data_dir, output_dir, time_budget, grace, profile, sandbox, device)
    return evaluate_phase(data_dir, output_dir, time_budget, grace, profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Train a candidate train.py and measure val_bpb")
    parser.add_argument("--train-py", help="the candidate train.py (phases all and train)")
    parser.add_argument("--data-dir", required=True, help="prepared by prepare.py")
    parser.add_argument("--output-dir", required=True, help="train.log, model.pt2, result.json")
    parser.add_argument("--time-budget", type=float, default=prepare.TIME_BUDGET,
                        help="seconds of training (default: %(default)s)")  # fmt: skip
    parser.add_argument("--grace", type=float, help="wall seconds past the budget before the "
                        "kill (default: 60 + budget / 5)")  # fmt: skip
    parser.add_argument("--profile", choices=sorted(prepare.SEQ_LEN_BY_PROFILE), default="full")
    parser.add_argument("--sandbox", choices=["auto", "bwrap", "user", "none"], default="auto")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--phase", choices=["all", "train", "evaluate"], default="all")
    parser.add_argument("--termination-log", help="also write the result JSON (< 4 KiB) here, "
                        "e.g. /dev/termination-log in a pod")  # fmt: skip
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind, so the child is killed too
    if args.termination_log:
        os.environ["AUTORESEARCH_TERMINATION_LOG"] = args.termination_log
    grace = default_grace(args.time_budget) if args.grace is None else args.grace
    os.makedirs(args.output_dir, exist_ok=True)
    try:
        if args.phase != "evaluate" and not args.train_py:
            raise HarnessError(f"--phase {args.phase} needs --train-py")
        if args.phase == "all":
            run_harness(args.train_py, args.data_dir, args.output_dir, args.time_budget, grace,
                        args.profile, args.sandbox, args.device)  # fmt: skip
        elif args.phase == "train":
            train_phase(args.train_py, args.data_dir, args.output_dir, args.time_budget, grace,
                        args.profile, args.sandbox, args.device)  # fmt: skip
        else:
            evaluate_phase(args.data_dir, args.output_dir, args.time_budget, grace, args.profile)
    except HarnessError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        sys.exit(2)
