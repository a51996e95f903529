"""What the benchmarks on the local control plane share: the import paths of the test helpers
(tests/operator/on_cluster.py, tests/support/, hack/cluster/testcluster.py) and their statistics.

Import it before those helpers: `from cluster_bench import ROOT, percentile`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "tests" / "operator", ROOT / "tests", ROOT / "hack" / "cluster"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile: no interpolation between the few samples an org gives."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
