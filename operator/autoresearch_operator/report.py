"""Summaries of finished or running orgs: the comparison table and the progress plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .core.journal import Journal
from .core.ledger import Ledger
from .core.records import ExperimentRecord, Outcome


@dataclass
class OrgSummary:
    org: str
    proposer: str
    experiments: int
    kept: int
    discarded: int
    crashed: int
    baseline: float | None
    best: float | None
    best_test: float | None  # the best's score on the held-out test split
    gpu_seconds: float
    llm_tokens: int
    best_runs: int | None = None  # runs the best's mean is over
    sigma: float | None = None  # the noise floor: pooled sigma of val_bpb between runs
    sigma_runs: int | None = None  # runs sigma is pooled from
    confirmed: int = 0  # experiments that went past screening
    verification_gpu_seconds: float = 0.0  # confirmation runs and champion re-runs

    @property
    def keep_rate(self) -> float | None:
        tried = self.experiments - 1  # the baseline is kept by definition
        return (self.kept - 1) / tried if tried > 0 and self.kept else None

    @property
    def improvement(self) -> float | None:
        if self.baseline is None or self.best is None:
            return None
        return self.baseline - self.best


def summarize(org: str, records: list[ExperimentRecord]) -> OrgSummary:
    ledger = Ledger(records)
    counts = ledger.counts
    best, baseline, noise = ledger.best, ledger.baseline, ledger.noise
    proposers = sorted({r.proposer for r in records if r.proposer and r.proposer != "baseline"})
    return OrgSummary(
        org=org,
        proposer=",".join(proposers) or "-",
        experiments=counts["total"],
        kept=counts["kept"],
        discarded=counts["discarded"],
        crashed=counts["crashed"],
        baseline=baseline.mean if baseline else None,
        best=best.mean if best else None,
        best_test=best.test_mean if best else None,
        gpu_seconds=ledger.gpu_seconds,
        llm_tokens=ledger.llm_tokens,
        best_runs=best.n if best else None,
        sigma=noise.sigma,
        sigma_runs=noise.runs or None,
        confirmed=counts["confirmed"],
        verification_gpu_seconds=ledger.verification_gpu_seconds,
    )


def load_all(orgs_dir: Path) -> dict[str, list[ExperimentRecord]]:
    """Every org's records under a workdir's orgs/ folder, by org name."""
    if not orgs_dir.is_dir():
        return {}
    return {
        d.name: Journal(d).load()
        for d in sorted(orgs_dir.iterdir())
        if (d / "experiments.jsonl").exists()
    }


def plot_progress(
    all_records: dict[str, list[ExperimentRecord]],
    output: Path,
    titles: dict[str, str] | None = None,
) -> Path:
    """val_bpb per experiment, the running best as a step line, kept experiments labelled as
    mean ± σ (the org's noise floor) with each of their runs as a faint dot, and beside each kept
    one (the baseline included) its test_bpb on the held-out split, hollow, and below, each
    experiment's tokens/s, so load swings show beside the scores.

    `titles` replaces an org's panel title (e.g. to say that only a recent window is shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    orgs = [o for o, recs in all_records.items() if recs]
    if not orgs:
        raise ValueError("no experiments recorded yet: nothing to plot")
    fig, axes = plt.subplots(2 * len(orgs), 1, figsize=(11, 4.6 * len(orgs)), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1] * len(orgs)})  # fmt: skip
    for ax, speed_ax, org in zip(axes[0::2, 0], axes[1::2, 0], orgs, strict=True):
        recs = all_records[org]
        ledger = Ledger(recs)
        sigma = ledger.noise.sigma
        ok = [r for r in recs if r.outcome is not Outcome.CRASH and r.val_bpb is not None]
        disc = [r for r in ok if r.outcome is Outcome.DISCARD]
        kept = [r for r in ok if r.outcome is Outcome.KEEP]
        ax.scatter(
            [r.experiment for r in disc],
            [r.val_bpb for r in disc],
            c="#bbbbbb",
            s=18,
            label="discarded",
        )
        ax.errorbar(
            [r.experiment for r in kept],
            [r.val_bpb for r in kept],
            yerr=sigma if sigma else None,
            fmt="o",
            c="#2a9d5c",
            ms=6,
            capsize=3,
            label="kept (mean ± σ)" if sigma else "kept",
            zorder=3,
        )
        runs = [(r.experiment + 0.15, run.val_bpb) for r in kept for run in r.runs
                if run.commit == r.commit and run.val_bpb is not None]  # fmt: skip
        if any(len(r.runs) > 1 for r in kept):  # beside the mean, so both stay visible
            ax.scatter([x for x, _ in runs], [y for _, y in runs], c="#2a9d5c", alpha=0.4, s=10,
                       label="its runs", zorder=2)  # fmt: skip
        estimates = {r.experiment: ledger.estimate(r.commit) for r in kept}
        tested = [(n, e.test_mean) for n, e in estimates.items() if e and e.test_mean is not None]
        if tested:
            ax.scatter(
                [n for n, _ in tested],
                [t for _, t in tested],
                facecolors="none",
                edgecolors="#1b6b40",
                s=36,
                label="test_bpb (held out, mean)",
                zorder=3,
            )
        xs, ys = [], []
        best = None
        for r in recs:
            if r.outcome is Outcome.KEEP and r.val_bpb is not None:
                best = r.val_bpb
            if best is not None:
                xs.append(r.experiment)
                ys.append(best)
        ax.step(xs, ys, where="post", c="#2a9d5c", lw=1.5, label="running best")
        crashes = [r for r in recs if r.outcome is Outcome.CRASH]
        if crashes and ok:
            top = max(r.val_bpb for r in ok if r.val_bpb is not None)
            ax.scatter(
                [r.experiment for r in crashes],
                [top] * len(crashes),
                marker="x",
                c="#d1495b",
                s=30,
                label="crash",
            )
        for r in kept:
            label = r.description if len(r.description) <= 40 else r.description[:37] + "..."
            ax.annotate(label, (r.experiment, r.val_bpb), textcoords="offset points", xytext=(4, 6),
                        fontsize=7, rotation=20, color="#1b6b40")  # fmt: skip
        speed = [r for r in recs if r.result is not None and r.result.tokens_per_second]
        # load swings: a slow run is a busier machine as often as a worse candidate
        speed_ax.bar([r.experiment for r in speed],
                     [r.result.tokens_per_second for r in speed if r.result], color="#6c8ebf")  # fmt: skip
        if not speed:
            speed_ax.text(0.5, 0.5, "no tokens/s recorded", transform=speed_ax.transAxes,
                          ha="center", va="center", fontsize=8, color="#888888")  # fmt: skip
        speed_ax.set_ylabel("tokens/s\n(train.py's claim)", fontsize=8)
        speed_ax.sharex(ax)
        speed_ax.tick_params(labelsize=7)
        speed_ax.grid(alpha=0.3)
        ax.set_title((titles or {}).get(org) or f"{org}: {len(recs)} experiments, {len(kept)} kept")
        ax.set_xlabel("experiment")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("bits per byte (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
