"""Experiment configuration: YAML files + dotted CLI overrides, parsed into typed dataclasses.

Every user mistake in a config becomes one ``ConfigError`` line naming the full dotted key:
unknown keys (with the closest valid key), wrong types (key, value, expected type), missing
``???`` values, and YAML syntax errors (file and line).

A field declared ``float`` or ``int`` also takes a schedule, a list of numbers such as
``[0, 0.98, 0.02, 8000]`` that is read through ``misc.C`` later, as the established parsing does.
"""

import functools
import os
import re
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, make_dataclass
from datetime import datetime

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf import errors as oc_errors

from threestudio.utils.atomic import atomic_path
from threestudio.utils.errors import ConfigError, closest, did_you_mean
from threestudio.utils.typing import Any, Optional, Union

# ============ resolvers ============


def _c_max(value: Any) -> float:
    """The largest value a scheduled value (see ``misc.C``) takes."""
    if isinstance(value, (int, float)):
        return value
    value = config_to_primitive(value)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"scheduled value must be a number or a list, got {value!r}")
    if len(value) == 3:
        return max(value[0], value[1])
    if len(value) >= 4 and len(value) % 2 == 0:
        # [start_step, start_value, value_1, step_1, value_2, step_2, ...], as misc.C reads it
        return max([value[1]] + list(value[2::2]))
    raise ConfigError(f"cannot read scheduled value {value!r}")


def _rmspace(s: str, sub: str) -> str:
    # the result names a folder: spaces and path separators become `sub`
    return re.sub(r"[\s/\\]+", sub, str(s).strip())


_RESOLVERS = {
    "calc_exp_lr_decay_rate": lambda factor, n: factor ** (1.0 / n),
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "idiv": lambda a, b: a // b,
    "basename": lambda p: os.path.basename(p),
    "rmspace": _rmspace,
    "tuple2": lambda s: [float(s), float(s)],
    "gt0": lambda s: s > 0,
    "cmaxgt0": lambda s: _c_max(s) > 0,
    "not": lambda s: not s,
    "cmaxgt0orcmaxgt0": lambda a, b: _c_max(a) > 0 or _c_max(b) > 0,
}

for _name, _fn in _RESOLVERS.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_resolver(_name, _fn)

# ============ experiment config ============


@dataclass
class ExperimentConfig:
    name: str = "default"  # the experiment: trials go to exp_root_dir/name/
    description: str = ""  # free text, kept in parsed.yaml
    tag: str = ""  # the trial's name (before the timestamp)
    seed: int = 0  # the global seed (plus the rank)
    use_timestamp: bool = True  # append @YYYYmmdd-HHMMSS to the trial's name
    timestamp: Optional[str] = None  # null: now (with use_timestamp)
    exp_root_dir: str = "outputs"  # the root of every experiment folder

    # written by the launcher; kept for reference in parsed.yaml
    exp_dir: str = "outputs/default"
    trial_name: str = "exp"  # written by the launcher: tag + timestamp
    trial_dir: str = "outputs/default/exp"  # written by the launcher: exp_dir/trial_name
    n_gpus: int = 1  # written by the launcher

    # a checkpoint: --train continues it, --test/--export/--validate evaluate it
    resume: Optional[str] = None

    data_type: str = ""  # registered name of the datamodule; data is its config
    data: dict = field(default_factory=dict)  # see data_type

    system_type: str = ""  # registered name of the system; system is its config
    system: dict = field(default_factory=dict)  # see system_type

    # accept any Trainer arguments: lightning.pytorch.Trainer(**trainer)
    trainer: dict = field(default_factory=dict)

    # accept any ModelCheckpoint arguments (saved to TRIAL/ckpts/)
    checkpoint: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.tag and not self.use_timestamp:
            raise ConfigError("either 'tag' must be set or 'use_timestamp' must be true")
        if self.timestamp is None:
            self.timestamp = ""
            if self.use_timestamp:
                self.timestamp = os.environ.get("THREESTUDIO_TIMESTAMP") or datetime.now().strftime(
                    "@%Y%m%d-%H%M%S"
                )
        self.trial_name = self.tag + self.timestamp
        self.exp_dir = os.path.join(self.exp_root_dir, self.name)
        self.trial_dir = os.path.join(self.exp_dir, self.trial_name)


# ============ loading ============


def _load_yaml(path: str) -> DictConfig:
    if os.path.isdir(path):
        raise ConfigError(
            f"config file {path} is a folder: pass a YAML file (e.g. configs/dreamfusion-sd.yaml)"
        )
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        conf = OmegaConf.load(path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"YAML syntax error in {where}: {problem}") from e
    if not isinstance(conf, DictConfig):
        raise ConfigError(f"config file {path} must contain a mapping at top level")
    return conf


def _parse_cli_args(cli_args) -> DictConfig:
    conf = OmegaConf.create({})
    for arg in cli_args:
        if "=" not in arg or arg.startswith("="):
            raise ConfigError(
                f"cannot read override '{arg}': overrides are written key.subkey=value"
            )
        key, value = arg.split("=", 1)
        try:
            parsed = OmegaConf.from_dotlist([arg])
        except Exception as e:
            if value.lstrip().startswith(("[", "{")):
                raise ConfigError(f"cannot read override '{arg}': {_first_line(e)}") from e
            # not valid YAML (e.g. a value starting with '@'): take it as a plain string
            parsed = OmegaConf.create({})
            OmegaConf.update(parsed, key, value, force_add=True)
        conf = OmegaConf.merge(conf, parsed)
    return conf


def load_config(*yamls: str, cli_args: list = [], from_string: bool = False, **kwargs) -> Any:
    """Merge YAML files (or YAML strings with ``from_string``), dotted CLI overrides and keyword
    overrides, resolve interpolations and parse into an ``ExperimentConfig``."""
    if from_string:
        try:
            yaml_confs = [OmegaConf.create(s) for s in yamls]
        except yaml.YAMLError as e:
            raise ConfigError(f"YAML syntax error: {_first_line(e)}") from e
    else:
        yaml_confs = [_load_yaml(f) for f in yamls]
    cli_conf = _parse_cli_args(cli_args)
    cfg = OmegaConf.merge(*yaml_confs, cli_conf, kwargs)
    try:
        _check_missing(cfg)
        OmegaConf.resolve(cfg)
    except oc_errors.InterpolationKeyError as e:
        raise ConfigError(_interpolation_key_message(e, cfg)) from e
    except oc_errors.InterpolationResolutionError as e:
        raise ConfigError(f"{_full_key(e)}: cannot resolve interpolation: {_first_line(e)}") from e
    except oc_errors.OmegaConfBaseException as e:
        raise ConfigError(f"{_full_key(e)}: {_first_line(e)}") from e
    assert isinstance(cfg, DictConfig)
    return parse_structured(ExperimentConfig, cfg)


def config_to_primitive(config, resolve: bool = True) -> Any:
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=resolve)
    return config


def dump_config(path: str, config) -> None:
    """Written atomically: a killed run never leaves half a parsed.yaml."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as fp:
            OmegaConf.save(config=config, f=fp)


# ============ typed parsing with one-line errors ============


def _first_line(e: Exception) -> str:
    msg = getattr(e, "msg", None) or str(e)
    return str(msg).strip().splitlines()[0] if str(msg).strip() else type(e).__name__


def _full_key(e: Exception, prefix: str = "") -> str:
    key = getattr(e, "full_key", None) or getattr(e, "key", None) or ""
    key = str(key)
    if prefix and key:
        return f"{prefix}.{key}"
    return prefix or key or "<config>"


def _prefix_of(cfg: Any) -> str:
    if isinstance(cfg, DictConfig) and cfg._get_parent() is not None:
        try:
            return cfg._get_full_key(None) or ""
        except Exception:
            return ""
    return ""


def _flatten(value: Any, prefix: str = "") -> dict:
    """Every dotted key of a plain container (dicts and lists alike) -> its raw value."""
    items = {}
    if isinstance(value, dict):
        children = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        children = [(f"{prefix}[{i}]", v) for i, v in enumerate(value)]
    else:
        return items
    for key, child in children:
        items[key] = child
        items.update(_flatten(child, key))
    return items


def _interpolation_key_message(e: Exception, cfg: DictConfig, prefix: str = "") -> str:
    """One line naming the key being resolved and the key its ``${...}`` names but that does
    not exist (with the closest existing keys)."""
    key = _full_key(e, prefix)
    match = re.search(
        r"Interpolation key '([^']*)' not found(?: \(resolved to '([^']*)'\))?", str(e)
    )
    missing = (match.group(2) or match.group(1)) if match else _first_line(e)
    keys = _flatten(OmegaConf.to_container(cfg, resolve=False))
    raw = keys.get(_full_key(e))
    where = f" in '{raw}'" if isinstance(raw, str) and "${" in raw else ""
    close = closest(missing, [k for k in keys if "[" not in k], n=1, cutoff=0.8)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{key}: the interpolation{where} names '{missing}', which is not a config key{hint}"


def _check_missing(cfg: DictConfig, prefix: str = "") -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        keys = ", ".join((f"{prefix}.{k}" if prefix else k) for k in missing)
        raise ConfigError(
            f"missing value for {keys} (set it in the YAML file or as {missing[0]}=...)"
        )


_TYPE_NAMES = {"Integer": "int", "Float": "float", "Boolean": "bool", "String": "str"}


def _valid_keys(object_type: Any):
    if object_type is not None and is_dataclass(object_type):
        return [f.name for f in fields(object_type)]
    return []


def _is_number_type(annotation: Any) -> bool:
    """``float``/``int`` or an ``Optional`` of one (not ``bool``)."""
    if annotation in (float, int):
        return True
    if typing.get_origin(annotation) is Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(args) == 1 and args[0] in (float, int)
    return False


def _is_schedule(value: Any) -> bool:
    """A list of numbers, the form ``misc.C`` reads as a schedule."""
    if not isinstance(value, (list, tuple, ListConfig)):
        return False
    items = config_to_primitive(value)
    return len(items) > 0 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in items
    )


def _schedule_fields(fields_cls: Any, cfg: Any) -> tuple:
    """Names of ``fields_cls``'s number-typed fields that ``cfg`` gives a schedule list."""
    if not is_dataclass(fields_cls) or not isinstance(cfg, (dict, DictConfig)):
        return ()
    listed = []
    for f in fields(fields_cls):
        try:
            if f.name in cfg and _is_schedule(cfg[f.name]):
                listed.append(f)
        except oc_errors.OmegaConfBaseException:  # reported by the merge below
            continue
    if not listed:
        return ()
    try:
        hints = typing.get_type_hints(fields_cls)
    except Exception:  # unresolvable string annotations: use them as written
        hints = {}
    return tuple(f.name for f in listed if _is_number_type(hints.get(f.name, f.type)))


@functools.cache
def _with_schedule_fields(fields_cls: Any, names: tuple) -> Any:
    """``fields_cls`` with the fields ``names`` re-declared ``Any`` so they hold a schedule list
    (the fields keep their place, defaults and ``__post_init__``)."""
    redeclared = []
    for f in fields(fields_cls):
        if f.name in names:
            if f.default is not MISSING:
                spec = field(default=f.default)
            elif f.default_factory is not MISSING:
                spec = field(default_factory=f.default_factory)
            else:
                spec = field()
            redeclared.append((f.name, Any, spec))
    cls = make_dataclass(fields_cls.__name__, redeclared, bases=(fields_cls,))
    cls.__qualname__ = fields_cls.__qualname__
    cls.__module__ = fields_cls.__module__
    return cls


def parse_structured(fields_cls: Any, cfg: Optional[Union[dict, DictConfig]] = None) -> Any:
    """Parse ``cfg`` into an instance of the dataclass ``fields_cls``, strictly: unknown keys,
    wrong types and missing values raise ``ConfigError`` naming the full dotted key. A ``float``
    or ``int`` field may hold a schedule list (``[start_step, start, end, end_step]``)."""
    prefix = _prefix_of(cfg)
    if cfg is None:
        cfg = {}
    schema_cls = fields_cls
    schedules = _schedule_fields(fields_cls, cfg)
    if schedules:
        schema_cls = _with_schedule_fields(fields_cls, schedules)
    try:
        if schedules and isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is not dict:
            # a parsed ``fields_cls`` config does not merge into its re-declared copy
            cfg = OmegaConf.to_container(cfg, resolve=True)
        merged = OmegaConf.merge(OmegaConf.structured(schema_cls), cfg)
    except oc_errors.ConfigKeyError as e:
        key = _full_key(e, prefix)
        bad = str(getattr(e, "key", "") or key.split(".")[-1])
        hint = did_you_mean(bad, _valid_keys(getattr(e, "object_type", None)))
        raise ConfigError(f"unknown config key '{key}'{hint}") from e
    except oc_errors.ValidationError as e:
        key = _full_key(e, prefix)
        match = re.search(r"converted to (\w+)", _first_line(e))
        expected = _TYPE_NAMES.get(match.group(1), match.group(1)) if match else None
        value = getattr(e, "value", None)
        if expected:
            raise ConfigError(
                f"{key}: expected {expected}, got {value!r} ({type(value).__name__})"
            ) from e
        raise ConfigError(f"{key}: {_first_line(e)}") from e
    except oc_errors.OmegaConfBaseException as e:
        raise ConfigError(f"{_full_key(e, prefix)}: {_first_line(e)}") from e
    try:
        _check_missing(merged, prefix)
    except oc_errors.InterpolationKeyError as e:
        raise ConfigError(_interpolation_key_message(e, merged, prefix)) from e
    try:
        # instantiate once so the dataclass's __post_init__ sees the merged values
        parsed = OmegaConf.structured(OmegaConf.to_object(merged))
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # raised by a Config's __post_init__
        where = f"{prefix}: " if prefix else ""
        raise ConfigError(f"{where}{e}") from e
    if schema_cls is not fields_cls:
        # the config is still a ``fields_cls`` (get_type, to_object, pickling name it)
        parsed._metadata.object_type = fields_cls
    return _anchor(parsed, prefix)


def _anchor(node: DictConfig, prefix: str) -> DictConfig:
    """Hang ``node`` under its dotted ``prefix`` so nested errors name the full key
    (``system.geometry.radius``, not ``radius``)."""
    if not prefix:
        return node
    parts = prefix.split(".")
    root = OmegaConf.create({})
    parent = root
    for part in parts[:-1]:
        parent[part] = {}
        parent = parent[part]
    parent[parts[-1]] = node
    return parent[parts[-1]]
