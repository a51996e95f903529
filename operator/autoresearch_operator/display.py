"""The live terminal view of a local run: where the org is, how training goes, the best so far."""

from __future__ import annotations

import time
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from .core.records import ExperimentRecord, Outcome, RunRecord
from .executor import Progress as TrainProgress
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
