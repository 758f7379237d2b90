from dataclasses import dataclass

import torch
import torch.nn as nn

from threestudio.utils.base import BaseModule, BaseObject, Updateable, update_if_possible


class Leaf(nn.Module, Updateable):
    def __init__(self):
        super().__init__()
        self.calls = []
        self.end_calls = []

    def update_step(self, epoch, global_step, on_load_weights=False):
        self.calls.append((epoch, global_step, on_load_weights))

    def update_step_end(self, epoch, global_step):
        self.end_calls.append(global_step)


class Middle(nn.Module, Updateable):
    def __init__(self, leaf):
        super().__init__()
        self.leaf = leaf  # registered nn child
        self.same_leaf_again = leaf  # the same object twice must be updated once


class Plain(Updateable):
    def __init__(self, leaf):
        self.inner = leaf


def test_updateable_recurses_into_modules_and_plain_attributes():
    leaf_a, leaf_b = Leaf(), Leaf()
    top = Plain(Middle(leaf_a))
    top.other = Plain(leaf_b)
    top.do_update_step(1, 7)
    assert leaf_a.calls == [(1, 7, False)]
    assert leaf_b.calls == [(1, 7, False)]
    top.do_update_step_end(1, 7)
    assert leaf_a.end_calls == [7] and leaf_b.end_calls == [7]
    update_if_possible(leaf_a, 2, 9)
    assert leaf_a.calls[-1] == (2, 9, False)


class Obj(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        scale: float = 2.0

    cfg: Config

    def configure(self):
        self.big = nn.Linear(4, 4)


def test_base_object_is_not_a_module():
    obj = Obj({"scale": 3})
    assert not isinstance(obj, nn.Module)
    assert obj.cfg.scale == 3.0

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.obj = obj
            self.lin = nn.Linear(2, 2)

    keys = set(Holder().state_dict())
    assert keys == {"lin.weight", "lin.bias"}  # the frozen model stays out of checkpoints


class Mod(BaseModule):
    @dataclass
    class Config(BaseModule.Config):
        width: int = 3

    cfg: Config

    def configure(self):
        self.lin = nn.Linear(self.cfg.width, 1)
        self.loaded_at = None

    def update_step(self, epoch, global_step, on_load_weights=False):
        if on_load_weights:
            self.loaded_at = global_step


def test_base_module_weights_loads_sub_state_dict(tmp_path):
    src = Mod({"width": 3})
    with torch.no_grad():
        src.lin.weight.fill_(0.25)
    ckpt = {
        "state_dict": {f"system.geometry.{k}": v for k, v in src.state_dict().items()},
        "global_step": 123,
        "epoch": 0,
    }
    path = tmp_path / "stage1.ckpt"
    torch.save(ckpt, path)
    dst = Mod({"width": 3, "weights": f"{path}:system.geometry"})
    assert torch.equal(dst.lin.weight, src.lin.weight)
    assert dst.loaded_at == 123
