"""Rows of the every-config test (tests/test_every_config.py), one module per method family.

Each module defines ``ROWS: Dict[str, Row]`` keyed by the config's path under ``configs/``
without ``.yaml`` (``"magic3d-coarse-sd"``, ``"gradio/sjc"``) and may define
``PUBLISHED_COPIES: Dict[str, Row]`` keyed by a published file name of
``tests/test_published_configs.PUBLISHED`` (``"magic3d-coarse-sd.yaml"``): that table is written
out as a YAML file and run unmodified, with only the keys ``PUBLISHED_COPY_KEYS`` allows
overridden."""

import importlib
import pkgutil
from dataclasses import dataclass, field

from threestudio.utils.typing import Dict, List, Optional


@dataclass(frozen=True)
class Row:
    # dotted key -> tiny model kind ("sd", "if", ...; see tests/test_every_config.tiny_models):
    # each key is overridden with that tiny model's folder
    models: Dict[str, str] = field(default_factory=dict)
    # dotted overrides that make the run tiny (resolution, samples, grid sizes) or supply inputs
    overrides: List[str] = field(default_factory=list)
    # the stage this config continues: the config path (as a ROWS key) whose last checkpoint is
    # handed over through ``handover`` (stage 1 is run first, with its own row)
    after: Optional[str] = None
    handover: str = "system.geometry_convert_from"
    steps: int = 2  # trainer.max_steps
    export: bool = True  # also --export from the checkpoint (False: the config exports nothing)
    flags: List[str] = field(
        default_factory=list
    )  # launch.py flags for every run, e.g. --typecheck


def collect(attr: str) -> Dict[str, Row]:
    rows: Dict[str, Row] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for key, row in getattr(module, attr, {}).items():
            if key in rows:
                raise ValueError(f"{key} has rows in two modules of tests/config_runs")
            rows[key] = row
    return rows
