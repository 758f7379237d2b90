"""docs/: the configuration tables are generated from the Config dataclasses and current, every
registered module has one, and every name docs/api.md lists as present imports."""

import importlib
import importlib.util
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

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


# ---------- docs/api.md ----------


def api_rows(heading: str):
    """(module, [names]) of the table under ``## heading`` in docs/api.md."""
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = line.split(" | ")
        if line.startswith("| `") and len(cells) >= 2:
            rows.append((cells[0].strip("| `"), re.findall(r"`([\w.]+)`", cells[1])))
    return rows


def test_every_name_api_md_lists_imports():
    rows = api_rows("Modules and names")
    assert len(rows) > 20
    missing = []
    for module_name, names in rows:
        module = importlib.import_module(module_name)
        for name in names:
            obj = module
            for part in name.split("."):
                obj = getattr(obj, part, None)
            if obj is None:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"docs/api.md lists names that do not exist: {missing}"


def test_api_md_resolvers_are_registered():
    text = (ROOT / "docs" / "api.md").read_text()
    line = text.split("OmegaConf resolvers registered by", 1)[1].split("\n\n", 1)[0]
    names = re.findall(r"`(\w+)`", line.split(":", 1)[1])
    assert len(names) == 13
    assert [n for n in names if not OmegaConf.has_resolver(n)] == []


def test_planned_api_names_are_marked_apart():
    planned = dict(api_rows("Planned (not built yet)"))
    present = dict(api_rows("Modules and names"))
    assert "threestudio.data.image" in present  # built: moved from the planned table
    assert not set(planned) & set(present)
