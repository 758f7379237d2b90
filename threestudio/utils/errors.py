"""Errors meant for the person running threestudio.

A ``UserError`` is printed by ``launch.py`` as one line (the full traceback only with ``--verbose``)
and ends the run with a non-zero exit code. Programming mistakes stay ordinary exceptions/assertions.
"""

import difflib
from typing import Iterable, List


class UserError(Exception):
    """Bad input from the user: a config key, a file, a name or a value."""


class ConfigError(UserError, ValueError):
    """A configuration value or key is wrong."""


class MissingModelError(UserError):
    """Pretrained weights are not available locally and cannot be downloaded."""


def closest(name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.5) -> List[str]:
    return difflib.get_close_matches(name, sorted(set(candidates)), n=n, cutoff=cutoff)


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """``"; did you mean 'x'?"`` or an empty string when nothing is close."""
    matches = closest(name, candidates, n=n)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"
