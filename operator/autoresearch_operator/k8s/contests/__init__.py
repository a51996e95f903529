"""The ResearchContest controller: kopf handlers, the per-contest runner, its decisions."""
