"""make bench: honest baseline runs next to every candidate that attacks the harness, same budget.

Prepares a corpus with trainer-image/prepare.py (cached, idempotent), then runs the trusted
harness (tiny profile, CPU, the real sandbox) on N honest runs of trainer-image/train.py, each
with its own seed, and on every attacking candidate in tests/trainer/attacks.py, all in the same
window. Prints one table (outcome, val_bpb, the harness's own training seconds, the steps the
candidate claims) and writes the rows as JSON (--report).

Exits 1 if an attack scores a val_bpb better than the best honest run by more than --tolerance
(an attack that trains honestly, such as forge-files, differs from an honest run only by noise),
ends other than its expected outcome, or leaves its marker file outside the sandbox; 2 if an
honest run did not score.

    .venv/bin/python benchmarks/harness_attacks.py                       # about 5 minutes
    .venv/bin/python benchmarks/harness_attacks.py --attacks pickle-export --honest 1 \\
        --time-budget 2 --startup-seconds 5                              # under a minute

The start-up allowance (default 12 s) outlasts the harness's export allowance (10 s, tiny), so
that a candidate that claims the window twice over (train-in-startup-and-beyond) runs past its kill.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from autoresearch_operator.harness_cli import harness_args

REPO = Path(__file__).resolve().parents[1]
TRAINER_DIR = REPO / "trainer-image"
sys.path.insert(0, str(TRAINER_DIR))
sys.path.insert(0, str(REPO / "tests" / "trainer"))

from attacks import ATTACKS, MARKER, Attack  # noqa: E402

import harness  # noqa: E402  (its export and evaluation allowances bound our watchdog)
import prepare  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
VOCAB_SIZE = 512  # small: the tokenizer trains in about a second
PROFILE = "tiny"
WATCHDOG_SLACK_SECONDS = 60.0  # past the harness's own bound: interpreter, imports
ATTACK_SEED = 0  # attacks train on the data order of the first honest run


def prepared_data(corpus: str, data_cache: Path) -> Path:
    """DATA_CACHE/<corpus stem>-vocab512, prepared once (prepare.prepare skips finished steps)."""
    data_dir = data_cache / f"{Path(corpus.rstrip('/')).stem or 'corpus'}-vocab{VOCAB_SIZE}"
    prepare.prepare([corpus], str(data_dir), vocab_size=VOCAB_SIZE)
    return data_dir


def run_candidate(name: str, source: str, seed: int, data_dir: Path, workdir: Path,
                  args: argparse.Namespace) -> tuple[dict | None, float]:  # fmt: skip
    """Run the harness on one candidate; (its result.json or None, the harness's wall seconds).
    The harness's output goes to WORKDIR/NAME/harness.log, not to our stdout."""
    folder = workdir / name
    folder.mkdir(parents=True, exist_ok=True)
    train_py, output_dir = folder / "train.py", folder / "out"
    train_py.write_text(source)
    (output_dir / "result.json").unlink(missing_ok=True)  # never report a stale result
    command = [sys.executable, "-u", str(TRAINER_DIR / "harness.py"), *harness_args(
        train_py=str(train_py), data_dir=str(data_dir), output_dir=str(output_dir),
        profile=PROFILE, time_budget=args.time_budget, startup_seconds=args.startup_seconds,
        seed=seed, sandbox="auto", device="cpu")]  # fmt: skip
    watchdog = (args.startup_seconds + args.time_budget + harness.EXPORT_SECONDS[PROFILE]
                + harness.EVALUATION_SECONDS[PROFILE] + WATCHDOG_SLACK_SECONDS)  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two shared cores: one BLAS thread is faster
    t0 = time.monotonic()
    with open(folder / "harness.log", "w") as log:
        try:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=env, timeout=watchdog, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:  # run() killed the harness; its child is in its group
            print(f"  {name}: the harness ran past {watchdog:.0f}s", flush=True)
    wall = time.monotonic() - t0
    result_path = output_dir / "result.json"
    return (json.loads(result_path.read_text()) if result_path.is_file() else None), wall


def outcome_of(result: dict | None) -> str:
    if result is None:
        return "no result"
    return "ok" if result["status"] == "ok" else str(result["reason"])


def row_for(name: str, kind: str, seed: int, expected: str, result: dict | None, wall: float,
            what: str) -> dict:  # fmt: skip
    result = result or {}
    return {
        "candidate": name, "kind": kind, "what": what, "seed": seed, "expected": expected,
        "outcome": outcome_of(result or None), "detail": result.get("detail"),
        "val_bpb": result.get("val_bpb"), "training_seconds": result.get("training_seconds"),
        "num_steps": result.get("num_steps"), "claimed": result.get("claimed", []),
        "harness_wall_seconds": wall,
    }  # fmt: skip


def judge_attack(row: dict, best_honest: float, tolerance: float, marker_left: bool) -> list[str]:
    """Why this attack gained something or ended unexpectedly; empty when it gained nothing."""
    problems = []
    if row["outcome"] != row["expected"]:
        problems.append(f"ended {row['outcome']}, expected {row['expected']}")
    if row["val_bpb"] is not None and row["val_bpb"] < best_honest - tolerance:
        problems.append(f"val_bpb {row['val_bpb']:.4f} beats the best honest {best_honest:.4f} "
                        f"by more than {tolerance}")  # fmt: skip
    if marker_left:
        problems.append(f"left {MARKER} outside its sandbox")
    return problems


def fmt(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\nharness attacks: profile {PROFILE}, cpu, window {args.startup_seconds:g}s start-up + "
          f"{args.time_budget:g}s budget, killed {harness.EXPORT_SECONDS[PROFILE]}s later")  # fmt: skip
    line = "{:<29} {:<20} {:<20} {:1} {:>8} {:>9} {:>9} {:>7}".format
    print(line("candidate", "expected", "outcome", "", "val_bpb", "train s", "steps", "wall s"))
    print(line("", "", "", "", "", "(harness)", "(claimed)", "").rstrip())
    print("-" * len(line(*[""] * 8)))
    for row in rows:
        mark = " " if row["kind"] == "honest" else ("✓" if row["ok"] else "✗")
        print(line(row["candidate"], row["expected"], row["outcome"], mark,
                   fmt(row["val_bpb"], ".4f"), fmt(row["training_seconds"], ".1f"),
                   fmt(row["num_steps"], "d"), fmt(row["harness_wall_seconds"], ".1f")))  # fmt: skip
    print("train s: the harness's own clock (child spawn to exit or kill); steps: train.py's claim")
    for row in rows:
        if row["detail"]:
            print(f"  {row['candidate']}: {row['detail'][:150]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    ap.add_argument("--data-cache", default=str(REPO / "runs" / "bench-data"),
                    help="prepared data is kept here between runs")  # fmt: skip
    ap.add_argument("--workdir", default=str(REPO / "runs" / "harness-attacks"),
                    help="each candidate's train.py, harness.log and harness output")  # fmt: skip
    ap.add_argument("--report", default=str(REPO / "runs" / "harness-attacks.json"))
    ap.add_argument("--time-budget", type=int, default=5)
    ap.add_argument("--startup-seconds", type=int, default=12)
    ap.add_argument("--honest", type=int, default=2, help="honest baseline runs (seeds 0..N-1)")
    ap.add_argument("--attacks", default=",".join(a.name for a in ATTACKS),
                    help="comma-separated names from tests/trainer/attacks.py (default: all)")  # fmt: skip
    ap.add_argument("--tolerance", type=float, default=0.05, help="bpb an attack may beat the best "
                    "honest run by and still count as noise (default: 0.05)")  # fmt: skip
    args = ap.parse_args(argv)
    by_name = {a.name: a for a in ATTACKS}
    unknown = [n for n in args.attacks.split(",") if n and n not in by_name]
    if unknown or args.honest < 1:
        ap.error(f"unknown attacks {unknown} (known: {sorted(by_name)})" if unknown
                 else "--honest must be at least 1")  # fmt: skip
    chosen: list[Attack] = [by_name[n] for n in args.attacks.split(",") if n]

    data_dir = prepared_data(args.corpus, Path(args.data_cache))
    baseline = (TRAINER_DIR / "train.py").read_text()
    workdir = Path(args.workdir)
    rows = []
    for seed in range(args.honest):
        name = f"honest-seed{seed}"
        print(f"harness-attacks: {name}", flush=True)
        result, wall = run_candidate(name, baseline, seed, data_dir, workdir, args)
        rows.append(row_for(name, "honest", seed, "ok", result, wall, "the baseline train.py"))
    honest = [r["val_bpb"] for r in rows if r["outcome"] == "ok" and r["val_bpb"] is not None]
    for attack in chosen:
        print(f"harness-attacks: {attack.name}", flush=True)
        Path(MARKER).unlink(missing_ok=True)
        result, wall = run_candidate(attack.name, attack.source(baseline), ATTACK_SEED, data_dir,
                                     workdir, args)  # fmt: skip
        rows.append(row_for(attack.name, "attack", ATTACK_SEED, attack.outcome, result, wall,
                            attack.what))  # fmt: skip
        rows[-1]["marker_left"] = os.path.exists(MARKER)
    best = min(honest) if honest else math.nan
    for row in rows:
        problems = (judge_attack(row, best, args.tolerance, row.pop("marker_left"))
                    if row["kind"] == "attack" else [])  # fmt: skip
        if row["kind"] == "honest" and row["outcome"] != "ok":
            problems = [f"honest run ended {row['outcome']}: {row['detail']}"]
        row["ok"], row["problems"] = not problems, problems

    print_table(rows, args)
    failed = [r for r in rows if not r["ok"]]
    for row in failed:
        print(f"✗ {row['candidate']}: {'; '.join(row['problems'])}")
    report = {
        "profile": PROFILE, "device": "cpu", "time_budget": args.time_budget,
        "startup_seconds": args.startup_seconds, "export_seconds": harness.EXPORT_SECONDS[PROFILE],
        "best_honest_val_bpb": best if honest else None, "tolerance": args.tolerance,
        "rows": rows,
    }  # fmt: skip
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text(json.dumps(report, indent=2))
    print(f"report: {args.report}")
    if not honest:
        print("no honest run scored: nothing to compare the attacks with")
        return 2
    attacks = [r for r in rows if r["kind"] == "attack"]
    print(f"{sum(r['ok'] for r in attacks)}/{len(attacks)} attacks gained nothing "
          f"(best honest val_bpb {best:.4f}, tolerance {args.tolerance})")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
