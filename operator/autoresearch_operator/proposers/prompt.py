"""The chat messages an LLM proposer sends: pure functions of the ProposalContext."""

from __future__ import annotations

from autoresearch_operator.core.program import (
    ProgramError,
    Strategy,
    front_matter_yaml,
    parse_program,
)
from autoresearch_operator.core.records import ExperimentRecord, ProposalContext

MAX_HISTORY = 30
MAX_LOG_TAILS = 3
MAX_LOG_CHARS = 2_000
MAX_HISTORY_DESCRIPTION = 160

SYSTEM_PROMPT = """\
You are a machine learning researcher running experiments in an automated loop.
Each experiment edits train.py, a small GPT pretraining script, then trains it for a fixed
wall-clock budget and measures val_bpb (validation bits per byte) on held-out text.
Lower val_bpb is better. A change is kept only if it beats the best val_bpb so far;
otherwise the loop returns to the best train.py.

Propose exactly one experiment: one focused change with a clear hypothesis. Build on what
the recent results show; do not repeat a change that already failed.

Reply in this format:

HYPOTHESIS: <one sentence: what you change and why it should lower val_bpb>

<<<<<<< SEARCH
<lines copied exactly from the current train.py>
=======
<the lines that replace them>
>>>>>>> REPLACE

Rules:
- Each SEARCH section must match exactly one place in the current train.py, character for
  character, including indentation. Copy whole lines, and add neighbouring lines if needed
  to make the match unique.
- You may use several SEARCH/REPLACE blocks; they are applied in order.
- Instead of blocks you may send the complete new train.py in a single ```python fence.
- train.py must stay valid Python that runs on its own. Do not change how the data is loaded,
  how val_bpb is evaluated, or the summary block printed at the end: the harness rejects runs
  that do.
- Watch the time budget and memory: a run that is too slow or runs out of memory crashes.
"""


def build_messages(
    ctx: ProposalContext,
    *,
    max_history: int = MAX_HISTORY,
    max_log_tails: int = MAX_LOG_TAILS,
    max_log_chars: int = MAX_LOG_CHARS,
) -> list[dict[str, str]]:
    """The system and user messages for experiment `ctx.experiment`."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": build_user_prompt(
                ctx,
                max_history=max_history,
                max_log_tails=max_log_tails,
                max_log_chars=max_log_chars,
            ),
        },
    ]


def build_user_prompt(
    ctx: ProposalContext,
    *,
    max_history: int = MAX_HISTORY,
    max_log_tails: int = MAX_LOG_TAILS,
    max_log_chars: int = MAX_LOG_CHARS,
) -> str:
    best = f"{ctx.best_val_bpb:.6f}" if ctx.best_val_bpb is not None else "not measured yet"
    if ctx.best_val_bpb is not None and ctx.noise_sigma is not None:
        best += (
            f", mean of its runs; the same code varies by sigma {ctx.noise_sigma:.4f} between "
            "runs, so only a change that beats it by more than that can be confirmed and kept"
        )
    sections = [
        *program_sections(ctx.program),
        f"# Current best train.py (val_bpb {best})\n\n```python\n{ctx.best_train_py.rstrip()}\n```",
        "# Recent experiments (oldest first)\n\n" + format_history(ctx.history[-max_history:]),
    ]
    tails = sorted(ctx.log_tails.items())[-max_log_tails:] if max_log_tails > 0 else []
    if tails:
        sections.append(
            "# Logs of recent crashes (last lines)\n\n" + _format_tails(tails, max_log_chars)
        )
    sections.append(
        f"# Your task\n\nPropose experiment {ctx.experiment}. The best val_bpb to beat is {best}. "
        "Start with the HYPOTHESIS line, then the SEARCH/REPLACE blocks."
    )
    return "\n\n".join(sections) + "\n"


def program_sections(program: str) -> list[str]:
    """The prose of program.md, then its strategy when the front-matter sets one.

    A program.md without front-matter is shown as it is; so is one whose front-matter does not
    parse (the mutate proposer records that error; here the model may still make sense of it).
    """
    try:
        parsed = parse_program(program)
    except ProgramError:
        return [f"# Research program (program.md)\n\n{program.strip()}"]
    sections = [f"# Research program (program.md)\n\n{parsed.prose.strip()}"]
    if not parsed.strategy.is_default():
        sections.append(format_strategy(parsed.strategy))
    return sections


def format_strategy(strategy: Strategy) -> str:
    fields = front_matter_yaml(strategy.as_front_matter()).rstrip()
    sentences = "\n".join(f"- {s}" for s in strategy.describe())
    return (
        "# Strategy (program.md front-matter)\n\n"
        "Follow these settings. Knobs are the UPPER_CASE constants at the top of train.py.\n\n"
        f"```yaml\n{fields}\n```\n\n{sentences}"
    )


def format_history(history: list[ExperimentRecord]) -> str:
    """One line per experiment: number, outcome, val_bpb, description, and why it crashed."""
    if not history:
        return "None yet: this is the first experiment."
    lines = []
    for record in history:
        bpb = f"{record.val_bpb:.6f}" if record.val_bpb is not None else "-"
        line = f"- #{record.experiment} {record.outcome.value} val_bpb={bpb}: {_short(record.description)}"
        why = "; ".join(part for part in (record.reason, record.detail) if part)
        if why:
            line += f" [{_short(why)}]"
        lines.append(line)
    return "\n".join(lines)


def _format_tails(tails: list[tuple[int, str]], max_chars: int) -> str:
    blocks = []
    for experiment, tail in tails:
        text = tail.rstrip()
        if len(text) > max_chars:
            text = "..." + text[-max_chars:]
        blocks.append(f"## Experiment {experiment}\n\n```\n{text}\n```")
    return "\n\n".join(blocks)


def _short(text: str, limit: int = MAX_HISTORY_DESCRIPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
