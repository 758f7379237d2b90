"""benchmarks/bench_methods.py's record: a recorded run counts as done only for its input, seed,
input camera and recipe; editing a recipe's settings (not its comments) makes its rows stale."""

import json

from tests.scripts.script_module import load_script
from threestudio.utils.paths import REPO_ROOT as REPO

BENCH = "benchmarks/bench_methods.py"


def test_a_run_is_done_only_for_its_input_camera_and_recipe():
    bm = load_script(BENCH)
    row = {"prompt": "a red cube", "seed": 0, "input_camera": [20.0, 30.0], "recipe": "abc"}
    assert bm.same_run(row, "a red cube", 0, [20.0, 30.0], "abc")
    assert not bm.same_run(row, "a red cube", 1, [20.0, 30.0], "abc")
    assert not bm.same_run(row, "a blue cube", 0, [20.0, 30.0], "abc")
    assert not bm.same_run(row, "a red cube", 0, [20.0, 0.0], "abc")
    assert not bm.same_run(row, "a red cube", 0, [20.0, 30.0], "def")
    # a row recorded before digests counts as the current recipe's
    legacy = {"prompt": "a red cube", "seed": 0}
    assert bm.same_run(legacy, "a red cube", 0, None, "def")


def test_the_recipe_digest_follows_settings_not_comments(tmp_path, monkeypatch):
    bm = load_script(BENCH)
    configs = tmp_path / "configs"
    configs.mkdir()
    monkeypatch.setattr(bm, "REPO_ROOT", str(tmp_path))
    monkeypatch.setitem(bm.METHODS, "toy", bm.Method("Toy", ["toy"]))
    (configs / "toy.yaml").write_text("system:\n  lr: 0.05\n")
    first = bm.recipe_digest("toy")
    (configs / "toy.yaml").write_text("# a comment\nsystem:\n  lr: 0.05  # measured\n")
    assert bm.recipe_digest("toy") == first
    (configs / "toy.yaml").write_text("system:\n  lr: 0.3\n")
    assert bm.recipe_digest("toy") != first
    # the shipped recipes all parse, and differ from one another
    monkeypatch.setattr(bm, "REPO_ROOT", REPO)
    digests = {n: bm.recipe_digest(n) for n in bm.METHODS if n != "toy" and bm.available(n)}
    assert len(set(digests.values())) == len(digests), json.dumps(digests)
