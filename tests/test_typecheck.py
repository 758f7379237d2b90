import subprocess
import sys

import pytest

from threestudio.utils.paths import REPO_ROOT as REPO

SNIPPET = """
import sys
sys.path.insert(0, {repo!r})
import launch
if {enable}:
    launch.enable_typecheck()
import torch
from threestudio.models.geometry.base import contract_to_unisphere
try:
    # bbox is declared Float[Tensor, "2 3"]; the body itself would accept [3, 3]
    contract_to_unisphere(torch.rand(5, 3), torch.rand(3, 3))
except Exception as e:
    print("REJECTED", type(e).__name__)
else:
    print("ACCEPTED")
"""


def run_snippet(enable: bool) -> str:
    code = SNIPPET.format(repo=REPO, enable=enable)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_typecheck_rejects_a_wrong_shape_only_when_enabled():
    assert run_snippet(True).startswith("REJECTED")
    assert run_snippet(False) == "ACCEPTED"
