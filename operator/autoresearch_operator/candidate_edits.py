"""Apply search-and-replace edits to train.py, tolerating the whitespace models get wrong.

Every reply format (SEARCH/REPLACE blocks, unified diff hunks, JSON edits) becomes a list of
Edit: lines to find, lines to put there. Each SEARCH is matched against whole lines, exactly
first, then more and more loosely, stopping at the first level that finds anything:

1. exactly;
2. ignoring trailing whitespace;
3. ignoring a uniform indentation offset (tabs count as four spaces), the REPLACE lines then
   shifted by the same offset, so a dedented copy of a method body lands at its real depth;
4. as 3, with runs of spaces inside a line counted as one (`x = 1  # a` against `x = 1 # a`).

If that level finds more than one place, the edit is refused rather than guessed. An edit that
matches nowhere is retried once with the blank lines at its edges dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

TAB_WIDTH = 4


class CandidateError(ValueError):
    """The reply or the candidate it yields is unusable; `reason` says why in one sentence."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Edit:
    """Lines to find in train.py and the lines that replace them, without their newlines.

    `kind` names the edit in errors the model reads: "SEARCH block", "diff hunk", "JSON edit".
    """

    search: tuple[str, ...]
    replace: tuple[str, ...]
    kind: str = "SEARCH block"


# A line compared for matching: (indentation width or None for a blank line, content).
_Key = tuple[int | None, str]


def apply_edits(source: str, edits: Sequence[Edit]) -> str:
    """Apply the edits in order, each to the result of the ones before it."""
    lines = source.splitlines()
    file_uses_tabs = any(line.startswith("\t") for line in lines)
    for number, edit in enumerate(edits, start=1):
        label = f"{edit.kind} {number}"
        if not any(line.strip() for line in edit.search):
            raise CandidateError(
                f"{label} has an empty SEARCH section; copy the lines to replace from train.py"
            )
        start, length, replacement = _locate(lines, edit, label)
        if not file_uses_tabs:  # a tab-indented REPLACE would mix tabs into a spaces file
            replacement = [_expand_indent(line) for line in replacement]
        lines[start : start + length] = replacement
    return "\n".join(lines) + "\n" if lines else ""


def _locate(lines: list[str], edit: Edit, label: str) -> tuple[int, int, list[str]]:
    """Where the edit's SEARCH is (start, length) and its REPLACE re-indented to fit there."""
    trimmed = _trim_blank_edges(edit.search, edit.replace)
    for search, replace in dict.fromkeys([(edit.search, edit.replace), trimmed]):
        for level in _LEVELS:
            found = level(lines, search)
            if len(found) > 1:
                raise CandidateError(
                    f"{label} matches {len(found)} places in train.py "
                    f"(starts {_snippet(search)!r}); add surrounding lines to make it unique"
                )
            if found:
                start, shift = found[0]
                return start, len(search), [_shift(line, shift) for line in replace]
    raise CandidateError(
        f"{label} matches nothing in train.py (starts {_snippet(edit.search)!r}); "
        "copy the SEARCH lines exactly from the current train.py"
    )


def _trim_blank_edges(
    search: Sequence[str], replace: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Drop blank lines at SEARCH's edges, and as many blank ones at REPLACE's same edges."""
    search, replace = list(search), list(replace)
    while search and not search[0].strip():
        search.pop(0)
        if replace and not replace[0].strip():
            replace.pop(0)
    while search and not search[-1].strip():
        search.pop()
        if replace and not replace[-1].strip():
            replace.pop()
    return tuple(search), tuple(replace)


def _exact(lines: Sequence[str], search: Sequence[str]) -> list[tuple[int, int]]:
    return [(start, 0) for start in _windows(lines, search, lambda s: s)]


def _trailing(lines: Sequence[str], search: Sequence[str]) -> list[tuple[int, int]]:
    return [(start, 0) for start in _windows(lines, search, str.rstrip)]


def _windows(
    lines: Sequence[str], search: Sequence[str], normalize: Callable[[str], str]
) -> list[int]:
    wanted = [normalize(line) for line in search]
    have = [normalize(line) for line in lines]
    n = len(wanted)
    return [i for i in range(len(have) - n + 1) if have[i : i + n] == wanted]


def _reindented(
    content: Callable[[str], str],
) -> Callable[[Sequence[str], Sequence[str]], list[tuple[int, int]]]:
    """A level that matches `content` of each line, all indented by one common offset."""

    def find(lines: Sequence[str], search: Sequence[str]) -> list[tuple[int, int]]:
        wanted = [_key(line, content) for line in search]
        have = [_key(line, content) for line in lines]
        found = []
        for start in range(len(have) - len(wanted) + 1):
            shift = _common_shift(have[start : start + len(wanted)], wanted)
            if shift is not None:
                found.append((start, shift))
        return found

    return find


def _key(line: str, content: Callable[[str], str]) -> _Key:
    expanded = _expand_indent(line).rstrip()
    if not expanded:
        return None, ""
    return len(expanded) - len(expanded.lstrip(" ")), content(expanded.lstrip(" "))


def _common_shift(have: Sequence[_Key], wanted: Sequence[_Key]) -> int | None:
    """The one indentation offset that turns `wanted` into `have`, or None if there is none."""
    shift: int | None = None
    for (have_indent, have_text), (want_indent, want_text) in zip(have, wanted, strict=True):
        if have_text != want_text or (have_indent is None) != (want_indent is None):
            return None
        if have_indent is None or want_indent is None:
            continue  # blank lines carry no indentation
        if shift is None:
            shift = have_indent - want_indent
        elif have_indent - want_indent != shift:
            return None
    return shift


def _collapse_spaces(text: str) -> str:
    return " ".join(text.split())


_LEVELS = (_exact, _trailing, _reindented(lambda s: s), _reindented(_collapse_spaces))


def _expand_indent(line: str) -> str:
    """Leading tabs as spaces; the rest of the line as it is (tabs in strings stay)."""
    body = line.lstrip(" \t")
    return line[: len(line) - len(body)].expandtabs(TAB_WIDTH) + body


def _shift(line: str, shift: int) -> str:
    if shift == 0 or not line.strip():
        return line
    expanded = _expand_indent(line)
    if shift > 0:
        return " " * shift + expanded
    indent = len(expanded) - len(expanded.lstrip(" "))
    return expanded[min(indent, -shift) :]


def _snippet(search: Sequence[str], limit: int = 60) -> str:
    first = next((line.strip() for line in search if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 3] + "..."
