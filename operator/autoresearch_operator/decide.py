"""Keep or discard: the one decision the research loop makes, as a pure function."""

from __future__ import annotations

import math

from .records import Outcome, TrainResult


def keep_or_discard(
    result: TrainResult, best_val_bpb: float | None, min_improvement: float
) -> Outcome:
    """Keep iff the run produced a finite val_bpb below best - min_improvement.

    The first successful result (no best yet, i.e. the baseline) is always kept.
    """
    if result.status != "ok" or result.val_bpb is None or not math.isfinite(result.val_bpb):
        return Outcome.CRASH
    if best_val_bpb is None:
        return Outcome.KEEP
    return Outcome.KEEP if result.val_bpb < best_val_bpb - min_improvement else Outcome.DISCARD
