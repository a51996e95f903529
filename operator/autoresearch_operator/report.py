"""Summaries of finished or running orgs and contests: the comparison table and the plots, and
where a local run keeps what they read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.journal import Journal
from .core.ledger import Ledger
from .core.records import ExperimentRecord, Outcome


class NothingToReport(ValueError):
    """There is nothing to compare or plot yet; the message says what is missing."""


# -- the workdir of local runs ------------------------------------------------------------------


def orgs_dir(workdir: Path) -> Path:
    return workdir / "orgs"


def org_dir(workdir: Path, org: str) -> Path:
    return orgs_dir(workdir) / org


def contest_status_file(workdir: Path, contest: str) -> Path:
    """A local contest's status, in the shape of the ResearchContest's `.status`."""
    return workdir / "contests" / contest / "status.json"


# -- orgs ---------------------------------------------------------------------------------------


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
    rejected: int = 0  # proposals that never became a candidate (no experiment, no GPU time)
    llm_cost_usd: float | None = None  # at proposer.pricing; None without a price

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
        rejected=counts["rejected"],
        llm_cost_usd=ledger.llm_cost_usd,
    )


def load_all(orgs_dir: Path, only: list[str] | None = None) -> dict[str, list[ExperimentRecord]]:
    """Every org's records under a workdir's orgs/ folder (or those named in `only`), by name."""
    if not orgs_dir.is_dir():
        return {}
    return {
        d.name: Journal(d).load()
        for d in sorted(orgs_dir.iterdir())
        if (d / "experiments.jsonl").exists() and (not only or d.name in only)
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
        raise NothingToReport("no experiments recorded yet: nothing to plot")
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


# -- contests -------------------------------------------------------------------------------------


def load_contest_status(workdir: Path, contest: str) -> dict[str, Any]:
    """A local contest's status.json (NothingToReport when it has not started here)."""
    path = contest_status_file(workdir, contest)
    if not path.is_file():
        raise NothingToReport(
            f"no local contest {contest}: {path} is missing (`autoresearch contest` writes it)"
        )
    return dict(json.loads(path.read_text()))


def status_rounds(status: dict[str, Any]) -> list[dict[str, Any]]:
    """A contest status's rounds, oldest first (the past ones, then the current one)."""
    current = [status["current"]] if status.get("current") else []
    return sorted([*(status.get("history") or []), *current], key=lambda r: r["round"])


@dataclass(frozen=True)
class BestCurve:
    """An entrant's running best in one round against the GPU time its org had spent by then."""

    round: int
    entrant: str
    gpu_hours: list[float]
    best: list[float]
    estimated: bool = False  # GPU time per experiment estimated (a cluster status's window)


def best_curve(round: int, entrant: str, records: list[ExperimentRecord]) -> BestCurve:
    """After each decision, in decision order: the org's GPU time and its best so far, both as
    the Ledger of the decisions up to then computes them."""
    ordered = sorted(records, key=lambda r: (r.decision is None, r.decision or 0, r.experiment))
    xs, ys = [], []
    for i in range(len(ordered)):
        ledger = Ledger(ordered[: i + 1])
        if ledger.best is not None:
            xs.append(ledger.gpu_seconds / 3600)
            ys.append(ledger.best.mean)
    return BestCurve(round, entrant, xs, ys)


def local_contest_curves(status: dict[str, Any], workdir: Path) -> list[BestCurve]:
    """Each entrant's curve in each round of a local contest, from its org's journal."""
    curves = []
    for r in status_rounds(status):
        for s in r.get("standings") or []:
            directory = org_dir(workdir, s["org"])
            if (directory / "experiments.jsonl").exists():
                curves.append(best_curve(r["round"], s["entrant"], Journal(directory).load()))
    return curves


def plot_contest(
    curves: list[BestCurve], status: dict[str, Any], output: Path, name: str = ""
) -> Path:
    """One panel per round: each entrant's running best against the GPU time its org spent, in
    the same colour every round, with a band of ± the round's sigma (the noise pooled over the
    round: a gap narrower than the bands is not a difference), and the shared start dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_round = {r["round"]: r for r in status_rounds(status)}
    drawn = sorted({c.round for c in curves if c.gpu_hours})
    if not drawn:
        raise NothingToReport("no experiments recorded yet in this contest: nothing to plot")
    entrants = sorted({c.entrant for c in curves})
    palette = plt.get_cmap("tab10")
    colours = {e: palette(i % 10) for i, e in enumerate(entrants)}
    longest = max(x for c in curves for x in c.gpu_hours)
    unit, scale = ("GPU-hours", 1.0) if longest >= 1 else ("GPU-minutes", 60.0)
    fig, axes = plt.subplots(1, len(drawn), figsize=(6.2 * len(drawn), 4.8), squeeze=False,
                             sharey=True)  # fmt: skip
    for ax, rnd in zip(axes[0], drawn, strict=True):
        info = by_round.get(rnd, {})
        sigma = info.get("sigma")
        ranks = {s["entrant"]: s.get("rank") for s in info.get("standings") or []}
        for c in sorted((c for c in curves if c.round == rnd and c.gpu_hours),
                        key=lambda c: (ranks.get(c.entrant) or 99, c.entrant)):  # fmt: skip
            xs = [x * scale for x in c.gpu_hours]
            colour = colours[c.entrant]
            label = f"{ranks.get(c.entrant) or '-'}. {c.entrant}"
            ax.step(xs, c.best, where="post", color=colour, lw=1.8, label=label)
            # where it ended, ± sigma: the comparison the standings make
            ax.errorbar(xs[-1], c.best[-1], yerr=sigma or None, fmt="o", color=colour, ms=5,
                        capsize=4, zorder=3)  # fmt: skip
            if sigma:
                ax.fill_between(xs, [y - sigma for y in c.best], [y + sigma for y in c.best],
                                step="post", color=colour, alpha=0.12, lw=0)  # fmt: skip
        if info.get("startValBpb") is not None:
            ax.axhline(info["startValBpb"], color="#777777", ls="--", lw=1, label="start (mean)")
        verdict = info.get("verdict", "")
        band = f"band ± σ = {sigma:.4f}" if sigma else "no σ yet"
        estimated = any(c.estimated for c in curves if c.round == rnd)
        ax.set_title(f"round {rnd}: {verdict}\n{band}" + (", GPU time estimated" if estimated else ""),
                     fontsize=9)  # fmt: skip
        ax.set_xlabel(f"{unit} spent by the entrant's org (baseline runs included)")
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0][0].set_ylabel("best val_bpb so far (lower is better)")
    if name:
        fig.suptitle(f"contest {name}: running best against GPU time", fontsize=11)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output
