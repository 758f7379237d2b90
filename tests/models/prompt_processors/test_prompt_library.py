"""``lib:`` prompt lookups in the shipped and in user prompt libraries."""

import json
import os

import pytest

import threestudio
from threestudio.models.prompt_processors.base import (
    default_prompt_library_path,
    find_library_prompt,
    load_prompt_library,
)
from threestudio.utils.errors import ConfigError, UserError


def dummy(prompt, **cfg):
    cls = threestudio.find("dummy-prompt-processor")
    return cls({"prompt": prompt, "hidden_size": 4, "max_length": 2, **cfg})


def test_shipped_library_is_large_unique_and_has_the_readme_prompt(tmp_path, monkeypatch):
    path = default_prompt_library_path()
    with open(path) as f:
        data = json.load(f)
    prompts = data["dreamfusion"]
    assert len(prompts) >= 300
    assert len(set(prompts)) == len(prompts)
    assert all(p.strip() == p and p for p in prompts)
    for colour in ["red", "green", "blue", "yellow", "orange", "purple"]:
        for shape in ["sphere", "cube", "cone", "cylinder", "torus"]:
            assert f"a {colour} {shape}" in prompts
    # found relative to the package, whatever the working directory
    monkeypatch.chdir(tmp_path)
    proc = dummy("lib:delicious_hamburger")
    assert "delicious" in proc.prompt and "hamburger" in proc.prompt
    assert proc.prompt in prompts
    assert proc.prompts_vd[1] == proc.prompt + ", front view"


def test_keywords_are_case_insensitive():
    library = ["A Red Sphere", "a blue cube", "a red cube"]
    assert find_library_prompt("RED_sphere", library) == "A Red Sphere"
    assert find_library_prompt("blue", library) == "a blue cube"


@pytest.fixture
def user_library(tmp_path):
    path = tmp_path / "my_prompts.json"
    prompts = ["a wooden chair", "a wooden table", "a metal chair", "a glass of milk"]
    path.write_text(json.dumps({"dreamfusion": prompts}))
    return str(path)


def test_user_library_single_match(user_library):
    proc = dummy("lib:metal_chair", prompt_library=user_library)
    assert proc.prompt == "a metal chair"


def test_user_library_no_match_lists_closest(user_library):
    with pytest.raises(UserError) as info:
        dummy("lib:wooden_stool", prompt_library=user_library)
    message = str(info.value)
    assert "\n" not in message
    assert "my_prompts.json" in message and "'wooden'" in message and "'stool'" in message
    # the closest prompts hold the keyword that did match
    closest = message.split("closest:")[1]
    assert "'a wooden chair'" in closest and "'a wooden table'" in closest
    assert "milk" not in closest


def test_user_library_many_matches_lists_them(user_library):
    with pytest.raises(UserError) as info:
        dummy("lib:chair", prompt_library=user_library)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("2 prompts")
    assert "'a wooden chair'" in message and "'a metal chair'" in message
    assert "table" not in message


def test_bad_library_files(tmp_path):
    with pytest.raises(ConfigError, match="prompt_library: file not found"):
        load_prompt_library(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"dreamfusion": "not a list"}')
    with pytest.raises(ConfigError, match="lists of strings"):
        load_prompt_library(str(bad))
    with pytest.raises(UserError, match="no keywords"):
        find_library_prompt("__", ["a cat"])


def test_plain_prompts_need_no_library(tmp_path):
    missing = os.path.join(tmp_path, "nothing.json")
    proc = dummy("a lib: prefix elsewhere", prompt_library=missing)
    assert proc.prompt == "a lib: prefix elsewhere"
