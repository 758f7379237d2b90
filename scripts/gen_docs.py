"""Regenerate the configuration tables in docs/ from the ``Config`` dataclasses.

    python scripts/gen_docs.py          # rewrite the tables (and add missing ones)
    python scripts/gen_docs.py --check  # exit 1 listing stale files and undocumented configs

A table lives between ``<!-- config:KEY -->`` and ``<!-- /config -->`` in a docs/*.md file; the
prose around the markers is hand-written and kept. KEY is a registered name (``implicit-volume``)
or the dotted path of a class whose ``Config`` it documents
(``threestudio.models.geometry.base.BaseImplicitGeometry``). Every built-in registered module
needs a table, and so does every base ``Config`` whose fields they inherit; a missing one is
added at the end of the page for its package.

A field's help is the ``# comment`` on the lines directly above it, a comment on its own line(s)
and a string literal directly below it (nerfstudio style), joined in that order.
"""

import argparse
import ast
import dataclasses
import importlib
import inspect
import io
import re
import sys
import textwrap
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKER = re.compile(r"<!-- config:(\S+) -->\n(.*?)<!-- /config -->", re.S)

# where the table of a config that has none yet is added, by the package its class is in
PAGE_FOR_PACKAGE = {
    "threestudio.models.geometry": "fields.md",
    "threestudio.models.materials": "fields.md",
    "threestudio.models.background": "fields.md",
    "threestudio.models.renderers": "renderers.md",
    "threestudio.models.guidance": "guidance.md",
    "threestudio.models.prompt_processors": "prompt_processors.md",
    "threestudio.data": "data.md",
}
DEFAULT_PAGE = "systems.md"


def config_of(obj):
    """The config dataclass of a registered class (``config_class`` or ``Config``)."""
    if dataclasses.is_dataclass(obj):
        return obj
    return getattr(obj, "config_class", None) or obj.Config


def resolve(key: str):
    import threestudio

    if key in threestudio.__modules__:
        return config_of(threestudio.__modules__[key])
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return config_of(obj)
    raise KeyError(f"unknown config key '{key}' (a registered name or a dotted class path)")


def short_name(cfg_cls) -> str:
    return cfg_cls.__qualname__.removesuffix(".Config")


def anchor(key: str) -> str:
    return "config-" + key.rsplit(".", 1)[-1]


def own_fields(cfg_cls) -> list:
    declared = vars(cfg_cls).get("__annotations__", {})
    return [f for f in dataclasses.fields(cfg_cls) if f.name in declared]


def bases_with_fields(cfg_cls) -> list:
    return [b for b in cfg_cls.__mro__[1:] if dataclasses.is_dataclass(b) and own_fields(b)]


def field_source(cfg_cls) -> dict:
    """name -> (annotation as written, help text) for the fields the class itself declares."""
    source = textwrap.dedent(inspect.getsource(cfg_cls))
    lines = source.splitlines()
    comments = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = ast.parse(source).body[0].body
    out = {}
    for i, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        inline = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        below = []
        nxt = body[i + 1] if i + 1 < len(body) else None
        if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            if isinstance(nxt.value.value, str):
                below = [" ".join(inspect.cleandoc(nxt.value.value).split())]
        out[node.target.id] = (ast.unparse(node.annotation), " ".join(above + inline + below))
    return out


def fmt(value) -> str:
    """A default as it would be written in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.strip() and value == value.strip() else f'"{value}"'
    if isinstance(value, float) and value != 0 and not 1e-4 <= abs(value) < 1e6:
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    return repr(value)


def default_of(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return "required" if value == "???" else fmt(value)


def inherited_help(cfg_cls, name: str) -> str:
    """The help of a field a class redeclares (to change its default) without a comment."""
    for base in bases_with_fields(cfg_cls):
        help_text = field_source(base).get(name, ("", ""))[1]
        if help_text:
            return help_text
    return ""


def cell(text: str, code: bool = False) -> str:
    text = text.replace("|", "\\|")
    return f"`{text}`" if code else text.replace("<", "&lt;")


def table(cfg_cls, keys: dict, pages: dict, page: str) -> str:
    """The generated table of ``cfg_cls``; ``keys`` maps config classes to their keys and
    ``pages`` keys to the page holding their table (for the links to inherited fields)."""
    path = Path(inspect.getsourcefile(cfg_cls)).resolve().relative_to(ROOT)
    rows = [f"Source: `{path}`, `{cfg_cls.__qualname__}`."]
    fields = {f.name: f for f in own_fields(cfg_cls)}
    if fields:
        rows += ["", "| field | type | default | help |", "|---|---|---|---|"]
    else:
        rows += ["", "No fields of its own."]
    for name, (type_text, help_text) in field_source(cfg_cls).items():  # in source order
        if name in fields:
            help_text = help_text or inherited_help(cfg_cls, name)
            default = default_of(fields[name])
            default = default if default == "required" else cell(default, code=True)
            rows.append(f"| `{name}` | {cell(type_text, True)} | {default} | {cell(help_text)} |")
    shown = set(fields)
    inherited = []
    for base in bases_with_fields(cfg_cls):
        names = [f.name for f in own_fields(base)]
        overridden = [f"`{name}`" for name in names if name in shown]
        shown.update(names)
        where = pages[keys[base]]
        link = ("" if where == page else where) + "#" + anchor(keys[base])
        text = f"[`{short_name(base)}`]({link})"
        if overridden:
            text += f" (except {', '.join(overridden)}, above)"
        inherited.append(text)
    if inherited:
        rows += ["", "Also the fields of " + " and ".join(inherited) + "."]
    return "\n".join(rows) + "\n"


def required_keys() -> dict:
    """config class -> key for every built-in registered module (its registered name) and every
    base config they inherit fields from (its dotted path, unless it is registered itself)."""
    import threestudio

    keys = {}
    for name, cls in sorted(threestudio.__modules__.items()):
        if cls.__module__.startswith("threestudio."):
            keys.setdefault(config_of(cls), name)
    for cfg_cls in list(keys):
        for base in bases_with_fields(cfg_cls):
            keys.setdefault(base, f"{base.__module__}.{short_name(base)}")
    return keys


def page_for(cfg_cls) -> str:
    for package, page in PAGE_FOR_PACKAGE.items():
        if cfg_cls.__module__.startswith(package + "."):
            return page
    return DEFAULT_PAGE


def generate() -> tuple:
    """({page path: new text}, [keys that had no table]) without writing anything."""
    texts = {p: p.read_text() for p in sorted(DOCS.glob("*.md"))}
    pages = {}
    for path, text in texts.items():
        for key, _ in MARKER.findall(text):
            if key in pages:
                raise ValueError(f"config:{key} has two tables ({pages[key]}, {path.name})")
            pages[key] = path.name
    keys = required_keys()
    for key in pages:  # a marker for a class not reached from the registry, e.g. ExperimentConfig
        keys.setdefault(resolve(key), key)
    missing = [key for key in keys.values() if key not in pages]
    for key in missing:
        cfg_cls = resolve(key)
        path = DOCS / page_for(cfg_cls)
        title = key if "." not in key else short_name(cfg_cls)
        texts[path] = texts.get(path, "").rstrip("\n") + (
            f"\n\n## `{title}`\n\n<!-- config:{key} -->\n<!-- /config -->\n"
        )
        pages[key] = path.name

    def fill(match, page):
        key = match.group(1)
        body = table(resolve(key), keys, pages, page)
        return f'<!-- config:{key} -->\n<a id="{anchor(key)}"></a>\n\n{body}\n<!-- /config -->'

    new = {p: MARKER.sub(lambda m, p=p: fill(m, p.name), t) for p, t in texts.items()}
    return new, missing


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale pages, write nothing")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    new, missing = generate()
    stale = [p for p, text in new.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for key in missing:
            print(f"no table for config:{key}")
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python scripts/gen_docs.py)")
        return 1 if stale or missing else 0
    for path in stale:
        path.write_text(new[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
