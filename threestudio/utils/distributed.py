"""Several devices and nodes: what one process needs to know about the others.

Lightning's strategies start and connect the processes (its ``ddp`` strategy re-runs launch.py
once per device, with ``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE`` set; a cluster such as Slurm or
torchrun starts them itself). This module only answers which devices a run asks for, which rank a
process is (also before the process group exists), and keeps what the ranks save to one copy.
"""

import os

import torch
import torch.nn as nn

from threestudio.utils.errors import ConfigError
from threestudio.utils.typing import Any, Optional, Tuple


def _env_int(*keys: str) -> Optional[int]:
    for key in keys:
        value = os.environ.get(key)
        if value not in (None, ""):
            return int(value)
    return None


def env_global_rank(devices_per_node: int = 1) -> int:
    """This process's global rank, read from the environment (it holds before the process group
    is set up): ``RANK`` (torchrun), else ``NODE_RANK * devices_per_node + LOCAL_RANK`` (Lightning's
    own launcher; its main process on node ``n`` has no ``LOCAL_RANK`` yet and is local rank 0),
    else ``SLURM_PROCID`` (checked after Lightning's variables: Slurm sets it in any job step,
    managed or not), else 0."""
    rank = _env_int("RANK")
    if rank is not None:
        return rank
    local, node = _env_int("LOCAL_RANK"), _env_int("NODE_RANK", "GROUP_RANK")
    if local is not None or node is not None:
        return (node or 0) * max(int(devices_per_node), 1) + (local or 0)
    rank = _env_int("SLURM_PROCID", "JSM_NAMESPACE_RANK")
    return rank if rank is not None else 0


def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def global_rank() -> int:
    """The rank in the running process group (0 without one)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of ``src`` to every rank. DDP does this once when it wraps
    the model; state changed after that by code that draws per-rank random numbers (a shape prior
    fitted in on_fit_start) must be made equal again, or the ranks train different models."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            torch.distributed.broadcast(tensor.data, src=src)


def count_devices(devices: Any) -> Optional[int]:
    """The number of processes a ``Trainer(devices=...)`` value starts on each node, when it says
    so plainly (an int, a digit string, a list or "0,1"); None for "auto" and -1."""
    if isinstance(devices, bool):
        raise ConfigError(f"trainer.devices: expected a count or a list of indices, got {devices}")
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str):
        text = devices.strip()
        if text.isdigit():
            return int(text)
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        if text in ("auto", "-1"):
            return None
    raise ConfigError(
        f"trainer.devices: expected a count, a list of indices, 'auto' or -1, got {devices!r}"
    )


def devices_from_config(
    trainer_cfg: dict, accelerator: str, devices: Any, n_devices: int
) -> Tuple[str, Any, int]:
    """Lightning's own keys ``trainer.accelerator`` and ``trainer.devices``, where the config sets
    them, take over from ``--gpu`` (and are removed from ``trainer_cfg``); e.g.
    ``trainer.accelerator=cpu trainer.devices=2`` runs two CPU processes joined by gloo. Returns
    (accelerator, devices, devices on this node)."""
    if "accelerator" not in trainer_cfg and "devices" not in trainer_cfg:
        return accelerator, devices, n_devices
    accelerator = str(trainer_cfg.pop("accelerator", accelerator))
    if "devices" in trainer_cfg:
        devices = trainer_cfg.pop("devices")
        counted = count_devices(devices)
        n_devices = counted if counted is not None else 1
    elif accelerator == "cpu" and not isinstance(devices, int):
        devices, n_devices = n_devices, n_devices  # GPU indices mean nothing on the CPU
    return accelerator, devices, n_devices
