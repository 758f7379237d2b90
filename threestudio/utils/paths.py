"""Where the code's own files are: the repository root and the shipped assets in its ``load/``.

Config values such as ``load/zero123/105000.ckpt`` stay relative to the working directory, as in
the original threestudio; these are for code that must find the shipped files (the prompt
library, the bundled tiny model) wherever it is run from.
"""

import os

# the folder holding the ``threestudio`` package, ``load/``, ``configs/`` and ``launch.py``
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOAD_DIR = os.path.join(REPO_ROOT, "load")
