"""The terminal views: a local run live (where the org is, how training goes, the best so far),
the comparison of orgs, and a contest's standings round by round."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .contest_local import ContestObserver
from .core.contest import RoundRecord
from .core.records import ExperimentRecord, Outcome, RunRecord
from .executor import Progress as TrainProgress
from .report import OrgSummary, status_rounds
from .spec import Org

_COLOURS = {Outcome.KEEP: "green", Outcome.DISCARD: "white", Outcome.CRASH: "red"}


class LiveDisplay:
    """A LoopObserver that draws experiment n of N, training time vs budget, loss and best val_bpb."""

    def __init__(self, console: Console, org: Org):
        self.console = console
        self.org = org
        self.total = org.spec.budget.maxExperiments
        trainer = org.spec.trainer  # the child trains until start-up + budget, then exports
        self.budget = trainer.startup_seconds + trainer.timeBudgetSeconds
        self.best: float | None = None
        self.status = Text("")
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.experiments = self.bars.add_task(f"{org.name} experiments", total=self.total, info="")
        self.training = self.bars.add_task("training", total=self.budget, info="", visible=False)
        self.live = Live(
            Group(self.status, self.bars), console=console, refresh_per_second=4, transient=True
        )
        self._train_start = 0.0
        self._verifying: dict[int, list[int]] = {}  # experiment -> [runs done, runs asked]

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.live.__exit__(et, ev, tb)

    def _best(self) -> str:
        return "-" if self.best is None else f"{self.best:.4f}"

    def phase(self, org: str, experiment: int, phase: str, detail: str = "") -> None:
        if phase == "confirming":  # detail: "N more runs and N re-runs of the best"
            pairs = int(detail.split()[0]) if detail[:1].isdigit() else 0
            self._verifying[experiment] = [0, 2 * pairs]
            self.console.print(f"\\[{org}] #{experiment:<3} [cyan]promising[/]: confirming with "
                               f"{detail}", highlight=False)  # fmt: skip
        if phase == "verifying" and experiment in self._verifying:
            done, asked = self._verifying[experiment]
            phase, detail = f"confirming #{experiment}: run {done + 1}/{asked}", f"({detail})"
        self.status.plain = (
            f"[{org}] experiment {experiment + 1}/{self.total}: {phase} {detail}".rstrip()
        )
        self.bars.update(
            self.experiments, completed=experiment, info=f"best val_bpb {self._best()}"
        )
        if phase.startswith(("training", "confirming #")):
            self._train_start = time.monotonic()
            self.bars.reset(self.training, total=self.budget, visible=True)
        if not self.console.is_terminal:
            self.console.print(self.status)  # a Text: '[org]' is not markup

    def progress(self, org: str, p: TrainProgress) -> None:
        loss = "-" if p.loss is None else f"{p.loss:.4f}"
        elapsed = min(time.monotonic() - self._train_start, float(self.budget))
        self.bars.update(self.training, completed=elapsed, info=f"step {p.step or 0} loss {loss}")

    def run_recorded(self, org: str, run: RunRecord) -> None:
        """A confirmation run or champion re-run finished: one indented line each."""
        if not run.role.verification:
            return
        if run.experiment in self._verifying:
            self._verifying[run.experiment][0] += 1
        bpb = "crashed" if run.val_bpb is None else f"val_bpb {run.val_bpb:.4f}"
        who = "candidate" if run.role.value == "confirm" else "best     "
        self.console.print(f"\\[{org}]      run {run.run} {who} seed {run.seed:<6} {bpb}",
                           highlight=False)  # fmt: skip

    def pushed(self, org: str, experiment: int, error: str | None) -> None:
        if error:
            self.console.print(f"\\[{org}] [yellow]push failed after #{experiment}[/]: {error}",
                               highlight=False)  # fmt: skip

    def recorded(self, org: str, rec: ExperimentRecord) -> None:
        self._verifying.pop(rec.experiment, None)
        if rec.outcome is Outcome.KEEP:
            self.best = rec.val_bpb
        self.bars.update(self.training, visible=False)
        self.bars.update(
            self.experiments, completed=rec.experiment + 1, info=f"best val_bpb {self._best()}"
        )
        bpb = "-" if rec.val_bpb is None else f"{rec.val_bpb:.4f}"
        test = rec.result.test_bpb if rec.result else None
        held_out = "" if test is None else f" (test {test:.4f})"
        why = f" ({rec.reason}: {rec.detail})" if rec.outcome is Outcome.CRASH else ""
        if rec.p_value is not None:
            why = f"  p={rec.p_value:.3g} over {len(rec.runs)} runs"
        colour = _COLOURS[rec.outcome]
        self.console.print(
            f"\\[{org}] #{rec.experiment:<3} [{colour}]{rec.outcome.value:<7}[/] val_bpb {bpb}{held_out}  "
            f"best {self._best()}  {escape(rec.description + why)}",
            highlight=False,
        )


# -- the comparison of orgs -----------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _with_n(x: float | None, n: int | None) -> str:
    return _fmt(x) if x is None or not n else f"{x:.4f} ({n})"


def print_comparison(console: Console, summaries: list[OrgSummary], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("org", "proposer", "best (runs)", "best test_bpb", "baseline", "Δ", "σ (runs)",
                "experiments", "kept", "discarded", "crashed", "confirmed", "keep rate",
                "GPU time", "of it verifying", "rejected proposals", "LLM tokens",
                "LLM cost"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("org", "proposer") else "right")
    for s in sorted(summaries, key=lambda s: (s.best is None, s.best or 0.0)):
        table.add_row(
            s.org, s.proposer, _with_n(s.best, s.best_runs), _fmt(s.best_test), _fmt(s.baseline),
            _fmt(s.improvement, "+.4f"), _with_n(s.sigma, s.sigma_runs), str(s.experiments),
            str(s.kept), str(s.discarded), str(s.crashed), str(s.confirmed),
            _fmt(s.keep_rate, ".0%"), f"{s.gpu_seconds / 60:.1f} min",
            f"{s.verification_gpu_seconds / 60:.1f} min", str(s.rejected), str(s.llm_tokens),
            "-" if s.llm_cost_usd is None else f"${s.llm_cost_usd:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "best: the mean over the best commit's runs; σ: how much val_bpb varies between runs "
        "of the same code; confirmed: candidates that went past the screening run; rejected "
        "proposals never trained and are no experiments",
        style="dim",
    )


# -- contests -------------------------------------------------------------------------------------


def _interval(x: float | None, low: float | None, high: float | None, spec: str) -> str:
    if x is None:
        return "-"
    if low is None or high is None:
        return format(x, spec)
    return f"{x:{spec}} [{low:{spec}}, {high:{spec}}]"


def _best(s: dict[str, Any]) -> str:
    if s.get("valBpb") is None:
        return "-"
    sd = f" ± {s['valBpbSd']:.4f}" if s.get("valBpbSd") is not None else ""
    return f"{s['valBpb']:.4f}{sd} ({s.get('runs', 1)})"


def _per_gpu_hour(s: dict[str, Any]) -> str:
    """The gain per GPU-hour and its interval: the gain's interval over the same GPU time (the
    GPU time is measured, not estimated, so it carries no interval of its own)."""
    hours = s.get("gpuHours") or 0.0
    low, high = s.get("improvementLow"), s.get("improvementHigh")
    return _interval(
        s.get("gainPerGpuHour"),
        low / hours if low is not None and hours else None,
        high / hours if high is not None and hours else None,
        "+.3g",
    )


def round_table(r: dict[str, Any], title: str | None = None) -> Table:
    """One round of a contest status: its standings, best first."""
    parents = {x["entrant"]: x.get("parents") or [] for x in r.get("lineage") or []}
    table = Table(title=title or f"round {r['round']}", title_justify="left")
    for col in ("rank", "entrant", "best (mean ± sd, runs)", "gain over start [interval]",
                "gain / GPU-h [interval]", "keep rate", "GPU-h", "tokens", "cost",
                "parents"):  # fmt: skip
        table.add_column(escape(col), justify="left" if col in ("entrant", "parents") else "right")
    for s in r.get("standings") or []:
        candidates = max(int(s.get("experiments") or 0) - 1, 0)
        keep = (
            f"{s['keepRate']:.0%} ({s.get('kept', 0)}/{candidates})"
            if s.get("keepRate") is not None
            else "-"
        )
        gpu = f"{s.get('gpuHours') or 0.0:.4f}"
        table.add_row(
            str(s.get("rank", "-")), s["entrant"] + ("" if s.get("done") else " …"), _best(s),
            _interval(s.get("improvement"), s.get("improvementLow"), s.get("improvementHigh"), "+.4f"),
            _per_gpu_hour(s), keep, gpu, str(s.get("llmTokens") or 0),
            "-" if s.get("cost") is None else f"${s['cost']:.4f}",
            ", ".join(parents.get(s["entrant"], [])) or "(submitted)",
        )  # fmt: skip
    return table


def _round_notes(r: dict[str, Any]) -> str:
    start = r.get("startValBpb")
    sigma = r.get("sigma")
    bits = [f"start {r.get('startCommit', '?')[:7]}"]
    if start is not None:
        bits.append(f"start val_bpb {start:.4f}")
    bits.append(f"σ {sigma:.4f}" if sigma is not None else "no σ yet")
    if r.get("pValue") is not None:
        bits.append(f"top vs runner-up p={r['pValue']:.3g}")
    return f"{r.get('verdict', '')}  ({'; '.join(bits)})"


def print_contest(console: Console, name: str, status: dict[str, Any]) -> None:
    """Every round's standings, then the verdict and the lineage on the programs branch."""
    rounds = status_rounds(status)
    if not rounds:
        console.print(f"contest {name}: no round started yet")
        return
    for r in rounds:
        console.print(
            round_table(r, f"contest {name}, round {r['round']} of {status.get('rounds')}")
        )
        console.print(_round_notes(r), highlight=False)
    console.print(
        "best: the entrant's best commit, mean over its measurement runs; gain: the shared "
        "start's mean minus it, with its interval at the contest's alpha (σ pooled over the "
        "round); … : still running",
        style="dim",
    )
    console.print(f"[bold]verdict[/] after round {status.get('round')}: {status.get('verdict', '')}",
                  highlight=False)  # fmt: skip
    console.print(f"[bold]lineage[/] (branch {status.get('programsBranch')}):")
    for r in rounds:
        parts = [
            f"{x['entrant']} <- {', '.join(x.get('parents') or []) or 'submitted'}"
            for x in r.get("lineage") or []
        ]
        commit = (r.get("programsCommit") or "?")[:7]
        console.print(f"  round {r['round']} ({commit}): {'; '.join(parts)}", highlight=False)


class ContestDisplay(ContestObserver):
    """`autoresearch contest` in the terminal: each turn live, the standings after each pass."""

    def __init__(self, console: Console, name: str):
        self.console = console
        self.name = name

    def org(self, org: Org) -> LiveDisplay:
        return LiveDisplay(self.console, org)

    def standings(self, status: dict[str, Any]) -> None:
        if status.get("current"):
            self.console.print(round_table(status["current"], f"{self.name}: standings so far"))

    def round_done(self, status: dict[str, Any], next_round: RoundRecord | None) -> None:
        ended = (status.get("history") or [{}])[-1] if next_round else status.get("current", {})
        self.console.print(f"[bold]round {ended.get('round')} done[/]: {_round_notes(ended)}",
                           highlight=False)  # fmt: skip
        if next_round is not None:
            written = "\n\n".join(next_round.message.split("\n\n")[:2])  # who wrote what
            self.console.print(escape(written), highlight=False)
