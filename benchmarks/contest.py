"""make bench-contest: does meta-research pay? Gain per GPU-hour in round 1 against round 2 of a
real local contest, with intervals.

The contest (`autoresearch contest`'s LocalContest: the real loop, harness and git, tiny profile
on the CPU): three `mutate` entrants whose program.md front-matter differ (learning rates only;
the schedule only, small steps; anything but the learning rates, two knobs at a time), two
rounds, the offline `evolve` meta-proposer between them (the round-1 winner keeps its program;
the others become children of the leaders). Both rounds start from the unmodified train.py, so
their gains are measured from the same place.

Per round and entrant: the improvement over the shared start (its mean over every org's
baseline runs) with its t interval at the contest's alpha, sigma pooled over the round (what
the ResearchContest status shows), and the same over the entrant's GPU-hours. Pooled over the
entrants of a round: the summed improvement over the summed GPU-hours; the entrants share the
start estimate, so Var(sum) = sigma^2 (k^2 / n_start + sum 1 / n_best). Round 2 minus round 1:
the difference of the pooled rates, the variances added (independent runs), df the smaller.

    .venv/bin/python benchmarks/contest.py --report runs/bench-contest.json   # ~11 min, 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from scipy import stats

from autoresearch_operator.cli import ensure_prepared
from autoresearch_operator.contest_local import ContestObserver, LocalContest
from autoresearch_operator.contest_spec import contest_from_resource
from autoresearch_operator.core.contest import Standing, Standings
from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.interfaces import LoopObserver, QuietObserver
from autoresearch_operator.core.meta import EvolveMetaProposer
from autoresearch_operator.core.records import ExperimentRecord
from autoresearch_operator.executor import LocalExecutor, baseline_train_py
from autoresearch_operator.proposers import make_proposer
from autoresearch_operator.spec import Org

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = {
    "lr": "---\nexplore: ['*_LR']\nstep: 1.5\n---\nTune the learning rates, nothing else.\n",
    "schedule": "---\nexplore: ['WARMDOWN_RATIO', 'WEIGHT_DECAY', 'MUON_MOMENTUM', 'GRAD_CLIP']\n"
    "step: 0.5\nrisk: low\n---\nSmall changes to the schedule and the regularisation.\n",
    "bold": "---\navoid: ['*_LR']\nchanges: 2\nrisk: high\n---\nAnything but the learning "
    "rates, two knobs at a time.\n",
}


def contest_body(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "apiVersion": "autoresearch.dev/v1alpha1",
        "kind": "ResearchContest",
        "metadata": {"name": "bench"},
        "spec": {
            "entrants": [
                {"name": name, "program": text, "proposer": {"type": "mutate", "seed": args.seed}}
                for name, text in PROGRAMS.items()
            ],  # fmt: skip
            "terms": {
                "trainer": {
                    "profile": "tiny",
                    "timeBudgetSeconds": args.time_budget,
                    "startupSeconds": args.startup_seconds,
                },  # fmt: skip
                "budget": {"maxExperiments": args.max_experiments},
                "keepPolicy": {"noiseRuns": args.noise_runs, "confirmRuns": args.confirm_runs},
            },
            "rounds": 2,
            "meta": {"proposer": {"type": "evolve", "seed": args.seed}, "survivors": 1},
        },
    }


class Progress(ContestObserver):
    """One line per decision, so a long bench shows it is alive."""

    def __init__(self, started: float):
        started_at = started

        class Line(QuietObserver):
            def recorded(self, org: str, rec: ExperimentRecord) -> None:
                bpb = "-" if rec.val_bpb is None else f"{rec.val_bpb:.4f}"
                print(f"{time.monotonic() - started_at:6.0f}s {org:<22} #{rec.experiment} "
                      f"{rec.outcome.value:<7} {bpb} {rec.description[:50]}", flush=True)  # fmt: skip

        self.line = Line()

    def org(self, org: Org) -> AbstractContextManager[LoopObserver]:
        return nullcontext(self.line)


# -- the figures ----------------------------------------------------------------------------------


def _t(alpha: float, df: int) -> float:
    return float(stats.t.ppf(1 - alpha / 2, df))


def entrant_figures(s: Standing) -> dict[str, Any]:
    ci = s.gain_per_gpu_hour_ci
    return {
        "entrant": s.entrant, "rank": s.rank, "experiments": s.experiments, "kept": s.kept,
        "best_val_bpb": s.best.mean if s.best else None, "best_runs": s.best.n if s.best else None,
        "improvement": s.improvement, "improvement_ci": [s.ci_low, s.ci_high],
        "gpu_hours": s.gpu_hours, "gain_per_gpu_hour": s.gain_per_gpu_hour,
        "gain_per_gpu_hour_ci": list(ci) if ci else None,
    }  # fmt: skip


def pooled_figures(table: Standings) -> dict[str, Any]:
    """The round's summed improvement over its summed GPU-hours, with its interval."""
    rows = [s for s in table.entrants if s.best is not None and s.improvement is not None]
    hours = sum(s.gpu_hours for s in rows)
    sigma, df = table.noise.sigma, table.noise.df
    out: dict[str, Any] = {"entrants": len(rows), "gpu_hours": hours, "sigma": sigma, "df": df,
                           "start_runs": table.start.n if table.start else None}  # fmt: skip
    if not rows or table.start is None or not hours:
        return out
    gain = sum(s.improvement or 0.0 for s in rows)
    out |= {"improvement": gain, "gain_per_gpu_hour": gain / hours}
    if sigma is not None and df > 0:
        coeff = len(rows) ** 2 / table.start.n + sum(1 / s.best.n for s in rows if s.best)
        se = sigma * math.sqrt(coeff) / hours
        half = _t(table.alpha, df) * se
        out |= {"se": se, "gain_per_gpu_hour_ci": [gain / hours - half, gain / hours + half]}
    return out


def difference(first: dict[str, Any], second: dict[str, Any], alpha: float) -> dict[str, Any]:
    if "se" not in first or "se" not in second:
        return {"statement": "no interval: a round has no noise estimate"}
    d = second["gain_per_gpu_hour"] - first["gain_per_gpu_hour"]
    se = math.hypot(first["se"], second["se"])
    df = min(first["df"], second["df"])
    half = _t(alpha, df) * se
    lo, hi = d - half, d + half
    level = f"{1 - alpha:.0%} t interval, df {df}"
    runs = f"{first['entrants']} entrants per round, one contest, one seed"
    if lo > 0 or hi < 0:
        way = "more" if lo > 0 else "less"
        statement = (f"round 2 gained {way} per GPU-hour than round 1: {d:+.3g} bpb/GPU-h "
                     f"[{lo:+.3g}, {hi:+.3g}] ({level}; {runs}). One contest: this says the two "
                     "rounds differed, not that meta-research will help the next time.")  # fmt: skip
    else:
        statement = (f"no difference shown: round 2 minus round 1 is {d:+.3g} bpb/GPU-h "
                     f"[{lo:+.3g}, {hi:+.3g}] ({level}; {runs}); the interval includes 0, so a "
                     f"difference smaller than about {half:.3g} bpb/GPU-h either way cannot be "
                     "seen at this size.")  # fmt: skip
    return {"difference": d, "ci": [lo, hi], "df": df, "statement": statement}


def print_report(report: dict[str, Any]) -> None:
    def ci(x: list[float | None] | None, spec: str) -> str:
        return "-" if not x or x[0] is None or x[1] is None else f"[{x[0]:{spec}}, {x[1]:{spec}}]"

    def num(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    print("\n== bench-contest: gain per GPU-hour, round 1 vs round 2 ==")
    for r in report["rounds"]:
        p = r["pooled"]
        print(f"\nround {r['round']}: {r['verdict']}")
        print(f"  start val_bpb {num(r['start_val_bpb'], '.4f')} over {p['start_runs']} runs; "
              f"sigma {num(p['sigma'], '.4f')} (df {p['df']})")  # fmt: skip
        print(f"  {'entrant':<10} {'best (runs)':>15} {'gain [95%]':>28} {'GPU-h':>7} "
              f"{'gain/GPU-h [95%]':>30} kept")  # fmt: skip
        for e in r["entrants"]:
            best = f"{num(e['best_val_bpb'], '.4f')} ({e['best_runs']})"
            gain = f"{num(e['improvement'], '+.4f')} {ci(e['improvement_ci'], '+.4f')}"
            rate = f"{num(e['gain_per_gpu_hour'], '+.3g')} {ci(e['gain_per_gpu_hour_ci'], '+.3g')}"
            print(f"  {e['entrant']:<10} {best:>15} {gain:>28} {e['gpu_hours']:7.4f} {rate:>30} "
                  f"{e['kept']}/{e['experiments'] - 1}")  # fmt: skip
        rate = (
            f"{num(p.get('gain_per_gpu_hour'), '+.3g')} {ci(p.get('gain_per_gpu_hour_ci'), '+.3g')}"
        )
        print(f"  pooled: {num(p.get('improvement'), '+.4f')} over {p['gpu_hours']:.4f} GPU-h = "
              f"{rate} bpb/GPU-h")  # fmt: skip
    print(f"\n{report['comparison']['statement']}")
    print(f"caveats: {report['caveats']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument(
        "--corpus", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    )
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench-contest"),
                    help="its repo/, orgs/ and contests/ are replaced unless --resume; data/ is kept")  # fmt: skip
    ap.add_argument("--report", default=None, help="write the report as JSON here")
    ap.add_argument("--resume", action="store_true", help="continue the contest in --workdir")
    ap.add_argument("--time-budget", type=int, default=4)
    ap.add_argument("--startup-seconds", type=int, default=4)
    ap.add_argument("--max-experiments", type=int, default=4, help="per org and round, baseline included")  # fmt: skip
    ap.add_argument("--noise-runs", type=int, default=3)
    ap.add_argument("--confirm-runs", type=int, default=1)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1, help="of the mutate and evolve proposers")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    if not args.resume:
        for part in ("repo", "orgs", "contests"):
            shutil.rmtree(workdir / part, ignore_errors=True)
    data = ensure_prepared(workdir, [args.corpus], args.vocab_size)
    started = time.monotonic()
    contest = contest_from_resource(contest_body(args))
    local = LocalContest(
        contest, PROGRAMS, workdir, OrgRepo.open_or_init(workdir / "repo", baseline_train_py()),
        executor=lambda folder: LocalExecutor(data, folder, device="cpu"),
        proposer=lambda org: make_proposer(org.spec.proposer.model_dump()),
        meta=EvolveMetaProposer(seed=args.seed), observer=Progress(started),
    )  # fmt: skip
    local.run()
    history = local.history()
    rounds: list[dict[str, Any]] = [
        {"round": table.round, "verdict": table.verdict,
         "start_val_bpb": table.start.mean if table.start else None,
         "lineage": {e: rec.parents.get(e, []) for e in rec.programs},
         "entrants": [entrant_figures(s) for s in table.entrants],
         "pooled": pooled_figures(table)}
        for table, rec in history
    ]  # fmt: skip
    report = {
        "settings": {k: v for k, v in vars(args).items() if k != "report"},
        "rounds": rounds,
        "comparison": difference(rounds[0]["pooled"], rounds[-1]["pooled"], contest.spec.alpha),
        "caveats": (
            "one contest and one seed; three entrants; the tiny CPU model trained for seconds, "
            "not the GPU setting; an entrant's best is the commit it kept last, whose "
            "confirmation runs also decided the keep, so its gain leans optimistic; an entrant "
            "that kept nothing is at the start (gain exactly 0); GPU-hours here are CPU wall "
            "hours of the harness."
        ),
        "wall_seconds": time.monotonic() - started,
    }
    print_report(report)
    print(f"\n{report['wall_seconds']:.0f} s in all")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
        print(f"report: {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
