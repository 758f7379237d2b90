"""The package's layers: ``threestudio/utils`` sits at the bottom and ``threestudio/kernels``
just above it, so neither imports the packages built on them (at module level or inside a
function). Read from the source with ``ast``, so an import inside a function body counts too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "threestudio"
ABOVE = ("threestudio.data", "threestudio.models", "threestudio.systems", "threestudio.bundled")


def imported_modules(path: Path, package_root: Path):
    """(line, dotted names) of each import statement in ``path``; ``from a import b`` names
    ``a`` and ``a.b``, since ``b`` may be a submodule (``from threestudio import models``)."""
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    package = parts[:-1]  # the package a relative import starts from
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield node.lineno, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield node.lineno, [module] + [f"{module}.{alias.name}" for alias in node.names]


def upward_imports(folder: str, package_root: Path = PACKAGE):
    """``file:line imports name`` for every import statement in ``package_root/folder`` that
    reaches a package of ``ABOVE``."""
    found = []
    for path in sorted((package_root / folder).rglob("*.py")):
        for line, names in sorted(imported_modules(path, package_root)):
            above = [n for n in names if any(n == a or n.startswith(a + ".") for a in ABOVE)]
            if above:
                found.append(f"{path.relative_to(package_root.parent)}:{line} imports {above[0]}")
    return found


@pytest.mark.parametrize("folder", ["utils", "kernels"])
def test_bottom_layers_import_nothing_above_them(folder):
    if not (PACKAGE / folder).is_dir():
        pytest.skip(f"no threestudio/{folder}")
    found = upward_imports(folder)
    assert not found, f"threestudio/{folder} must not import {', '.join(ABOVE)}:\n" + "\n".join(
        found
    )


def test_the_check_sees_every_kind_of_import(tmp_path):
    package = tmp_path / "threestudio"
    (package / "utils").mkdir(parents=True)
    (package / "utils" / "a.py").write_text(
        "import threestudio.models.mesh\n"
        "def f():\n"
        "    from threestudio.data import uncond\n"
        "    from threestudio import systems\n"
        "    from ..bundled.shapes import SHAPES\n"
        "from . import ops\n"
        "from threestudio.utils.typing import Tensor\n"
        "import threestudio\n"
    )
    found = upward_imports("utils", package)
    assert found == [
        "threestudio/utils/a.py:1 imports threestudio.models.mesh",
        "threestudio/utils/a.py:3 imports threestudio.data",
        "threestudio/utils/a.py:4 imports threestudio.systems",
        "threestudio/utils/a.py:5 imports threestudio.bundled.shapes",
    ]
