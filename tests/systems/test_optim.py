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


def test_param_groups_by_dotted_name():
    model = Model()
    opt = parse_optimizer(
        {
            "name": "Adam",
            "args": {"lr": 0.01, "betas": [0.9, 0.99]},
            "params": {"geometry.0": {"lr": 0.1}, "background": {"lr": 0.001}, "scale": {}},
        },
        model,
    )
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["geometry.0"] == 0.1 and lrs["background"] == 0.001 and lrs["scale"] == 0.01
    # geometry.1 was not listed: it still trains, with the default arguments
    assert lrs["__rest__"] == 0.01
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(model.parameters()))


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
