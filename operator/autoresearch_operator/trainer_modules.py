"""What train.py may import in the trainer image: the standard library, prepare, and the image's
packages (torch, requirements.txt and their dependencies).

The package list is trainer_modules.txt beside this file, written by trainer-image/list_modules.py
from the pinned torch and requirements.txt; the image build checks it against what it installed.
"""

from __future__ import annotations

import sys
from functools import cache
from importlib.resources import files

LOCAL_MODULES = frozenset({"prepare", "__future__"})  # the fixed trainer-image/prepare.py


@cache
def trainer_packages() -> tuple[str, ...]:
    """The image's third-party top-level modules, sorted."""
    text = files("autoresearch_operator").joinpath("trainer_modules.txt").read_text()
    return tuple(sorted(text.split()))


def importable_in_trainer(module: str) -> bool:
    """Whether `import module` (a dotted name is judged by its top level) works in the image."""
    top = module.split(".", 1)[0]
    return top in sys.stdlib_module_names or top in LOCAL_MODULES or top in trainer_packages()
