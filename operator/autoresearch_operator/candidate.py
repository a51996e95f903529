"""Turn a proposer's reply into a candidate train.py, and check it before any training time is spent.

Pure functions over strings. The reply's reasoning is dropped and its answer read in whichever
format the model chose (candidate_formats.py: SEARCH/REPLACE blocks as asked, unified diffs,
JSON, or the whole file in a ```python fence); edits are applied with some tolerance for
whitespace (candidate_edits.py); the result is checked statically (candidate_checks.py).
Anything wrong raises CandidateError with a one-sentence reason the model can act on.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Sequence

from autoresearch_operator.candidate_checks import (
    PARSER,
    check_definitions,
    check_elisions,
    check_imports,
    check_processes,
    check_whole_file,
)
from autoresearch_operator.candidate_edits import CandidateError, apply_edits
from autoresearch_operator.candidate_formats import (
    REPLACE,
    SEARCH,
    final_answer,
    is_filename_line,
    read_answer,
)

MAX_CANDIDATE_BYTES = 100_000
MAX_DESCRIPTION_CHARS = 120
NO_DESCRIPTION = "(no hypothesis given)"
# A ```python fence shorter than this fraction of the current file is a snippet, not a whole file.
MIN_WHOLE_FILE_FRACTION = 0.4

# "HYPOTHESIS: ...", "1. **Hypothesis**: ...", or a "## Hypothesis" heading over a paragraph
_HYPOTHESIS = re.compile(
    r"^[\s>*#_-]*(?:\d+[.)]\s+)?[\s>*#_-]*(?:HYPOTHESIS|DESCRIPTION)[*_\s]*(?::[*_\s]*(.*))?$",
    re.IGNORECASE,
)
_WORD = re.compile(r"[^\W\d_]")  # a line without a letter ("{", "---") is no description
# Lines of a unified diff that are not prose: headers and hunk markers.
_DIFF_LINE = re.compile(r"^(?:--- |\+\+\+ |@@|diff --git )")


def parse_reply(reply_text: str, current_source: str) -> tuple[str, str]:
    """Return (description, new_source) from a model reply against the current train.py."""
    text = final_answer(reply_text)
    answer = read_answer(text)
    if answer.whole_file is None:
        new_source = apply_edits(current_source, answer.edits)
    else:
        new_source = _whole_file(answer.whole_file, current_source)
    if answer.description:
        description = _trim(answer.description)
    else:
        description = extract_description(text if answer.prose is None else answer.prose)
    return description, new_source


def _whole_file(body: str, current_source: str) -> str:
    lines = body.replace("\r\n", "\n").rstrip("\n").splitlines()
    current_lines = len(current_source.splitlines())
    if len(lines) < MIN_WHOLE_FILE_FRACTION * current_lines:
        raise CandidateError(
            f"the ```python fence has {len(lines)} lines but train.py has {current_lines}; "
            "send SEARCH/REPLACE blocks for partial edits, or the whole file"
        )
    source = "\n".join(lines) + "\n"
    check_elisions(source, current_source)  # an elided file is often short too: say why
    check_whole_file(source, current_source)
    return source


def extract_description(reply_text: str) -> str:
    """The HYPOTHESIS:/DESCRIPTION: line, else the first prose line, trimmed to one short line."""
    lines = reply_text.replace("\r\n", "\n").splitlines()
    # Prose first; then fences too, for replies wrapped whole in one.
    for skip_fences in (True, False):
        outside = list(_lines_outside(lines, skip_fences=skip_fences))
        for i, line in enumerate(outside):
            found = _HYPOTHESIS.match(line)
            if found and (text := (found.group(1) or "").strip(" *_") or _prose(outside[i + 1 :])):
                return _trim(text)
    return _trim(_prose(_lines_outside(lines, skip_fences=True))) or NO_DESCRIPTION


def _prose(lines: Iterable[str]) -> str:
    """The first line that reads as prose: not blank, not a diff header, not a filename."""
    for line in lines:
        prose = line.strip().lstrip("#>*-_ ").strip()
        if _WORD.search(prose) and not _DIFF_LINE.match(line) and not is_filename_line(line):
            return prose
    return ""


def _lines_outside(lines: Sequence[str], *, skip_fences: bool) -> Iterator[str]:
    """Lines that are not inside a SEARCH/REPLACE block (nor, if asked, inside a ``` fence)."""
    in_block = in_fence = False
    for line in lines:
        if SEARCH.match(line):
            in_block = True
        elif REPLACE.match(line):
            in_block = False
        elif in_block:
            continue
        elif line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not (skip_fences and in_fence):
            yield line


def _trim(text: str) -> str:
    text = " ".join(text.split()).strip(" *_")
    if len(text) <= MAX_DESCRIPTION_CHARS:
        return text
    return text[: MAX_DESCRIPTION_CHARS - 3].rstrip() + "..."


def validate_candidate(
    source: str, current_source: str | None = None, *, max_bytes: int = MAX_CANDIDATE_BYTES
) -> None:
    """Raise CandidateError unless `source` is a plausible new train.py worth training."""
    if not source.strip():
        raise CandidateError("the candidate train.py is empty")
    size = len(source.encode("utf-8"))
    if size > max_bytes:
        raise CandidateError(
            f"the candidate train.py is {size} bytes, over the {max_bytes}-byte limit"
        )
    if current_source is not None and _same_code(source, current_source):
        raise CandidateError("the candidate train.py is identical to the current one")
    check_elisions(source, current_source)  # before compiling: a placeholder explains the error
    tree = _compile(source)
    current = _parse_or_none(current_source)
    check_definitions(tree, current)
    check_processes(tree, current)
    check_imports(tree, current)


def _compile(source: str) -> ast.Module:
    try:
        with PARSER:
            tree = ast.parse(source, "train.py")
            compile(tree, "train.py", "exec")  # what the parser lets through, e.g. a stray return
    except SyntaxError as error:
        where = f"line {error.lineno}" if error.lineno else "an unknown line"
        text = (error.text or "").strip()
        shown = f": {text[:80]!r}" if text else ""
        raise CandidateError(
            f"the candidate train.py does not compile: {error.msg} at {where}{shown}"
        ) from error
    except ValueError as error:  # e.g. null bytes
        raise CandidateError(f"the candidate train.py does not compile: {error}") from error
    return tree


def _parse_or_none(source: str | None) -> ast.Module | None:
    """The current train.py's tree, to tell what a candidate adds; None if there is none."""
    if source is None:
        return None
    try:
        with PARSER:
            return ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _same_code(a: str, b: str) -> bool:
    """Equal up to trailing whitespace, which changes nothing worth a training run."""
    return [line.rstrip() for line in a.strip().splitlines()] == [
        line.rstrip() for line in b.strip().splitlines()
    ]
