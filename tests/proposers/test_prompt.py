"""The prompt an LLM proposer sends carries the program (its prose, then the strategy of its
front-matter), the best train.py and recent results."""

from __future__ import annotations

from autoresearch_operator.core.records import ExperimentRecord, Outcome, ProposalContext
from autoresearch_operator.proposers import build_messages


def make_context(train_py: str, program_md: str, **overrides: object) -> ProposalContext:
    history = [
        ExperimentRecord(1, "baseline", Outcome.KEEP, val_bpb=1.234567),
        ExperimentRecord(2, "raise MATRIX_LR to 0.08", Outcome.DISCARD, val_bpb=1.25),
        ExperimentRecord(
            3, "double DEPTH", Outcome.CRASH, reason="nan", detail="loss went NaN at step 40"
        ),
    ]
    values: dict[str, object] = {
        "org": "demo",
        "experiment": 4,
        "program": program_md,
        "best_train_py": train_py,
        "best_val_bpb": 1.234567,
        "history": history,
        "log_tails": {3: "step 39 loss 3.1\nstep 40 loss nan\nFAIL: loss is NaN"},
    }
    values.update(overrides)
    return ProposalContext(**values)  # type: ignore[arg-type]


def test_messages_are_system_then_user_with_the_reply_format(
    train_py: str, program_md: str
) -> None:
    messages = build_messages(make_context(train_py, program_md))
    assert [m["role"] for m in messages] == ["system", "user"]
    system = messages[0]["content"]
    for marker in (
        "HYPOTHESIS:",
        "<<<<<<< SEARCH",
        "=======",
        ">>>>>>> REPLACE",
        "```python",
        "val_bpb",
    ):
        assert marker in system


def test_user_prompt_carries_program_best_source_score_and_task(
    train_py: str, program_md: str
) -> None:
    user = build_messages(make_context(train_py, program_md))[1]["content"]
    assert "tangerine-gradient" in user
    assert f"```python\n{train_py.rstrip()}\n```" in user
    assert "val_bpb 1.234567" in user
    assert "Propose experiment 4" in user


def test_history_lists_outcomes_scores_descriptions_and_crash_reasons(
    train_py: str, program_md: str
) -> None:
    user = build_messages(make_context(train_py, program_md))[1]["content"]
    assert "- #1 keep val_bpb=1.234567: baseline" in user
    assert "- #2 discard val_bpb=1.250000: raise MATRIX_LR to 0.08" in user
    assert "- #3 crash val_bpb=-: double DEPTH [nan; loss went NaN at step 40]" in user
    assert user.index("#1 keep") < user.index("#2 discard") < user.index("#3 crash")
    assert "FAIL: loss is NaN" in user


def test_long_crash_logs_keep_their_end_and_old_history_is_dropped(
    train_py: str, program_md: str
) -> None:
    history = [ExperimentRecord(n, f"idea {n}", Outcome.DISCARD, val_bpb=1.3) for n in range(1, 51)]
    tail = "early noise " * 1000 + "Traceback: CUDA out of memory"
    ctx = make_context(train_py, program_md, history=history, log_tails={50: tail})
    user = build_messages(ctx, max_history=10, max_log_chars=500)[1]["content"]
    assert "#41 discard" in user and "#40 discard" not in user
    assert "Traceback: CUDA out of memory" in user
    assert user.count("early noise") < 60


def test_first_experiment_says_there_is_no_history_and_no_score(
    train_py: str, program_md: str
) -> None:
    ctx = make_context(
        train_py, program_md, history=[], log_tails={}, best_val_bpb=None, experiment=1
    )
    user = build_messages(ctx)[1]["content"]
    assert "None yet" in user and "not measured yet" in user
    assert "Logs of recent crashes" not in user


# -- program.md front-matter ------------------------------------------------------------------

SMALL_TRAIN_PY = "LR = 0.1  # learning rate\n"
PROSE = "# Program\n\nTune the learning rates.\n"
# The user prompt as it was before program.md had front-matter.
PROSE_ONLY_PROMPT = (
    "# Research program (program.md)\n\n# Program\n\nTune the learning rates.\n\n"
    "# Current best train.py (val_bpb 1.500000)\n\n```python\nLR = 0.1  # learning rate\n```\n\n"
    "# Recent experiments (oldest first)\n\n- #1 keep val_bpb=1.500000: baseline\n\n"
    "# Your task\n\nPropose experiment 2. The best val_bpb to beat is 1.500000. "
    "Start with the HYPOTHESIS line, then the SEARCH/REPLACE blocks.\n"
)


def small_prompt(program: str) -> str:
    history = [ExperimentRecord(1, "baseline", Outcome.KEEP, val_bpb=1.5)]
    ctx = ProposalContext("demo", 2, program, SMALL_TRAIN_PY, 1.5, history=history)
    return build_messages(ctx)[1]["content"]


def test_a_program_without_front_matter_gives_the_same_prompt_as_before() -> None:
    assert small_prompt(PROSE) == PROSE_ONLY_PROMPT


def test_front_matter_becomes_a_strategy_section_after_the_prose() -> None:
    program = "---\nname: lr\nexplore: ['*_LR']\nstep: 2\nrisk: high\n---\n\n" + PROSE
    user = small_prompt(program)
    assert user.startswith("# Research program (program.md)\n\n# Program\n\nTune the")
    assert "name: lr" not in user and not user.startswith("---")
    assert user.index("Tune the") < user.index("# Strategy (program.md front-matter)")
    strategy = user[user.index("# Strategy (program.md front-matter)") :]
    assert "```yaml\nexplore: ['*_LR']\nstep: 2.0\nrisk: high\n```" in strategy
    assert "- Change only knobs matching *_LR." in strategy
    assert "- Take risks: now and then change one knob more than asked." in strategy
    assert strategy.index("risk: high") < strategy.index("# Current best train.py")


def test_front_matter_with_the_default_strategy_shows_only_the_prose() -> None:
    assert small_prompt("---\nname: plain\n---\n\n" + PROSE) == PROSE_ONLY_PROMPT


def test_a_bad_front_matter_is_shown_as_written_instead_of_failing() -> None:
    program = "---\nstep: -1\n---\n\n" + PROSE
    user = small_prompt(program)
    assert user.startswith("# Research program (program.md)\n\n---\nstep: -1\n---\n\n# Program")
    assert "# Strategy" not in user
