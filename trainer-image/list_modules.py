"""List the top-level modules train.py may import besides the standard library and prepare.

They are the import names of torch, of the packages in requirements.txt, and of everything
those depend on, as installed in the running Python. Standard library only, so the same script
runs on a developer's machine (to write the operator's copy) and in the image at build time:

    .venv/bin/python trainer-image/list_modules.py --requirements trainer-image/requirements.txt \
        > operator/autoresearch_operator/trainer_modules.txt
    python /app/list_modules.py --requirements /app/requirements.txt --check /app/trainer_modules.txt

`--check FILE` fails when FILE names a module this Python cannot import, so an image that lacks
what the operator lets candidates import does not build.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOTS = ("torch",)  # the base image's own; requirements.txt adds the rest


def requirement_names(lines: Iterable[str]) -> list[str]:
    """Distribution names of a requirements file's lines (comments, blanks and options skipped)."""
    names = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            names.append(re.split(r"[\s\[<>=!~;@]", text, maxsplit=1)[0])
    return names


def dependency_closure(roots: Iterable[str]) -> set[str]:
    """The installed distributions `roots` need, themselves included (normalized names)."""
    seen: set[str] = set()
    pending = [normalize_name(name) for name in roots]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency whose marker excludes this platform is not installed
        seen.add(name)
        for requirement in requires:
            # Extras are optional: nothing in the image asks for them.
            if not re.search(r"\bextra\s*==", requirement):
                pending.append(normalize_name(requirement_names([requirement])[0]))
    return seen


def import_names(distributions: set[str]) -> list[str]:
    """The public top-level modules those distributions provide, sorted."""
    names = {
        module
        for module, owners in importlib.metadata.packages_distributions().items()
        if module.isidentifier()
        and not module.startswith("_")
        and module not in sys.stdlib_module_names
        and any(normalize_name(owner) in distributions for owner in owners)
    }
    return sorted(names)


def normalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, help="requirements.txt of the image")
    parser.add_argument("--check", type=Path, help="a module list that must be importable here")
    args = parser.parse_args(argv)
    roots = list(ROOTS)
    if args.requirements:
        roots += requirement_names(args.requirements.read_text().splitlines())
    listed = import_names(dependency_closure(roots))
    wanted = args.check.read_text().split() if args.check else listed
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        print(f"not importable here: {', '.join(missing)}", file=sys.stderr)
        return 1
    if not args.check:
        print("\n".join(listed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
