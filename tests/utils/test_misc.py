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


def test_published_stable_zero123_six_item_schedule():
    # threestudio's configs/stable-zero123.yaml: lambda_normal_smooth and lambda_3d_normal_smooth
    # read [start_step, start_value, value_1, step_1, value_2, step_2]
    value = [100, 7.0, 5.0, 150, 10.0, 200]
    expected = {
        0: 7.0,  # held before the start step
        100: 7.0,
        125: 6.0,  # 7 -> 5 over steps 100..150
        140: 5.4,
        150: 5.0,
        160: 6.0,  # 5 -> 10 over steps 150..200
        175: 7.5,
        199: 9.9,
        200: 10.0,
        5000: 10.0,  # held after the last step
    }
    for step, v in expected.items():
        assert C(value, 0, step) == pytest.approx(v), step


def test_published_four_item_schedules():
    # stable-zero123's min_step_percent and the DreamFusion recipes' lambda_orient
    min_step_percent = [50, 0.7, 0.3, 200]
    assert C(min_step_percent, 0, 0) == pytest.approx(0.7)
    assert C(min_step_percent, 0, 50) == pytest.approx(0.7)
    assert C(min_step_percent, 0, 125) == pytest.approx(0.5)
    assert C(min_step_percent, 0, 200) == pytest.approx(0.3)
    assert C(min_step_percent, 0, 600) == pytest.approx(0.3)
    lambda_orient = [0, 10.0, 1000.0, 5000]
    assert C(lambda_orient, 0, 2500) == pytest.approx(505.0)
    assert C(lambda_orient, 0, 10000) == pytest.approx(1000.0)


def test_longer_chain_and_jumps():
    # eight items: three segments; a repeated step is a jump to the next value
    value = [0, 0.0, 1.0, 10, 3.0, 20, 0.0, 40]
    assert C(value, 0, 5) == pytest.approx(0.5)
    assert C(value, 0, 15) == pytest.approx(2.0)
    assert C(value, 0, 30) == pytest.approx(1.5)
    assert C(value, 0, 99) == 0.0
    jump = [0, 1.0, 1.0, 10, 5.0, 10]
    assert C(jump, 0, 9) == 1.0 and C(jump, 0, 10) == 5.0
    # float steps count epochs
    assert C([0, 0.0, 1.0, 2.0, 3.0, 4.0], 3, 99999) == pytest.approx(2.0)


def test_bad_schedules_are_user_errors():
    for bad in ([1.0, 2.0], [0, 1.0, 2.0, 10, 3.0], [0, 1.0, 2.0, 10, 3.0, 20, 4.0], "fast"):
        with pytest.raises(ConfigError):
            C(bad, 0, 0)
    with pytest.raises(ConfigError, match="numbers"):
        C([0, "a", 1.0, 10], 0, 0)
    with pytest.raises(ConfigError, match="decrease"):
        C([0, 1.0, 2.0, 20, 3.0, 10], 0, 0)
    with pytest.raises(ConfigError) as info:
        C([0, 1.0, 2.0, 10, 3.0], 0, 0)
    assert "\n" not in str(info.value)


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
