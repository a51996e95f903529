"""Trainer throughput: prepare a corpus, train the baseline train.py under the harness, and report
tokens/s, MFU, peak memory and val_bpb.

    python benchmarks/trainer_throughput.py --corpus ../shared/data/tinyshakespeare.txt
    python benchmarks/trainer_throughput.py --corpus URL_OR_PATH --profile full --time-budget 300 --device cuda

The defaults (tiny profile, CPU, 30 s) run anywhere; the second line is the real measurement on a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINER_DIR = REPO / "trainer-image"
sys.path.insert(0, str(TRAINER_DIR))

import prepare  # noqa: E402


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--corpus", action="append", required=True, help="text/parquet file or URL (repeatable)"
    )
    parser.add_argument("--profile", choices=sorted(prepare.SEQ_LEN_BY_PROFILE), default="tiny")
    parser.add_argument("--time-budget", type=float, default=30.0, help="seconds of training")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--sandbox", choices=["auto", "bwrap", "user", "none"], default="auto")
    parser.add_argument("--vocab-size", type=int, default=prepare.VOCAB_SIZE)
    parser.add_argument("--workdir", type=Path, default=REPO / ".cache" / "trainer-bench")
    args = parser.parse_args()

    data_dir = args.workdir / f"data-vocab{args.vocab_size}"
    output_dir = args.workdir / f"run-{args.profile}-{args.device}"
    t0 = time.time()
    prepare.prepare(args.corpus, str(data_dir), vocab_size=args.vocab_size)
    print(f"bench: data ready in {time.time() - t0:.1f}s at {data_dir}")

    command = [
        sys.executable, "-u", str(TRAINER_DIR / "harness.py"),
        "--train-py", str(TRAINER_DIR / "train.py"),
        "--data-dir", str(data_dir),
        "--output-dir", str(output_dir),
        "--profile", args.profile,
        "--time-budget", str(args.time_budget),
        "--device", args.device,
        "--sandbox", args.sandbox,
    ]  # fmt: skip
    if subprocess.run(command).returncode != 0:
        print("bench: the harness failed", file=sys.stderr)
        return 1
    result = json.loads((output_dir / "result.json").read_text())
    if result["status"] != "ok":
        print(f"bench: the run crashed ({result['reason']}): {result['detail']}", file=sys.stderr)
        return 1

    stats = json.loads((output_dir / "stats.json").read_text())  # train.py's own: timed steps only
    tokens_per_second = stats["tokens_per_second"]
    print(
        f"\ntrainer throughput: {args.profile} profile, {args.device}, {args.time_budget:.0f}s budget"
    )
    print(f"tokens/s:      {tokens_per_second:,.0f}")
    print(f"mfu:           {fmt(result['mfu_percent'], '.1f', '%')}")
    print(f"peak memory:   {fmt(result['peak_vram_mb'], ',.0f', ' MiB')}")
    print(f"val_bpb:       {result['val_bpb']:.4f}")
    print(f"steps:         {result['num_steps']} ({result['num_params_M']:.2f}M params, "
          f"{result['training_seconds']:.1f}s training, {result['total_seconds']:.1f}s in all)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
