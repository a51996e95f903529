"""An org's experiment log: experiments.jsonl (every field) and results.tsv (the reference format).

The JSONL file is the source of truth. It holds two kinds of line, each written whole and
fsynced: a run line (`"kind": "run"`) as soon as a training run finishes, and an experiment line
when the experiment is decided (before the branch moves). A kill can therefore lose at most the
runs in flight, which the loop trains again; a run or a decision once written is never repeated.
A journal from before runs existed (experiment lines with their result and no run lines) reads
as one run per experiment (core/ledger.py), decided in line order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .records import ExperimentRecord, Outcome, RunRecord

TSV_HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"


def tsv_row(rec: ExperimentRecord) -> str:
    """One results.tsv line as the reference writes it (crashes get 0.000000 and 0.0)."""
    commit = (rec.commit or "-------")[:7]
    bpb = rec.val_bpb if rec.outcome is not Outcome.CRASH and rec.val_bpb is not None else 0.0
    mem_mb = rec.result.peak_vram_mb if rec.result and rec.outcome is not Outcome.CRASH else None
    mem_gb = (mem_mb or 0.0) / 1024
    desc = " ".join(rec.description.split())
    if rec.outcome is Outcome.CRASH and rec.reason:
        desc = f"{desc} [{rec.reason}]"
    return f"{commit}\t{bpb:.6f}\t{mem_gb:.1f}\t{rec.outcome.value}\t{desc}\n"


@dataclass
class Journal:
    directory: Path

    @property
    def jsonl(self) -> Path:
        return self.directory / "experiments.jsonl"

    @property
    def tsv(self) -> Path:
        return self.directory / "results.tsv"

    def load(self) -> list[ExperimentRecord]:
        """Every decided experiment, in experiment order, with its runs attached."""
        return self.read()[0]

    def read(self) -> tuple[list[ExperimentRecord], list[RunRecord]]:
        """(decided experiments with their runs, runs of experiments not decided yet).

        A torn last line (killed mid-write) is ignored; the first write of an experiment or a run
        wins, so nothing is ever counted twice."""
        records: dict[int, ExperimentRecord] = {}
        runs: dict[tuple[int, int], RunRecord] = {}
        lines = self.jsonl.read_text().splitlines() if self.jsonl.exists() else []
        for line in lines:
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if data.get("kind") == "run":
                    run = RunRecord.from_json(data)
                    runs.setdefault(run.key, run)
                else:
                    rec = ExperimentRecord.from_json(data)
                    if rec.decision is None:  # an old journal: lines are in decision order
                        rec.decision = len(records)
                    records.setdefault(rec.experiment, rec)
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                continue
        for (n, _), run in sorted(runs.items()):
            if n in records:
                records[n].runs.append(run)
        open_runs = [r for key, r in sorted(runs.items()) if key[0] not in records]
        return [records[k] for k in sorted(records)], open_runs

    def append(self, rec: ExperimentRecord) -> None:
        """Record a decided experiment (its runs must already be journaled)."""
        self._write(rec.to_json())
        self.rewrite_tsv()

    def append_run(self, run: RunRecord) -> None:
        """Record a finished run, before anything is decided from it."""
        self._write(run.to_json())

    def _write(self, data: dict[str, object]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        with self.jsonl.open("a") as f:
            f.write(json.dumps(data, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _repair_torn_tail(self) -> None:
        if self.jsonl.exists():
            data = self.jsonl.read_bytes()
            if data and not data.endswith(b"\n"):
                self.jsonl.write_bytes(data[: data.rfind(b"\n") + 1])

    def rewrite_tsv(self) -> None:
        """Derived from the JSONL, so it can never disagree with it."""
        tmp = self.tsv.with_suffix(".tsv.tmp")
        tmp.write_text(TSV_HEADER + "".join(tsv_row(r) for r in self.load()))
        tmp.replace(self.tsv)
