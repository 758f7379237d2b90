"""Importing a script of the repository (a file outside the package) as a module, for tests."""

import importlib.util
from pathlib import Path
from types import ModuleType

from threestudio.utils.paths import REPO_ROOT


def load_script(relative_path: str) -> ModuleType:
    """The module of ``REPO_ROOT/relative_path``, executed afresh."""
    path = Path(REPO_ROOT) / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
