"""docs/: the configuration tables are generated from the Config dataclasses and current, and
every registered module has one."""

import importlib.util
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import threestudio
from threestudio.models.geometry.base import BaseImplicitGeometry
from threestudio.utils.typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def load_gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = load_gen_docs()


def test_config_tables_are_current(capsys):
    code = gen_docs.main(["--check"])
    assert code == 0, capsys.readouterr().out + "run: python scripts/gen_docs.py"


@dataclass
class Example:
    # a comment above,
    # on two lines
    above: int = 1
    trailing: str = "x"  # a trailing comment
    below: list = field(default_factory=lambda: [1, "a"])
    """a string below
    the field (nerfstudio style)"""
    # a comment that ends in a blank line belongs to nothing

    none: Optional[int] = None
    required: float = "???"


def test_help_comes_from_comments_and_strings_beside_the_field():
    assert gen_docs.field_source(Example) == {
        "above": ("int", "a comment above, on two lines"),
        "trailing": ("str", "a trailing comment"),
        "below": ("list", "a string below the field (nerfstudio style)"),
        "none": ("Optional[int]", ""),
        "required": ("float", ""),
    }
    rows = gen_docs.table(Example, {}, {}, "x.md").splitlines()
    assert "| `below` | `list` | `[1, a]` | a string below the field (nerfstudio style) |" in rows
    assert "| `none` | `Optional[int]` | `null` |  |" in rows
    assert "| `required` | `float` | required |  |" in rows


class UndocumentedGeometry(BaseImplicitGeometry):
    @dataclass
    class Config(BaseImplicitGeometry.Config):
        radius: float = 2.0
        thickness: float = 0.1  # how thick

    cfg: Config


def test_a_new_module_gets_a_table_in_the_page_of_its_package(tmp_path, monkeypatch):
    # registered as if it were a built-in module of the geometry package
    fake_module = "threestudio.models.geometry.docs_test"
    monkeypatch.setitem(sys.modules, fake_module, sys.modules[__name__])
    for cls in (UndocumentedGeometry, UndocumentedGeometry.Config):
        monkeypatch.setattr(cls, "__module__", fake_module)
    monkeypatch.setitem(threestudio.__modules__, "docs-test-geometry", UndocumentedGeometry)
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    monkeypatch.setattr(gen_docs, "DOCS", docs)
    new, missing = gen_docs.generate()
    assert missing == ["docs-test-geometry"]
    page = new[docs / "fields.md"]
    table = page[page.index("<!-- config:docs-test-geometry -->") :]
    assert "| `radius` | `float` | `2.0` | the scene box is [-radius, radius]^3 |" in table
    assert "| `thickness` | `float` | `0.1` | how thick |" in table
    assert "(except `radius`, above)" in table
