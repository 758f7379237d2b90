"""Optimiser and scheduler construction from config.

optimizer:
  name: Adam            # any torch.optim name, or Adan
  args: {lr: 0.01, betas: [0.9, 0.99], eps: 1.e-15}
  params:               # optional param groups by dotted module name; with it, only the
    geometry.encoding: {lr: 0.01}           # listed modules are optimised
    geometry.density_network: {lr: 0.001}
scheduler:
  name: SequentialLR    # any torch.optim.lr_scheduler name; SequentialLR/ChainedScheduler nest
  interval: step        # or epoch
  milestones: [100]
  schedulers: [{name: LinearLR, args: {...}}, {name: ExponentialLR, args: {...}}]
"""

import torch
import torch.nn as nn
from torch.optim import lr_scheduler

import threestudio
from threestudio.systems.optimizers import Adan
from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError, did_you_mean
from threestudio.utils.typing import Any, Dict


def get_parameters(model: nn.Module, name: str):
    """Parameters of the sub-module (or the single parameter) at dotted ``name``."""
    module = model
    for part in name.split("."):
        if not part:
            continue
        if not hasattr(module, part):
            children = [n for n, _ in model.named_modules() if n] + [
                n for n, _ in model.named_parameters()
            ]
            raise ConfigError(
                f"system.optimizer.params: no module or parameter '{name}'{did_you_mean(name, children)}"
            )
        module = getattr(module, part)
    if module is None:
        # a member built when training starts (a frozen guidance, as the unified guidance is
        # with SDS while configs list it for VSD): nothing of it to optimise
        return []
    if isinstance(module, nn.Parameter):
        return [module]
    if isinstance(module, nn.Module):
        return list(module.parameters())
    raise ConfigError(f"system.optimizer.params: '{name}' is neither a module nor a parameter")


def _optimizer_class(name: str):
    if name in ("Adan", "adan"):
        return Adan
    if hasattr(torch.optim, name) and isinstance(getattr(torch.optim, name), type):
        return getattr(torch.optim, name)
    names = [n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)] + ["Adan"]
    raise ConfigError(
        f"system.optimizer.name: unknown optimizer '{name}'{did_you_mean(name, names)}"
    )


def _left_out_prefixes(model: nn.Module, left_out: set) -> list:
    """The shortest dotted prefixes that cover exactly the parameter names in ``left_out``."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    prefixes = []
    for name in trainable:
        if name not in left_out or any(name.startswith(p + ".") for p in prefixes):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            under = [n for n in trainable if n == prefix or n.startswith(prefix + ".")]
            if all(n in left_out for n in under):
                prefixes.append(prefix)
                break
    return prefixes


def _dotted_groups(params: dict, prefix: str = ""):
    """``(dotted module name, group args)`` of ``params``. A dict inside a group's args (never an
    optimiser argument) names a sub-module: ``{renderer: {generator: {lr: 1e-4}}}`` is the group
    ``renderer.generator``, as nested YAML or a dotted key that a tool split into levels mean.
    Sub-module groups come before their parent's own, so that they keep their parameters."""
    for name, group_args in params.items():
        group_args = dict(group_args or {})
        nested = {k: v for k, v in group_args.items() if isinstance(v, dict)}
        own = {k: v for k, v in group_args.items() if not isinstance(v, dict)}
        yield from _dotted_groups(nested, f"{prefix}{name}.")
        if own or not nested:
            yield f"{prefix}{name}", own


def parse_optimizer(config, model: nn.Module, optimised_elsewhere=()):
    """The optimiser for ``model``. With ``params:``, one group per listed dotted module (each
    group carries ``name``) and nothing else, as the established API does; systems may
    ``add_param_group`` the rest. Without it, every trainable parameter. Parameters under the
    dotted prefixes ``optimised_elsewhere`` (another optimiser's) are not warned about."""
    config = config_to_primitive(config)
    args = dict(config.get("args") or {})
    if config.get("params") is not None:
        params = []
        assigned = set()
        for name, group_args in _dotted_groups(config["params"]):
            group_params = [p for p in get_parameters(model, name) if id(p) not in assigned]
            assigned.update(id(p) for p in group_params)
            params.append({"params": group_params, "name": name, **(group_args or {})})
        left_out = {
            n
            for n, p in model.named_parameters()
            if p.requires_grad
            and id(p) not in assigned
            and not any(n == e or n.startswith(e + ".") for e in optimised_elsewhere)
        }
        if left_out:
            prefixes = _left_out_prefixes(model, left_out)
            shown = ", ".join(prefixes[:8]) + (
                f" and {len(prefixes) - 8} more" if len(prefixes) > 8 else ""
            )
            threestudio.warn(
                f"system.optimizer.params does not list {shown} ({len(left_out)} trainable "
                f"parameter tensor{'s' if len(left_out) > 1 else ''}): they are not optimised "
                "unless the system adds them"
            )
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    _check_numbers("system.optimizer.args", args)
    for group in params:
        if isinstance(group, dict):
            settings = {k: v for k, v in group.items() if k not in ("params", "name")}
            _check_numbers(f"system.optimizer.params.{group['name']}", settings)
    optimizer_class = _optimizer_class(config["name"])
    try:
        return optimizer_class(params, **args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"system.optimizer ({config['name']}): {e}") from e


# optimiser settings that are numbers (or tuples of numbers) in every torch optimiser
_NUMERIC_SETTINGS = ("lr", "eps", "weight_decay", "momentum", "betas", "alpha", "lr_decay")


def _check_numbers(prefix: str, settings: Dict[str, Any]) -> None:
    for key in _NUMERIC_SETTINGS:
        if key not in settings:
            continue
        value = settings[key]
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in values
        ):
            raise ConfigError(f"{prefix}.{key}: {value!r} is not a number")


def _scheduler_class(name: str):
    if hasattr(lr_scheduler, name) and isinstance(getattr(lr_scheduler, name), type):
        return getattr(lr_scheduler, name)
    names = [n for n in dir(lr_scheduler) if isinstance(getattr(lr_scheduler, n), type)]
    raise ConfigError(
        f"system.scheduler.name: unknown scheduler '{name}'{did_you_mean(name, names)}"
    )


def get_scheduler(config, optimizer):
    name = config["name"]
    if name == "SequentialLR":
        return lr_scheduler.SequentialLR(
            optimizer,
            schedulers=[get_scheduler(c, optimizer) for c in config["schedulers"]],
            milestones=config["milestones"],
        )
    if name == "ChainedScheduler":
        return lr_scheduler.ChainedScheduler(
            [get_scheduler(c, optimizer) for c in config["schedulers"]]
        )
    args = dict(config.get("args") or {})
    if name == "LambdaLR" and isinstance(args.get("lr_lambda"), str):
        # a Python expression of `step`, e.g. "lambda step: 0.5 ** (step / 1000)"
        args["lr_lambda"] = eval(args["lr_lambda"])  # noqa: S307 - config author's own code
    return _scheduler_class(name)(optimizer, **args)


def parse_scheduler(config, optimizer):
    """A Lightning ``lr_scheduler`` dict: ``{"scheduler": ..., "interval": "step"|"epoch"}``."""
    config = config_to_primitive(config)
    interval = config.get("interval", "epoch")
    if interval not in ("step", "epoch"):
        raise ConfigError(
            f"system.scheduler.interval: expected 'step' or 'epoch', got '{interval}'"
        )
    return {"scheduler": get_scheduler(config, optimizer), "interval": interval}
