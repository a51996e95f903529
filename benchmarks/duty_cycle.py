"""Duty cycle of the local research loop: training-budget seconds / wall seconds per experiment.

Runs a real org (mutate proposer, real harness, real training) and breaks every experiment's
wall time into: proposal wait + commit, harness start-up (interpreter, imports, sandbox),
training, evaluation/export, and loop bookkeeping (journal, refs).

    .venv/bin/python benchmarks/duty_cycle.py --time-budget 30 --experiments 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from autoresearch_operator.cli import ensure_prepared
from autoresearch_operator.executor import LocalExecutor, baseline_train_py
from autoresearch_operator.gitrepo import OrgRepo
from autoresearch_operator.journal import Journal
from autoresearch_operator.loop import ResearchLoop
from autoresearch_operator.proposers import make_proposer
from autoresearch_operator.records import ExperimentRecord
from autoresearch_operator.spec import org_from_resource

ROOT = Path(__file__).resolve().parents[1]


class Timeline:
    """A LoopObserver that timestamps phases, so each experiment's wall time can be split."""

    def __init__(self) -> None:
        self.marks: dict[int, dict[str, float]] = {}
        self.last_recorded = time.monotonic()

    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        self.marks.setdefault(experiment, {"begin": self.last_recorded})[phase] = time.monotonic()

    def progress(self, org: str, p) -> None:
        pass

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        now = time.monotonic()
        self.marks.setdefault(rec.experiment, {"begin": self.last_recorded})["recorded"] = now
        self.last_recorded = now


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--corpus", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    )
    ap.add_argument("--time-budget", type=int, default=30)
    ap.add_argument("--experiments", type=int, default=3)
    ap.add_argument("--profile", default="tiny", choices=["tiny", "full"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = ap.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="duty-cycle-"))
    data = ensure_prepared(workdir, [args.corpus], None)
    org = org_from_resource({
        "metadata": {"name": "duty-cycle"},
        "spec": {"program": "benchmark", "proposer": {"type": "mutate", "seed": 7},
                 "trainer": {"timeBudgetSeconds": args.time_budget, "profile": args.profile},
                 "budget": {"maxExperiments": args.experiments}},
    })  # fmt: skip
    repo = OrgRepo.open_or_init(workdir / "repo", baseline_train_py())
    journal = Journal(workdir / "orgs" / org.name)
    executor = LocalExecutor(data, journal.directory / "experiments", device=args.device)
    timeline = Timeline()
    loop = ResearchLoop(
        org, repo, journal, executor, make_proposer(org.spec.proposer.model_dump()), timeline
    )
    loop.run()

    rows = []
    for rec in journal.load():
        m = timeline.marks[rec.experiment]
        r = rec.result
        assert r is not None and r.total_seconds is not None, (
            f"experiment {rec.experiment} has no timing"
        )
        wall = m["recorded"] - m["begin"]
        train = r.training_seconds or 0.0
        harness = r.total_seconds
        launch = (
            rec.finished_at - rec.started_at - harness
        )  # executor: write files, spawn, read back
        before = m["training"] - m["begin"]  # proposal wait (not hidden by prefetch) + commit
        rows.append({
            "exp": rec.experiment, "outcome": rec.outcome.value, "wall": wall, "train": train,
            "before": before, "harness_other": harness - train, "launch": launch,
            "after": wall - before - (rec.finished_at - rec.started_at),
            "duty": args.time_budget / wall,
        })  # fmt: skip
    print(
        f"\nbudget {args.time_budget}s, profile {args.profile}, {len(rows)} experiments, workdir {workdir}"
    )
    print(f"{'exp':>3} {'outcome':>8} {'wall s':>7} {'train s':>8} {'propose+commit':>15} "
          f"{'harness non-train':>18} {'spawn/readback':>15} {'bookkeeping':>12} {'duty':>6}")  # fmt: skip
    for r in rows:
        print(f"{r['exp']:>3} {r['outcome']:>8} {r['wall']:>7.1f} {r['train']:>8.1f} {r['before']:>15.2f} "
              f"{r['harness_other']:>18.2f} {r['launch']:>15.2f} {r['after']:>12.3f} {r['duty']:>6.3f}")  # fmt: skip
    overhead = statistics.mean(r["wall"] - args.time_budget for r in rows)
    print(f"mean overhead per experiment: {overhead:.1f} s -> duty cycle at this budget "
          f"{args.time_budget / (args.time_budget + overhead):.3f}; at a 300 s budget with the same "
          f"overhead: {300 / (300 + overhead):.3f} (target >= 0.92, i.e. <= 25 s overhead)")  # fmt: skip


if __name__ == "__main__":
    main()
