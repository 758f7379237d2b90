"""Checks that turn an unusable checkpoint into one line naming the file, before Lightning would
fail deep inside with a traceback: a truncated or foreign file, and a checkpoint whose weights do
not fit the configured modules."""

import os

import torch

from threestudio.utils.errors import UserError
from threestudio.utils.typing import Any, Dict, Optional


def read_checkpoint(path: str, key: str = "resume") -> Dict[str, Any]:
    """The checkpoint's contents, memory-mapped (nothing is read that is not used); a file that
    is missing, truncated (an interrupted copy) or not a checkpoint is a UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"{key}: checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any failure to read means the same to the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{key}: {path} is not a readable checkpoint (truncated or another kind of file: "
            f"{reason}); pick another one in the trial's ckpts/ folder"
        ) from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{key}: {path} is not a training checkpoint (it holds no state_dict)")
    return checkpoint


def state_dict_mismatch(
    expected: Dict[str, torch.Tensor], found: Dict[str, torch.Tensor]
) -> Optional[str]:
    """What keeps ``found`` (a checkpoint's state_dict) from loading into modules whose
    state_dict is ``expected``: the first shape difference, else missing or unexpected
    weights; None when it fits."""
    for name, tensor in expected.items():
        if name in found and tuple(found[name].shape) != tuple(tensor.shape):
            return (
                f"{name} has shape {list(found[name].shape)} in the checkpoint but "
                f"{list(tensor.shape)} in this configuration"
            )
    missing = [name for name in expected if name not in found]
    unexpected = [name for name in found if name not in expected]
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing from the checkpoint (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} weights this configuration lacks (first: {unexpected[0]})")
    return "; ".join(parts) or None
