"""Where the code's own files are: the repository root and the shipped assets in its ``load/``.

Config values such as ``load/zero123/105000.ckpt`` stay relative to the working directory, as in
the original threestudio; these are for code that must find the shipped files (the prompt
library, the bundled tiny model) wherever it is run from.
"""

import os

# the folder holding the ``threestudio`` package, ``load/``, ``configs/`` and ``launch.py``
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOAD_DIR = os.path.join(REPO_ROOT, "load")


def shipped_path(path: str) -> str:
    """``path`` as given when it exists (relative to the working directory, as users write
    config values); otherwise, for a relative path that names a file or folder shipped with the
    project (``load/tiny-shapes``, ``load/lights/...``), that file under the repository root, so
    that the shipped configs run from any working directory. Anything else is returned as it is
    (a hub id, or a missing file that its caller reports)."""
    if not path or os.path.isabs(path) or os.path.exists(path):
        return path
    candidate = os.path.join(REPO_ROOT, path)
    return candidate if os.path.exists(candidate) else path
