"""The chat messages an LLM proposer sends: functions of the ProposalContext (docs/proposers.md
shows them section by section, with a full example)."""

from __future__ import annotations

import re

from autoresearch_operator.core.program import (
    ProgramError,
    Strategy,
    front_matter_yaml,
    parse_program,
)
from autoresearch_operator.core.records import ExperimentRecord, ProposalContext, TrainResult
from autoresearch_operator.trainer_modules import trainer_packages

MAX_HISTORY = 30
MAX_LOG_TAILS = 3
MAX_LOG_LINES = 20  # of a crash log: the end says why; the start is mostly progress lines
MAX_LOG_CHARS = 1_500
MAX_REJECTED = 3  # rejected proposals shown with the first lines of what was sent
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
- Only train.py changes: prepare.py, the harness, the data and the installed packages are
  fixed. train.py must stay valid Python that runs on its own. Do not change how the data is
  loaded or how the model is exported for evaluation, and never print a score: the harness
  measures val_bpb itself and rejects runs that try.
- Fit the time budget and the device's memory given under "Training setup": a run that has not
  exported its model by its deadline, or that runs out of memory, crashes and costs a whole run.
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
    history = ctx.history[-max_history:]
    sections = [
        *program_sections(ctx.program),
        format_setup(ctx),
        format_best(ctx, best),
        "# Recent experiments (oldest first)\n\n" + format_history(history),
    ]
    tails = sorted(ctx.log_tails.items())[-max_log_tails:] if max_log_tails > 0 else []
    if tails:
        sections.append(
            "# Logs of recent crashes (last lines)\n\n" + _format_tails(tails, max_log_chars)
        )
    rejected = [r for r in history if r.rejected and r.attempt][-MAX_REJECTED:]
    if rejected:
        sections.append(
            "# Recent rejected proposals (the first lines of each reply)\n\n"
            + "\n\n".join(f"## Experiment {r.experiment}\n\n{_block(r.attempt)}" for r in rejected)
        )
    sections.append(
        f"# Your task\n\nPropose experiment {ctx.experiment}. The best val_bpb to beat is {best}. "
        "Start with the HYPOTHESIS line, then the SEARCH/REPLACE blocks."
    )
    return "\n\n".join(sections) + "\n"


def format_setup(ctx: ProposalContext) -> str:
    """The budget, the device and what may be imported: what a change must fit."""
    lines = []
    if ctx.time_budget_seconds is not None:
        if ctx.startup_seconds is not None:
            time = (
                f"{ctx.startup_seconds} s of start-up (imports, torch.compile, warm-up) plus a "
                f"{ctx.time_budget_seconds} s training budget, both counted from its start; "
                "prepare.time_left() counts down to their end"
            )
        else:
            time = f"a {ctx.time_budget_seconds} s training budget"
        lines.append(f"- Time: train.py gets {time}.")
        if ctx.export_seconds is not None:
            lines[-1] += (
                f" {ctx.export_seconds} s later the harness kills it (a timeout crash), so the "
                "model must be exported by then."
            )
    if ctx.device:
        lines.append(f"- Device: {ctx.device}.")
    packages = ctx.packages or trainer_packages()
    lines.append(
        f"- Imports: the standard library and {', '.join(packages)}; nothing else is installed."
    )
    return "# Training setup\n\n" + "\n".join(lines)


def format_best(ctx: ProposalContext, best: str) -> str:
    """The best train.py under its score, the noise floor and what its run reported."""
    notes = []
    if ctx.best_val_bpb is not None and ctx.noise_sigma is not None:
        notes.append(
            f"Its val_bpb is the mean of its runs; the same code varies by sigma "
            f"{ctx.noise_sigma:.4f} between runs, so only a change that beats it by more than "
            "that can be confirmed and kept."
        )
    if ctx.best_result is not None and (run := format_run(ctx.best_result)):
        notes.append(run)
    head = f"# Current best train.py (val_bpb {best})\n\n"
    return head + "".join(f"{note}\n\n" for note in notes) + _block(ctx.best_train_py, "python")


def format_run(result: TrainResult) -> str:
    """Steps, tokens, throughput, memory and MFU of a run, as train.py reported them itself,
    and the parameters the harness counted; "" when the run reported none of them."""
    claims = []
    if result.num_steps is not None:
        claims.append(f"{result.num_steps:,} steps")
    if result.total_tokens_M is not None:
        claims.append(f"{_count(result.total_tokens_M * 1e6)} tokens")
    if result.tokens_per_second is not None:
        claims.append(f"{_count(result.tokens_per_second)} tokens/s")
    if result.peak_vram_mb is not None:
        claims.append(f"peak memory {result.peak_vram_mb / 1024:.1f} GiB")
    if result.mfu_percent is not None:
        claims.append(f"MFU {result.mfu_percent:.1f}%")
    text = f"Its run, as train.py reported it: {', '.join(claims)}." if claims else ""
    if result.num_params_M is not None and text:
        text += f" The harness counted {result.num_params_M:.1f}M parameters."
    return text


def _count(n: float) -> str:
    """1.52M, 579M, 12.3k, 950: three significant digits, or the whole number above 100M."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:,.0f}{suffix}" if n >= 100 * scale else f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


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
    """One line per experiment: number, outcome, val_bpb, description, and why it crashed;
    for a rejected proposal, only why."""
    if not history:
        return "None yet: this is the first experiment."
    lines = []
    for record in history:
        if record.rejected:
            lines.append(f"- #{record.experiment} rejected before training: "
                         f"{_short(record.detail or 'no reason given')}")  # fmt: skip
            continue
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
        lines = tail.rstrip().splitlines()
        text = "\n".join(lines[-MAX_LOG_LINES:])
        if len(text) > max_chars:  # from the first whole line within the limit, if any
            text = text[-max_chars:]
            text = "...\n" + text.split("\n", 1)[1] if "\n" in text else "..." + text
        elif len(lines) > MAX_LOG_LINES:
            text = "...\n" + text
        blocks.append(f"## Experiment {experiment}\n\n{_block(text)}")
    return "\n\n".join(blocks)


def _block(text: str, language: str = "") -> str:
    """`text` in a code fence longer than any run of backticks inside it."""
    fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`{3,}", text))])
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _short(text: str, limit: int = MAX_HISTORY_DESCRIPTION) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
