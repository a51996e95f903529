"""make bench-integrity: does a keep survive a re-run? The noise-aware keep policy beside the old
one-run rule, on the same runs.

REAL part (the real ResearchLoop, LocalExecutor and harness; tiny profile on the CPU):
  noise org   the baseline (keepPolicy.noiseRuns runs), then --candidates seed-only candidates:
              the best train.py plus one distinct comment line. Every keep is a false keep.
  load        one more seed-only candidate, with busy loops on every core during its screening run.
  handicap    an org whose baseline has its learning rates x --handicap; the one candidate
              restores them. A true gain: both rules should keep it.
  The old rule is judged on the same screening runs with its own best (core/policy.one_run_rule:
  its best starts at the baseline's first run and falls to each run it keeps).
SIMULATED part (benchmarks/integrity_figures.py): the real decide() and Ledger over normal draws
  with the sigma measured in the noise org: keep rate per true gain in sigma, whole noise orgs,
  and the verification share at each promising rate.

    .venv/bin/python benchmarks/integrity.py                          # about 12 minutes, 2 cores
    .venv/bin/python benchmarks/integrity.py --sim-only --sigma 0.02  # seconds, no training
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from integrity_figures import (
    OneRunShadow,
    noise_org_figures,
    one_candidate,
    screen_run,
    simulate,
    targets,
    to_json,
)

from autoresearch_operator.cli import ensure_prepared
from autoresearch_operator.core.gitrepo import OrgRepo
from autoresearch_operator.core.interfaces import QuietObserver
from autoresearch_operator.core.journal import Journal
from autoresearch_operator.core.ledger import Ledger
from autoresearch_operator.core.loop import ResearchLoop
from autoresearch_operator.core.policy import Rule
from autoresearch_operator.core.records import (
    ExperimentRecord,
    Outcome,
    Proposal,
    ProposalContext,
    RunRecord,
)
from autoresearch_operator.executor import LocalExecutor, baseline_train_py
from autoresearch_operator.spec import (
    EVALUATION_SECONDS,
    EXPORT_SECONDS,
    KeepPolicy,
    org_from_resource,
)

ROOT = Path(__file__).resolve().parents[1]
LEARNING_RATES = ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR")


# -- the real part: proposers, the load, the observer --------------------------------------------


class SeedOnly:
    """Identical code as a new candidate: the best train.py plus one comment line."""

    name = "seed-only"

    def propose(self, ctx: ProposalContext) -> Proposal:
        line = f"# seed-only candidate {ctx.experiment}: the code is unchanged\n"
        return Proposal(
            f"seed-only #{ctx.experiment}", ctx.best_train_py.rstrip("\n") + "\n" + line
        )


class Restore:
    """Proposes one fixed train.py (the shipped one, for the handicapped org)."""

    name = "restore"

    def __init__(self, train_py: str):
        self.train_py = train_py

    def propose(self, ctx: ProposalContext) -> Proposal:
        return Proposal("restore the learning rates", self.train_py)


def handicap(train_py: str, factor: float) -> str:
    """train.py with every learning-rate knob multiplied by `factor`."""
    out = train_py
    for knob in LEARNING_RATES:
        pattern = re.compile(rf"^{knob} = ([0-9.eE+-]+)", re.MULTILINE)
        match = pattern.search(out)
        if match is None:
            raise SystemExit(f"integrity: trainer-image/train.py has no `{knob} = <number>` line")
        out = pattern.sub(f"{knob} = {float(match[1]) * factor:.6g}", out, count=1)
    return out


class CpuHog:
    """Busy loops on `cores` cores (child processes), for at most `seconds`."""

    def __init__(self, cores: int):
        self.cores = cores
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, seconds: float) -> None:
        code = (
            f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
        )
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.cores)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        self.procs = []


class Watcher(QuietObserver):
    """The loop's observer: judges each decided experiment by the old rule too (its own best),
    prints one line per decision, and loads the machine during one screening run."""

    def __init__(self, min_improvement: float, hog: CpuHog, load: tuple[str, int], seconds: float):
        self.min_improvement = min_improvement
        self.hog, self.load, self.hog_seconds = hog, load, seconds
        self.shadows: dict[str, OneRunShadow] = {}
        self.old: dict[tuple[str, int], Outcome] = {}
        self.started = time.monotonic()

    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        if phase == "training" and (org, experiment) == self.load and not self.hog.procs:
            print(f"  [{self._clock()}] {org} #{experiment}: CPU hog on {self.hog.cores} cores "
                  "for its screening run", flush=True)  # fmt: skip
            self.hog.start(self.hog_seconds)

    def run_recorded(self, org: str, run: RunRecord) -> None:
        if (org, run.experiment) == self.load and run.run == 0:
            self.hog.stop()

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        if (org, rec.experiment) == self.load:
            self.hog.stop()
        shadow = self.shadows.setdefault(org, OneRunShadow(self.min_improvement))
        screen = screen_run(rec)
        old = self.old[(org, rec.experiment)] = shadow.judge(screen.val_bpb if screen else None)
        steps = screen.result.num_steps if screen else None
        print(f"  [{self._clock()}] {org} #{rec.experiment:<2} {rec.outcome.value:<7} "
              f"runs {len(rec.runs)}  screen {fmt(screen.val_bpb if screen else None)} "
              f"({steps} steps)  p {fmt(rec.p_value, '.3g')}  old rule: {old.value}",
              flush=True)  # fmt: skip

    def _clock(self) -> str:
        return f"{time.monotonic() - self.started:5.0f}s"


def run_org(name: str, workdir: Path, data: Path, train_py: str, proposer, candidates: int,
            args: argparse.Namespace, observer: Watcher) -> Ledger:  # fmt: skip
    org = org_from_resource({
        "metadata": {"name": name},
        "spec": {"program": "integrity benchmark",
                 "trainer": {"profile": "tiny", "timeBudgetSeconds": args.time_budget,
                             "startupSeconds": args.startup_seconds},
                 "budget": {"maxExperiments": 1 + candidates}},
    })  # fmt: skip
    repo = OrgRepo.open_or_init(workdir / name / "repo", train_py)
    journal = Journal(workdir / name / "journal")
    executor = LocalExecutor(data, workdir / name / "experiments", device="cpu")
    ResearchLoop(org, repo, journal, executor, proposer, observer=observer).run()
    return Ledger(*journal.read())


def real_part(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir)
    for name in ("noise", "handicap"):  # ours alone; the prepared data is kept
        shutil.rmtree(workdir / name, ignore_errors=True)
    data = ensure_prepared(workdir, [args.corpus], args.vocab_size)
    load_n = args.candidates + 1
    window = (args.startup_seconds + args.time_budget + EXPORT_SECONDS["tiny"]
              + EVALUATION_SECONDS["tiny"] + 30)  # the harness's deadline, and some  # fmt: skip
    hog = CpuHog(args.hog_cores)
    watcher = Watcher(KeepPolicy().minImprovement, hog, ("noise", load_n), window)
    try:
        print(f"noise org: baseline, {args.candidates} seed-only candidates, then #{load_n} "
              "under load", flush=True)  # fmt: skip
        noise = run_org("noise", workdir, data, baseline_train_py(), SeedOnly(), load_n, args,
                        watcher)  # fmt: skip
        print(f"handicap org: learning rates x {args.handicap:g}, then the candidate that restores "
              "them", flush=True)  # fmt: skip
        shipped = baseline_train_py()
        slow = run_org("handicap", workdir, data, handicap(shipped, args.handicap),
                       Restore(shipped), 1, args, watcher)  # fmt: skip
    finally:
        hog.stop()
    old = {n: o for (org, n), o in watcher.old.items() if org == "noise"}
    figures = noise_org_figures(noise, old, list(range(1, args.candidates + 1)))
    sigma = figures["sigma"]
    load = one_candidate(noise, load_n, old.get(load_n), sigma)
    steps = [r.result.num_steps for r in noise.runs if r.experiment not in (0, load_n)
             and r.run == 0 and r.result.num_steps]  # fmt: skip
    load["median_steps_unloaded"] = statistics.median(steps) if steps else None
    restored = one_candidate(slow, 1, watcher.old.get(("handicap", 1)), sigma)
    return {"noise_org": figures, "load": load, "handicap": restored}


# -- the table -------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def cost_line(costs: list[dict]) -> str:
    return ",  ".join(
        f"{pct(c['promising_rate'])}{' (real)' if c['observed'] else ''} -> "
        f"{pct(c['verification_fraction'])}"
        for c in costs
    )


def print_report(report: dict[str, Any]) -> None:
    real, sim, rule = report["real"], report["simulated"], report["rule"]
    print(f"\nkeep policy (default): {rule}")
    if real is not None:
        noise, load, slow = real["noise_org"], real["load"], real["handicap"]
        print("\nREAL (ResearchLoop + LocalExecutor + harness, tiny, cpu, "
              f"{report['settings']['startup_seconds']}s start-up + "
              f"{report['settings']['time_budget']}s budget)")  # fmt: skip
        print(f"  sigma (ledger.noise)      {fmt(noise['sigma'])} (df {noise['sigma_df']}), "
              f"baseline {fmt(noise['baseline_val_bpb'])}")  # fmt: skip
        print(f"  seed-only candidates      {noise['candidates']} ({noise['crashed']} crashed)")
        print(f"  false keeps   new rule    {noise['new']}")
        print(f"                old rule    {noise['old']}")
        print(f"  promising (confirmed)     {noise['promising']}")
        print(f"  verification GPU time     {noise['verification_gpu_seconds']:.0f} s of "
              f"{noise['gpu_seconds']:.0f} s = {pct(noise['verification_fraction'])} "
              "(old rule: 0 %)")  # fmt: skip
        print(f"  load (#{load['experiment']})   new rule {load['new']}, old rule {load['old']}; "
              f"screen {fmt(load['screen_val_bpb'])} in {load['screen_steps']} steps "
              f"(unloaded screens: median {load['median_steps_unloaded']} steps)")  # fmt: skip
        print(f"  handicap restored         new rule {slow['new']} (p {fmt(slow['p_value'], '.3g')}),"
              f" old rule {slow['old']}; baseline {fmt(slow['baseline_val_bpb'])} -> "
              f"{fmt(slow['val_bpb'])}, {fmt(slow['effect_sigma'], '.1f')} sigma")  # fmt: skip
    print(
        f"\nSIMULATED (real decide() + Ledger over normal draws, sigma {fmt(sim['sigma'])}"
        f"{' measured above' if real is not None else ' given'}; 95 % Wilson intervals)"
    )
    print(f"  {'true gain':>10}  {'new rule keeps':<30}  {'old one-run rule keeps':<30}")
    for row in sim["effects"]:
        print(f"  {row['effect_sigma']:>8g} σ  {row['new']!s:<30}  {row['old']!s:<30}")
    orgs = sim["noise_orgs"]
    print(f"  noise orgs ({orgs['orgs']} x {orgs['candidates']} seed-only): false keeps new "
          f"{orgs['new']}, old {orgs['old']}; promising {orgs['promising']}; "
          f"verification {pct(orgs['verification_fraction'])}")  # fmt: skip
    print(f"  verification share at a promising rate (confirmRuns {rule['confirm_runs']}; "
          "baseline runs left out):")  # fmt: skip
    print("    " + cost_line(sim["cost"]))
    if report.get("alternative"):
        alt = report["alternative"]
        print(f"\nALTERNATIVE SETTING (simulated only, not the default): {alt['rule']}")
        for row in alt["effects"]:
            print(f"  {row['effect_sigma']:>8g} σ  {row['new']!s:<30}")
        print(
            f"  noise orgs: false keeps {alt['noise_orgs']['new']}; promising "
            f"{alt['noise_orgs']['promising']}; verification "
            f"{pct(alt['noise_orgs']['verification_fraction'])}"
        )
        print("  verification share at a promising rate: " + cost_line(alt["cost"]))
    print("\nTARGETS")
    for row in report["targets"]:
        value = {r: v if isinstance(v, str) or v is None else pct(v)
                 for r, v in (("new", row["new"]), ("old", row["old"]))}  # fmt: skip
        verdict = {r: "met" if row[f"{r}_met"] else "NOT met" for r in ("new", "old")}
        print(
            f"  {row['target']}\n      new rule: {value['new']}: {verdict['new']}"
            f"   | old one-run rule: {value['old']}: {verdict['old']}"
        )


def parse_rule(text: str, base: Rule) -> Rule:
    """`base` with the fields named in "confirm_runs=4,screen_sigmas=0.5" changed."""
    changes = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        current = getattr(base, key.strip())
        changes[key.strip()] = type(current)(value) if not isinstance(current, bool) \
            else value.strip().lower() in ("1", "true", "yes")  # fmt: skip
    return dataclasses.replace(base, **changes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument(
        "--corpus", default=str(ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    )
    ap.add_argument(
        "--workdir",
        default=str(ROOT / "runs" / "integrity"),
        help="its noise/ and handicap/ folders are replaced; data/ is kept",
    )
    ap.add_argument("--report", default=None, help="write the report as JSON here")
    ap.add_argument("--candidates", type=int, default=20, help="seed-only candidates (real)")
    ap.add_argument("--time-budget", type=int, default=5)
    ap.add_argument("--startup-seconds", type=int, default=5)
    ap.add_argument("--vocab-size", type=int, default=512)
    ap.add_argument("--handicap", type=float, default=0.1, help="learning rates x this (real)")
    ap.add_argument("--hog-cores", type=int, default=os.cpu_count() or 2, help="default: all")
    ap.add_argument("--trials", type=int, default=2000, help="simulated orgs per true gain")
    ap.add_argument("--sim-orgs", type=int, default=200, help="simulated noise orgs")
    ap.add_argument("--seed", type=int, default=0, help="of the simulation")
    ap.add_argument(
        "--alternative",
        default="",
        help="simulate this keep policy too, e.g. confirm_runs=4 (labelled apart)",
    )
    ap.add_argument("--sim-only", action="store_true", help="no training; needs --sigma")
    ap.add_argument("--sigma", type=float, default=None, help="sigma for --sim-only")
    ap.add_argument("--quick", action="store_true", help="2 candidates, 100 trials, 10 orgs")
    ap.add_argument("--check", action="store_true", help="exit 1 when a new-rule target is missed")
    args = ap.parse_args(argv)
    if args.quick:
        args.candidates, args.trials, args.sim_orgs = 2, 100, 10
    if args.sim_only and args.sigma is None:
        ap.error("--sim-only needs --sigma")
    started = time.monotonic()
    rule = Rule.from_spec(KeepPolicy())
    real = None if args.sim_only else real_part(args)
    sigma = args.sigma if real is None else real["noise_org"]["sigma"]
    if sigma is None:
        print("integrity: the noise org measured no sigma (noiseRuns 1?); cannot simulate")
        return 2
    promising = real["noise_org"]["promising"].value if real else None
    sizes = {"trials": args.trials, "orgs": args.sim_orgs, "candidates": args.candidates,
             "seed": args.seed}  # fmt: skip
    sim = simulate(rule, sigma, observed_promising_rate=promising, **sizes)
    report: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("report",)},
        "rule": dataclasses.asdict(rule),
        "real": real,
        "simulated": sim,
        "targets": targets(real, sim),
    }
    if args.alternative:
        alt_rule = parse_rule(args.alternative, rule)
        alt = simulate(alt_rule, sigma, observed_promising_rate=promising, **sizes)
        report["alternative"] = {"rule": dataclasses.asdict(alt_rule), **alt}
    report["wall_seconds"] = time.monotonic() - started
    print_report(report)
    print(f"\n{report['wall_seconds']:.0f} s in all")
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(to_json(report), indent=2) + "\n")
        print(f"report: {args.report}")
    missed = [row["target"] for row in report["targets"] if not row["new_met"]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
