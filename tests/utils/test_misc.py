import pytest
import torch

from threestudio.utils.errors import ConfigError
from threestudio.utils.misc import C, load_module_weights, split_weights_spec


def test_scalar_is_constant():
    assert C(0.5, 3, 1000) == 0.5


def test_three_item_form_interpolates_from_step_zero():
    value = [1.0, 0.0, 100]
    assert C(value, 0, 0) == 1.0
    assert C(value, 0, 25) == pytest.approx(0.75)
    assert C(value, 0, 100) == 0.0
    assert C(value, 0, 500) == 0.0  # held after the end step


def test_four_item_form_holds_until_start_step():
    value = [100, 10.0, 20.0, 200]
    assert C(value, 0, 0) == 10.0
    assert C(value, 0, 100) == 10.0
    assert C(value, 0, 150) == pytest.approx(15.0)
    assert C(value, 0, 250) == 20.0


def test_float_end_step_counts_epochs():
    value = [0, 0.0, 1.0, 4.0]
    assert C(value, 2, 99999) == pytest.approx(0.5)
    assert C(value, 0, 99999) == 0.0


def test_exp_interpolation():
    value = [0, 1.0, 100.0, 10]
    assert C(value, 0, 5, interpolation="exp") == pytest.approx(10.0)
    with pytest.raises(ConfigError):
        C([0, 0.0, 1.0, 10], 0, 5, interpolation="exp")


def test_piecewise_form():
    # odd length: v0, s1, v1, s2, v2 ... ; even: s0, v0, s1, v1, ...
    value = [1.0, 10, 2.0, 20, 4.0, 30, 8.0]
    assert C(value, 0, 0) == 1.0
    assert C(value, 0, 5) == pytest.approx(1.5)
    assert C(value, 0, 15) == pytest.approx(3.0)
    assert C(value, 0, 25) == pytest.approx(6.0)
    assert C(value, 0, 99) == 8.0
    assert C([0, 0.0, 10, 1.0, 20, 0.0], 0, 15) == pytest.approx(0.5)


def test_bad_schedules_are_user_errors():
    with pytest.raises(ConfigError):
        C([1.0, 2.0], 0, 0)
    with pytest.raises(ConfigError):
        C("fast", 0, 0)
    with pytest.raises(ConfigError, match="increase"):
        C([0, 1.0, 20, 2.0, 10, 3.0], 0, 0)


def test_split_weights_spec():
    assert split_weights_spec("a/b.ckpt:geometry") == ("a/b.ckpt", "geometry")
    assert split_weights_spec("a/b.ckpt") == ("a/b.ckpt", None)
    assert split_weights_spec("run:1/last.ckpt:system.geometry") == (
        "run:1/last.ckpt",
        "system.geometry",
    )


def test_load_module_weights_strips_prefix(tmp_path):
    sd = {"geometry.w": torch.ones(2), "material.w": torch.zeros(2)}
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": sd, "epoch": 1, "global_step": 42}, path)
    out, epoch, step = load_module_weights(str(path), module_name="geometry")
    assert list(out) == ["w"] and epoch == 1 and step == 42
    out, _, _ = load_module_weights(str(path), ignore_modules=["geometry"])
    assert list(out) == ["material.w"]
