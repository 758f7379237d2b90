"""The repository root and ``load/`` are found from the package, wherever the code runs from."""

import os

from threestudio.utils.paths import LOAD_DIR, REPO_ROOT


def test_repo_root_holds_the_package_and_load_its_assets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.path.isfile(os.path.join(REPO_ROOT, "launch.py"))
    assert os.path.isfile(os.path.join(REPO_ROOT, "threestudio", "__init__.py"))
    assert LOAD_DIR == os.path.join(REPO_ROOT, "load")
    assert os.path.isfile(os.path.join(LOAD_DIR, "prompt_library.json"))


def test_shipped_path_finds_the_projects_files_from_another_folder(tmp_path, monkeypatch):
    from threestudio.utils.paths import shipped_path

    monkeypatch.chdir(tmp_path)
    # a shipped folder named relative to the repository, as the configs name it
    assert shipped_path("load/tiny-shapes") == os.path.join(REPO_ROOT, "load", "tiny-shapes")
    # a file in the working directory wins over the shipped one
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "prompt_library.json").write_text("{}")
    assert shipped_path("load/prompt_library.json") == "load/prompt_library.json"
    # hub ids, absolute paths and missing files pass through unchanged
    assert shipped_path("stabilityai/stable-diffusion-2-1-base") == (
        "stabilityai/stable-diffusion-2-1-base"
    )
    assert shipped_path("/nowhere/model") == "/nowhere/model"
    assert shipped_path("load/not-there") == "load/not-there"
