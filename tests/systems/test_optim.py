import logging

import pytest
import torch
import torch.nn as nn

from threestudio.systems.optimizers import Adan
from threestudio.systems.utils import parse_optimizer, parse_scheduler
from threestudio.utils.errors import ConfigError


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.geometry = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
        self.background = nn.Linear(2, 1)
        self.scale = nn.Parameter(torch.ones(1))


def test_param_groups_by_dotted_name(caplog):
    model = Model()
    with caplog.at_level(logging.WARNING, logger="threestudio"):
        opt = parse_optimizer(
            {
                "name": "Adam",
                "args": {"lr": 0.01, "betas": [0.9, 0.99]},
                "params": {"geometry.0": {"lr": 0.1}, "background": {"lr": 0.001}, "scale": {}},
            },
            model,
        )
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    # only the listed groups, as the established API does; geometry.1 is left out
    assert lrs == {"geometry.0": 0.1, "background": 0.001, "scale": 0.01}
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    assert grouped == {id(p) for n, p in model.named_parameters() if not n.startswith("geometry.1")}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "does not list geometry.1 (2 trainable parameter tensors)" in warning


def test_left_out_parameters_are_named_by_their_shortest_prefixes(caplog):
    model = Model()
    model.background.weight.requires_grad_(False)  # frozen: never reported
    with caplog.at_level(logging.WARNING, logger="threestudio"):
        parse_optimizer({"name": "Adam", "args": {"lr": 0.01}, "params": {"scale": {}}}, model)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "does not list geometry, background (5 trainable" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="threestudio"):
        parse_optimizer({"name": "Adam", "args": {"lr": 0.01}}, model)  # everything: no warning
        parse_optimizer(
            {
                "name": "Adam",
                "args": {"lr": 0.01},
                "params": {"geometry": {}, "background": {}, "scale": {}},
            },
            model,
        )
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


class Splats(nn.Module):
    """A Gaussian-splatting style geometry that adds its own parameters to the optimiser."""

    def __init__(self):
        super().__init__()
        self.xyz = nn.Parameter(torch.zeros(4, 3))
        self.opacity = nn.Parameter(torch.zeros(4, 1))

    def setup_optimizer(self, optimizer):
        optimizer.add_param_group({"params": [self.xyz], "name": "xyz", "lr": 0.001})
        optimizer.add_param_group({"params": [self.opacity], "name": "opacity", "lr": 0.05})


def test_extensions_add_param_groups_for_parameters_not_listed():
    model = nn.Module()
    model.geometry = Splats()
    model.background = nn.Linear(2, 3)
    opt = parse_optimizer(
        {"name": "Adam", "args": {"lr": 0.01}, "params": {"background": {"lr": 0.1}}}, model
    )
    model.geometry.setup_optimizer(opt)  # no "more than one parameter group" error
    assert [g["name"] for g in opt.param_groups] == ["background", "xyz", "opacity"]
    loss = model.geometry.xyz.sum() + model.geometry.opacity.sum() + model.background.bias.sum()
    loss.backward()
    opt.step()
    assert torch.all(model.geometry.xyz < 0) and torch.all(model.geometry.opacity < 0)


def test_without_params_every_trainable_parameter_is_optimised():
    model = Model()
    model.scale.requires_grad_(False)
    opt = parse_optimizer({"name": "SGD", "args": {"lr": 0.1}}, model)
    (group,) = opt.param_groups
    assert {id(p) for p in group["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }


def test_unknown_names_are_user_errors():
    with pytest.raises(ConfigError, match="did you mean .*'Adam'"):
        parse_optimizer({"name": "Adma", "args": {"lr": 0.1}}, Model())
    with pytest.raises(ConfigError, match="geometri"):
        parse_optimizer({"name": "Adam", "args": {"lr": 0.1}, "params": {"geometri": {}}}, Model())
    opt = parse_optimizer({"name": "SGD", "args": {"lr": 0.1}}, Model())
    with pytest.raises(ConfigError, match="ExponentialLR"):
        parse_scheduler({"name": "ExponentialLRR", "args": {"gamma": 0.9}}, opt)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "Adan"])
def test_optimizers_reduce_a_quadratic(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.3
    opt = parse_optimizer({"name": name, "args": {"lr": 0.05}}, model)
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_adan_weight_decay_shrinks_weights_without_gradient_signal():
    p = nn.Parameter(torch.ones(3))
    opt = Adan([p], lr=0.1, weight_decay=0.5)
    for _ in range(5):
        opt.zero_grad()
        p.grad = torch.zeros(3)
        opt.step()
    assert torch.all(p < 1.0) and torch.all(p > 0.0)


def test_sequential_and_chained_schedulers_step_interval():
    model = nn.Linear(1, 1)
    opt = parse_optimizer({"name": "SGD", "args": {"lr": 1.0}}, model)
    sched = parse_scheduler(
        {
            "name": "SequentialLR",
            "interval": "step",
            "milestones": [2],
            "schedulers": [
                {
                    "name": "LinearLR",
                    "args": {"start_factor": 0.5, "end_factor": 1.0, "total_iters": 2},
                },
                {"name": "ExponentialLR", "args": {"gamma": 0.5}},
            ],
        },
        opt,
    )
    assert sched["interval"] == "step"
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched["scheduler"].step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(0.75)
    assert lrs[2] == pytest.approx(1.0) and lrs[3] == pytest.approx(0.5)

    opt2 = parse_optimizer({"name": "SGD", "args": {"lr": 1.0}}, nn.Linear(1, 1))
    chained = parse_scheduler(
        {
            "name": "ChainedScheduler",
            "schedulers": [
                {"name": "ExponentialLR", "args": {"gamma": 0.5}},
                {"name": "ExponentialLR", "args": {"gamma": 0.5}},
            ],
        },
        opt2,
    )
    assert chained["interval"] == "epoch"
    opt2.step()
    chained["scheduler"].step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="interval"):
        parse_scheduler(
            {"name": "ExponentialLR", "interval": "batch", "args": {"gamma": 0.5}}, opt2
        )


def test_nested_params_name_sub_modules():
    """``{geometry: {1: {lr: ...}}}`` is the group ``geometry.1`` (nested YAML, or a dotted key
    split into levels); the parent's own arguments make a group after its sub-modules'."""
    model = Model()
    opt = parse_optimizer(
        {
            "name": "Adam",
            "args": {"lr": 0.01},
            "params": {"geometry": {"1": {"lr": 0.5}, "lr": 0.1}, "background": {"lr": 0.001}},
        },
        model,
    )
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["geometry.1", "geometry", "background"]
    assert groups["geometry.1"]["lr"] == 0.5 and groups["geometry"]["lr"] == 0.1
    assert [p.shape for p in groups["geometry.1"]["params"]] == [(2, 2), (2,)]
    assert len(groups["geometry"]["params"]) == 2  # geometry.0 only: geometry.1 is taken
    assert "1" not in groups["geometry"]
