"""Base classes every module derives from.

- ``Updateable``: receives ``update_step(epoch, global_step)`` before each training step and
  passes it on to every attribute that is ``Updateable`` too (recursively, each object once).
- ``BaseObject``: configured from a typed ``Config``; *not* an ``nn.Module``, so large frozen
  models (diffusion UNets, text encoders) it holds never enter the Lightning checkpoint.
- ``BaseModule``: an ``nn.Module`` configured the same way; ``Config.weights =
  "path/to.ckpt:module.prefix"`` loads that sub-state-dict after ``configure()``.
"""

from dataclasses import dataclass

import torch.nn as nn

from threestudio.utils.config import parse_structured
from threestudio.utils.misc import get_device, load_module_weights, split_weights_spec
from threestudio.utils.typing import Any, Optional, Union


class Updateable:
    def do_update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        self._walk_updateables("update_step", epoch, global_step, on_load_weights=on_load_weights)
        self.update_step(epoch, global_step, on_load_weights=on_load_weights)

    def do_update_step_end(self, epoch: int, global_step: int):
        self._walk_updateables("update_step_end", epoch, global_step)
        self.update_step_end(epoch, global_step)

    def _walk_updateables(self, method: str, *args, **kwargs):
        # Attributes are visited once each, children before parents, and each child is asked
        # to do its own recursion so nested modules are reached at any depth.
        for attr in self._updateable_children():
            if method == "update_step":
                attr.do_update_step(*args, **kwargs)
            else:
                attr.do_update_step_end(*args, **kwargs)

    def _updateable_children(self):
        seen = set()
        children = []
        candidates = list(vars(self).values())
        modules = vars(self).get("_modules")
        if isinstance(modules, dict):
            candidates.extend(modules.values())
        for value in candidates:
            if isinstance(value, Updateable) and value is not self and id(value) not in seen:
                seen.add(id(value))
                children.append(value)
        return children

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        # override to change state with the step; called after all children were updated
        pass

    def update_step_end(self, epoch: int, global_step: int):
        pass


def update_if_possible(module: Any, epoch: int, global_step: int) -> None:
    if isinstance(module, Updateable):
        module.do_update_step(epoch, global_step)


def update_end_if_possible(module: Any, epoch: int, global_step: int) -> None:
    if isinstance(module, Updateable):
        module.do_update_step_end(epoch, global_step)


class BaseObject(Updateable):
    @dataclass
    class Config:
        pass

    cfg: Config  # add this to every subclass of BaseObject to enable static type checking

    def __init__(self, cfg: Optional[Union[dict, Any]] = None, *args, **kwargs) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)
        self.device = get_device()
        self.configure(*args, **kwargs)

    def configure(self, *args, **kwargs) -> None:
        pass


class BaseModule(nn.Module, Updateable):
    @dataclass
    class Config:
        # "path/to.ckpt" or "path/to.ckpt:module.prefix": load that sub-state-dict after configure()
        weights: Optional[str] = None

    cfg: Config  # add this to every subclass of BaseModule to enable static type checking

    def __init__(self, cfg: Optional[Union[dict, Any]] = None, *args, **kwargs) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)
        self.device = get_device()
        self.configure(*args, **kwargs)
        if self.cfg.weights is not None:
            path, prefix = split_weights_spec(self.cfg.weights)
            state_dict, epoch, global_step = load_module_weights(
                path, module_name=prefix, map_location="cpu"
            )
            self.load_state_dict(state_dict)
            # restore step-dependent state (progressive encodings, annealing) of the source
            self.do_update_step(epoch, global_step, on_load_weights=True)

    def configure(self, *args, **kwargs) -> None:
        pass
