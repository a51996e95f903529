"""parse_reply and validate_candidate: what a model's reply turns into, and what is refused."""

from __future__ import annotations

import pytest

from autoresearch_operator.candidate import (
    MAX_DESCRIPTION_CHARS,
    NO_DESCRIPTION,
    CandidateError,
    extract_description,
    parse_reply,
    validate_candidate,
)


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"


def test_single_search_replace_block_changes_only_that_line(train_py: str) -> None:
    reply = "HYPOTHESIS: a higher Muon LR converges faster.\n\n" + block(
        "MATRIX_LR = 0.04  # learning rate for matrix parameters (Muon)",
        "MATRIX_LR = 0.06  # learning rate for matrix parameters (Muon)",
    )
    description, new = parse_reply(reply, train_py)
    assert description == "a higher Muon LR converges faster."
    assert new == train_py.replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.06")


def test_several_fenced_blocks_apply_in_order(train_py: str) -> None:
    reply = (
        "**Hypothesis:** deeper and a slower warmdown.\n\n```python\n"
        + block(
            "DEPTH = 8  # number of transformer layers",
            "DEPTH = 10  # number of transformer layers",
        )
        + "\n```\n\nand\n\n```\n"
        + block(
            "WARMDOWN_RATIO = 0.5  # fraction of the budget spent warming down",
            "WARMDOWN_RATIO = 0.3  # fraction of the budget spent warming down",
        )
        + "\n```\n"
    )
    description, new = parse_reply(reply, train_py)
    assert description == "deeper and a slower warmdown."
    assert "DEPTH = 10  #" in new and "WARMDOWN_RATIO = 0.3  #" in new
    assert "DEPTH = 8 " not in new and "WARMDOWN_RATIO = 0.5" not in new
    validate_candidate(new, train_py)


def test_later_block_sees_the_result_of_an_earlier_one(train_py: str) -> None:
    reply = (
        block("DEPTH = 8  # number of transformer layers", "DEPTH = 12  # layers")
        + "\n"
        + block("DEPTH = 12  # layers", "DEPTH = 12  # layers, up from 8")
    )
    _, new = parse_reply(reply, train_py)
    assert "DEPTH = 12  # layers, up from 8\n" in new


def test_multiline_block_replaces_a_function_body(train_py: str) -> None:
    reply = "Use GELU.\n" + block(
        "        x = self.fc(x)\n        x = F.relu(x).square()",
        "        x = self.fc(x)\n        x = F.gelu(x)",
    )
    description, new = parse_reply(reply, train_py)
    assert description == "Use GELU."
    assert "F.gelu(x)" in new and "F.relu" not in new


def test_trailing_spaces_in_search_are_tolerated(train_py: str) -> None:
    reply = block(
        "DEPTH = 8  # number of transformer layers   ", "DEPTH = 6  # number of transformer layers"
    )
    _, new = parse_reply(reply, train_py)
    assert "DEPTH = 6  #" in new


def test_leading_whitespace_differences_are_not_tolerated(train_py: str) -> None:
    reply = block("x = self.fc(x)", "x = self.fc(x) * 2")
    with pytest.raises(CandidateError, match=r"block 1 matches nothing.*x = self\.fc\(x\)"):
        parse_reply(reply, train_py)


def test_search_that_matches_nothing_names_the_block_and_snippet(train_py: str) -> None:
    reply = block("DEPTH = 8  # layers", "DEPTH = 9  # layers")
    reply = (
        block("MATRIX_LR = 0.04  # learning rate for matrix parameters (Muon)", "MATRIX_LR = 0.05")
        + "\n"
        + reply
    )
    with pytest.raises(CandidateError) as caught:
        parse_reply(reply, train_py)
    assert "SEARCH block 2 matches nothing" in caught.value.reason
    assert "DEPTH = 8  # layers" in caught.value.reason


def test_ambiguous_search_is_an_error_asking_for_context(train_py: str) -> None:
    reply = block("        super().__init__()", "        super().__init__()  # hi")
    with pytest.raises(CandidateError, match=r"block 1 matches 2 places.*unique"):
        parse_reply(reply, train_py)


def test_empty_search_is_an_error(train_py: str) -> None:
    with pytest.raises(CandidateError, match="block 1 has an empty SEARCH"):
        parse_reply("<<<<<<< SEARCH\n=======\nprint('hi')\n>>>>>>> REPLACE\n", train_py)


def test_unclosed_block_is_an_error(train_py: str) -> None:
    reply = "<<<<<<< SEARCH\nDEPTH = 8  # number of transformer layers\n=======\nDEPTH = 9\n"
    with pytest.raises(CandidateError, match="block 1 is not closed by >>>>>>> REPLACE"):
        parse_reply(reply, train_py)


def test_replace_marker_without_search_marker_is_an_error(train_py: str) -> None:
    reply = "<<<< SEARCH\nDEPTH = 8\n=======\nDEPTH = 9\n>>>>>>> REPLACE\n"
    with pytest.raises(CandidateError, match="without a matching <<<<<<< SEARCH"):
        parse_reply(reply, train_py)


def test_whole_file_in_python_fence_replaces_the_source(train_py: str) -> None:
    new_file = train_py.replace("HEAD_DIM = 128", "HEAD_DIM = 64")
    reply = f"DESCRIPTION: smaller heads, more of them.\n\n```python\n{new_file}```\n\nGood luck!"
    description, new = parse_reply(reply, train_py)
    assert description == "smaller heads, more of them."
    assert new == new_file


def test_snippet_in_python_fence_is_not_taken_for_the_whole_file(train_py: str) -> None:
    reply = "Try this:\n```python\nMATRIX_LR = 0.05\n```\n"
    with pytest.raises(CandidateError, match="1 lines but train.py has"):
        parse_reply(reply, train_py)


def test_prose_only_reply_is_an_error(train_py: str) -> None:
    with pytest.raises(CandidateError, match="no SEARCH/REPLACE block and no ```python fence"):
        parse_reply("I would raise the learning rate a little.", train_py)


def test_description_falls_back_to_first_prose_line_and_is_trimmed() -> None:
    long_line = "## " + "word " * 60
    description = extract_description(f"\n\n{long_line}\n" + block("a", "b"))
    assert description.startswith("word word")
    assert len(description) <= MAX_DESCRIPTION_CHARS and description.endswith("...")


def test_description_ignores_code_and_defaults_when_there_is_no_prose() -> None:
    assert extract_description("```python\nprint(1)\n```\n") == NO_DESCRIPTION
    assert extract_description(block("HYPOTHESIS: not me", "x = 1") + "\nreal one") == "real one"


def test_syntax_error_is_reported_with_its_line(train_py: str) -> None:
    reply = block("def main():", "def main(:")
    _, new = parse_reply(reply, train_py)
    line = new.splitlines().index("def main(:") + 1
    with pytest.raises(
        CandidateError, match=rf"does not compile: .* at line {line}: 'def main\(:'"
    ):
        validate_candidate(new, train_py)


def test_validate_refuses_empty_oversized_and_unchanged_sources(train_py: str) -> None:
    with pytest.raises(CandidateError, match="is empty"):
        validate_candidate("  \n", train_py)
    with pytest.raises(CandidateError, match="over the 1000-byte limit"):
        validate_candidate(train_py, max_bytes=1000)
    with pytest.raises(CandidateError, match="identical"):
        validate_candidate(train_py.replace("\n", "  \n"), train_py)
    validate_candidate(train_py.replace("DEPTH = 8", "DEPTH = 9"), train_py)
