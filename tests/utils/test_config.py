import os
import pickle
from dataclasses import dataclass
from typing import Optional

import pytest
from omegaconf import DictConfig, OmegaConf

import threestudio
from threestudio.utils.base import BaseModule
from threestudio.utils.config import ExperimentConfig, load_config, parse_structured
from threestudio.utils.errors import ConfigError
from threestudio.utils.misc import C

BASE = """
name: exp
tag: "${rmspace:${system.prompt},_}"
use_timestamp: false
system_type: sys
system:
  prompt: a red cube
  lr: 0.01
  geometry:
    radius: 1.0
trainer:
  max_steps: 10
"""


def test_merge_yaml_files_and_dotted_overrides(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text(BASE)
    b.write_text("system:\n  lr: 0.1\ntrainer:\n  max_steps: 20\n")
    cfg = load_config(str(a), str(b), cli_args=["system.geometry.radius=2.5", "seed=7"])
    assert cfg.system.lr == 0.1
    assert cfg.trainer.max_steps == 20
    assert cfg.system.geometry.radius == 2.5
    assert cfg.seed == 7
    assert cfg.tag == "a_red_cube"
    assert cfg.trial_dir == os.path.join("outputs", "exp", "a_red_cube")


def test_from_string_and_kwargs():
    cfg = load_config(BASE, from_string=True, cli_args=[], seed=3)
    assert cfg.seed == 3 and cfg.name == "exp"


def test_timestamp_is_appended_when_enabled():
    cfg = load_config(BASE, from_string=True, cli_args=["use_timestamp=true"])
    assert cfg.trial_name.startswith("a_red_cube@") and len(cfg.timestamp) == len(
        "@20260101-120000"
    )
    fixed = load_config(BASE, from_string=True, cli_args=["use_timestamp=true", "timestamp=@x"])
    assert fixed.trial_name == "a_red_cube@x"


def test_unknown_top_level_key_names_key_and_suggestion():
    with pytest.raises(ConfigError) as e:
        load_config(BASE, from_string=True, cli_args=["sed=1"])
    msg = str(e.value)
    assert "'sed'" in msg and "did you mean 'seed'" in msg
    assert "\n" not in msg


@dataclass
class GeometryConfig(BaseModule.Config):
    radius: float = 1.0
    n_levels: int = 16


class Geometry(BaseModule):
    Config = GeometryConfig


def test_nested_unknown_key_names_full_dotted_path():
    cfg = load_config(BASE, from_string=True, cli_args=["system.geometry.raduis=2"])
    with pytest.raises(ConfigError) as e:
        Geometry(cfg.system.geometry)
    msg = str(e.value)
    assert "system.geometry.raduis" in msg and "did you mean 'radius'" in msg


def test_wrong_type_names_key_value_and_expected_type():
    cfg = load_config(BASE, from_string=True, cli_args=["system.geometry.n_levels=abc"])
    with pytest.raises(ConfigError) as e:
        Geometry(cfg.system.geometry)
    msg = str(e.value)
    assert "system.geometry.n_levels" in msg and "'abc'" in msg and "int" in msg
    with pytest.raises(ConfigError, match=r"seed: expected int, got 'x'"):
        load_config(BASE, from_string=True, cli_args=["seed=x"])


def test_missing_value_names_key():
    with pytest.raises(ConfigError, match=r"missing value for system.prompt"):
        load_config(BASE.replace("prompt: a red cube", "prompt: ???"), from_string=True)
    # set on the command line, it is no longer missing
    cfg = load_config(
        BASE.replace("prompt: a red cube", "prompt: ???"),
        from_string=True,
        cli_args=["system.prompt=a cat"],
    )
    assert cfg.tag == "a_cat"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsystem:\n  a: [1, 2\n  b: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(bad))
    assert f"{bad}:" in str(e.value) and "YAML syntax error" in str(e.value)
    line = int(str(e.value).split(f"{bad}:")[1].split(":")[0])
    assert line in (3, 4)


def test_missing_file_and_malformed_override():
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="key.subkey=value"):
        load_config(BASE, from_string=True, cli_args=["trainer.max_steps"])


def test_tag_or_timestamp_required():
    with pytest.raises(ConfigError, match="tag"):
        load_config("name: x\nuse_timestamp: false\n", from_string=True)


@pytest.mark.parametrize(
    "expr,expected",
    [
        ("${calc_exp_lr_decay_rate:0.1,100}", 0.1 ** (1 / 100)),
        ("${add:1,2}", 3),
        ("${sub:5,2}", 3),
        ("${mul:3,4}", 12),
        ("${div:3,4}", 0.75),
        ("${idiv:7,2}", 3),
        ("${basename:/a/b/c.txt}", "c.txt"),
        ("${rmspace:'a b  c',_}", "a_b_c"),
        ("${tuple2:0.5}", [0.5, 0.5]),
        ("${gt0:1}", True),
        ("${gt0:0}", False),
        ("${not:false}", True),
    ],
)
def test_resolvers(expr, expected):
    conf = OmegaConf.create({"v": expr})
    value = OmegaConf.to_container(conf, resolve=True)["v"]
    if isinstance(expected, float):
        assert value == pytest.approx(expected)
    else:
        assert value == expected


def test_schedule_resolvers():
    conf = OmegaConf.create(
        {
            "a": [0, 0.0, 0.0, 10],
            "b": [0, 0.0, 1.0, 10],
            "c": 0.0,
            "x": "${cmaxgt0:${a}}",
            "y": "${cmaxgt0:${b}}",
            "z": "${cmaxgt0orcmaxgt0:${a},${c}}",
            "w": "${cmaxgt0orcmaxgt0:${a},${b}}",
        }
    )
    out = OmegaConf.to_container(conf, resolve=True)
    assert out["x"] is False and out["y"] is True and out["z"] is False and out["w"] is True


def test_schedule_resolvers_read_chained_schedules_like_c():
    # stable-zero123's [100, 7.0, 5.0, 150, 10.0, 200] peaks at 10; steps are not values
    conf = OmegaConf.create(
        {
            "zero": [100, 0.0, 0.0, 150, 0.0, 200],
            "late": [100, 0.0, 0.0, 150, 0.5, 200],
            "x": "${cmaxgt0:${zero}}",
            "y": "${cmaxgt0:${late}}",
        }
    )
    out = OmegaConf.to_container(conf, resolve=True)
    assert out["x"] is False and out["y"] is True


def test_parse_structured_returns_typed_config():
    cfg = parse_structured(GeometryConfig, {"radius": 3})
    assert cfg.radius == 3.0 and isinstance(cfg.radius, float)
    assert OmegaConf.get_type(cfg) is GeometryConfig
    with pytest.raises(ConfigError, match="unknown config key 'nlevels'; did you mean 'n_levels'"):
        parse_structured(GeometryConfig, {"nlevels": 3})


def test_experiment_config_fields():
    names = set(ExperimentConfig.__dataclass_fields__)
    for required in [
        "name",
        "description",
        "tag",
        "seed",
        "use_timestamp",
        "timestamp",
        "exp_root_dir",
        "trial_dir",
        "n_gpus",
        "resume",
        "data_type",
        "data",
        "system_type",
        "system",
        "trainer",
        "checkpoint",
    ]:
        assert required in names
    assert threestudio.__version__ >= "0.2.3"


@dataclass
class GuidanceConfig(BaseModule.Config):
    min_step_percent: float = 0.02
    max_step_percent: float = 0.98
    n_steps: int = 1
    scale: Optional[float] = None


class Guidance(BaseModule):
    Config = GuidanceConfig


def test_schedule_list_in_a_scalar_field_is_read_through_C():
    # published extension configs give schedules to fields their Config declares as scalars
    yaml = BASE.replace(
        "trainer:",
        "  guidance:\n    min_step_percent: [0, 0.98, 0.02, 8000]\n    n_steps: [0, 1, 5, 10]\n"
        "trainer:",
    )
    cfg = load_config(yaml, from_string=True, cli_args=["system.guidance.scale=[0, 1.0, 2.0, 4]"])
    guidance = Guidance(cfg.system.guidance)
    assert OmegaConf.get_type(guidance.cfg) is GuidanceConfig
    assert list(guidance.cfg.min_step_percent) == [0, 0.98, 0.02, 8000]
    assert C(guidance.cfg.min_step_percent, 0, 0) == pytest.approx(0.98)
    assert C(guidance.cfg.min_step_percent, 0, 4000) == pytest.approx(0.5)
    assert C(guidance.cfg.min_step_percent, 0, 8000) == pytest.approx(0.02)
    assert C(guidance.cfg.n_steps, 0, 10) == 5
    assert C(guidance.cfg.scale, 0, 2) == pytest.approx(1.5)
    assert guidance.cfg.max_step_percent == 0.98  # the scalar fields are untouched
    # the parsed config parses again, still names full keys, and pickles as its class
    again = parse_structured(GuidanceConfig, guidance.cfg)
    assert list(again.min_step_percent) == [0, 0.98, 0.02, 8000]
    assert again._get_full_key("n_steps") == "system.guidance.n_steps"
    assert isinstance(pickle.loads(pickle.dumps(guidance.cfg)), DictConfig)
    assert type(OmegaConf.to_object(guidance.cfg)) is GuidanceConfig


def test_post_init_sees_the_schedule():
    seen = []

    @dataclass
    class Checked:
        weight: float = 1.0

        def __post_init__(self):
            seen.append(self.weight)

    parse_structured(Checked, {"weight": [0, 1.0, 0.0, 10]})
    assert seen[-1] == [0, 1.0, 0.0, 10]


@pytest.mark.parametrize(
    "value,shown",
    [
        ("abc", "'abc' (str)"),
        ([0, "a", 0.1, 10], "[0, 'a', 0.1, 10]"),
        ([], "[]"),
        ([0, True, 0.1, 10], "[0, True, 0.1, 10]"),
        (True, "True (bool)"),
    ],
)
def test_a_scalar_field_still_rejects_what_is_not_a_number_or_schedule(value, shown):
    with pytest.raises(ConfigError) as e:
        parse_structured(GuidanceConfig, {"min_step_percent": value})
    msg = str(e.value)
    assert msg.startswith("min_step_percent: expected float, got ") and shown in msg
    assert "\n" not in msg


def test_interpolation_of_a_missing_key_names_both_keys():
    with pytest.raises(ConfigError) as e:
        load_config(BASE.replace("${system.prompt}", "${system.promt}"), from_string=True)
    assert str(e.value) == (
        "tag: the interpolation in '${rmspace:${system.promt},_}' names 'system.promt', "
        "which is not a config key; did you mean 'system.prompt'?"
    )
    with pytest.raises(ConfigError) as e:  # relative, inside a list
        load_config(
            BASE.replace("  lr: 0.01\n", "  lr: 0.01\n  steps: [1, '${..lrr}']\n"), from_string=True
        )
    assert str(e.value) == (
        "system.steps[1]: the interpolation in '${..lrr}' names 'system.lrr', which is not a "
        "config key; did you mean 'system.lr'?"
    )
    with pytest.raises(
        ConfigError, match=r"^radius: the interpolation in '\$\{nope\}' names 'nope'"
    ):
        parse_structured(GeometryConfig, OmegaConf.create({"radius": "${nope}"}))
