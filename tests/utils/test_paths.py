"""The repository root and ``load/`` are found from the package, wherever the code runs from."""

import os

from threestudio.utils.paths import LOAD_DIR, REPO_ROOT


def test_repo_root_holds_the_package_and_load_its_assets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.path.isfile(os.path.join(REPO_ROOT, "launch.py"))
    assert os.path.isfile(os.path.join(REPO_ROOT, "threestudio", "__init__.py"))
    assert LOAD_DIR == os.path.join(REPO_ROOT, "load")
    assert os.path.isfile(os.path.join(LOAD_DIR, "prompt_library.json"))
