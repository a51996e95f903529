"""An org's experiment log: experiments.jsonl (every field) and results.tsv (the reference format).

The JSONL file is the source of truth for what has been recorded; each line is written whole and
fsynced before the branch moves, so a crash can lose at most an unrecorded experiment, which the
loop then re-runs from its committed candidate.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .records import ExperimentRecord, Outcome

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
        """All recorded experiments, in order; a torn last line (killed mid-write) is ignored."""
        if not self.jsonl.exists():
            return []
        records: dict[int, ExperimentRecord] = {}
        for line in self.jsonl.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = ExperimentRecord.from_json(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            records.setdefault(rec.experiment, rec)  # first write wins: never record twice
        return [records[k] for k in sorted(records)]

    def append(self, rec: ExperimentRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._repair_torn_tail()
        with self.jsonl.open("a") as f:
            f.write(json.dumps(rec.to_json(), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rewrite_tsv()

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
