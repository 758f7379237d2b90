"""Small helpers used across the project: scheduled values, devices, ranks, weight loading."""

import gc
import os
import re
from pathlib import Path

import torch
from packaging import version

from threestudio.utils.config import config_to_primitive
from threestudio.utils.errors import ConfigError, UserError
from threestudio.utils.typing import Any, Dict, Optional, Sequence, Tuple, Union


def parse_version(ver: str):
    return version.parse(ver)


def get_rank() -> int:
    # SLURM_PROCID can be set even when SLURM does not manage this process, so check it last
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        rank = os.environ.get(key)
        if rank is not None:
            return int(rank)
    return 0


def get_device() -> torch.device:
    """The device of this process: ``cuda:<local rank>`` when CUDA is usable, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:  # release tiny-cuda-nn's cached memory when the backend is in use
        import sys

        tcnn = sys.modules.get("tinycudann")
        if tcnn is not None and torch.cuda.is_available():
            tcnn.free_temporary_memory()
    except Exception:  # pragma: no cover - best effort
        pass


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast(tensor, src: int = 0):
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.broadcast(tensor, src=src)
    return tensor


def _interp(start: float, end: float, frac: float, interpolation: str) -> float:
    frac = min(max(frac, 0.0), 1.0)
    if interpolation == "linear":
        return start + (end - start) * frac
    if interpolation == "exp":
        if start <= 0 or end <= 0:
            raise ConfigError(
                f"exponential interpolation needs positive values, got {start} and {end}"
            )
        return start * (end / start) ** frac
    raise ConfigError(f"unknown interpolation '{interpolation}'; use 'linear' or 'exp'")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def C(value: Any, epoch: int, global_step: int, interpolation: str = "linear") -> float:
    """Evaluate a scheduled value, read as the established threestudio reads it.

    Forms:
    - a number: constant;
    - ``[start_value, end_value, end_step]``: the same as ``[0, start_value, end_value, end_step]``;
    - ``[start_step, start_value, end_value, end_step]``: ``start_value`` until ``start_step``,
      interpolated to ``end_value`` at ``end_step``, then held;
    - ``[start_step, start_value, value_1, step_1, value_2, step_2, ...]`` (even length, 6 or
      more): a chain of the 4-item form, each value reached at the step after it. The published
      stable-zero123 ``lambda_normal_smooth: [100, 7.0, 5.0, 150, 10.0, 200]`` is 7 until step
      100, 7 -> 5 by step 150, 5 -> 10 by step 200, then 10.
    An int step counts global steps, a float step epochs.
    """
    if _is_number(value):
        return value
    value = config_to_primitive(value)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"scheduled value must be a number or a list, got {value!r}")
    value = list(value)
    if not all(_is_number(v) for v in value):
        raise ConfigError(f"scheduled value {value!r} must hold only numbers")
    if len(value) == 3:
        value = [0] + value
    if len(value) < 4 or (len(value) > 4 and (len(value) < 6 or len(value) % 2 == 1)):
        raise ConfigError(
            f"cannot read scheduled value {value!r}: use a number, [start, end, end_step], "
            "[start_step, start, end, end_step] or [start_step, start, value_1, step_1, "
            "value_2, step_2, ...]"
        )
    # the milestones (step, value): (start_step, start_value), (step_1, value_1), ...
    steps = [value[0]] + value[3::2]
    values = [value[1]] + value[2::2]
    if any(b < a for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"scheduled value {value!r}: its steps {steps} must not decrease")

    def counter(step: Union[int, float]) -> Union[int, float]:
        return epoch if isinstance(step, float) else global_step

    # the segment that holds the current step: the last whose start (after the first) is reached
    i = 0
    for k in range(1, len(steps) - 1):
        if counter(steps[k]) >= steps[k]:
            i = k
    start_step, start_value = steps[i], values[i]
    end_step, end_value = steps[i + 1], values[i + 1]
    current = counter(end_step)
    if end_step == start_step:
        return end_value if current >= end_step else start_value
    frac = (current - start_step) / (end_step - start_step)
    return _interp(start_value, end_value, frac, interpolation)


def split_weights_spec(spec: str) -> Tuple[str, Optional[str]]:
    """``"path/to.ckpt:module.prefix"`` -> (path, prefix); a Windows drive letter is not a prefix."""
    match = re.match(r"^(.*?\.(?:ckpt|pt|pth|bin|safetensors))(?::(.+))?$", spec)
    if match:
        return match.group(1), match.group(2)
    if ":" in spec and not re.match(r"^[A-Za-z]:[\\/]", spec):
        path, prefix = spec.rsplit(":", 1)
        return path, prefix
    return spec, None


def load_state_dict_file(path: str, map_location="cpu") -> Dict[str, Any]:
    if not Path(path).is_file():
        raise UserError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device=str(map_location))
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    return ckpt


def load_module_weights(
    path: str,
    module_name: Optional[str] = None,
    ignore_modules: Optional[Sequence[str]] = None,
    map_location=None,
) -> Tuple[Dict[str, Any], int, int]:
    """Load a (sub-)state-dict from a Lightning checkpoint or a plain state dict.

    Returns ``(state_dict, epoch, global_step)``; with ``module_name`` only the keys under that
    dotted prefix are kept, with the prefix stripped."""
    if module_name is not None and ignore_modules is not None:
        raise ValueError("module_name and ignore_modules cannot both be set")
    ckpt = load_state_dict_file(path, map_location=map_location or "cpu")
    state_dict = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    epoch = ckpt.get("epoch", 0) if isinstance(ckpt, dict) else 0
    global_step = ckpt.get("global_step", 0) if isinstance(ckpt, dict) else 0
    if ignore_modules:
        state_dict = {
            k: v
            for k, v in state_dict.items()
            if not any(k.startswith(m + ".") for m in ignore_modules)
        }
    if module_name is not None:
        prefix = module_name + "."
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not state_dict:
            raise UserError(f"no weights under '{module_name}' in {path}")
    return state_dict, epoch, global_step


def find_last_path(path: str) -> str:
    """Resolve ``.../ckpts/last.ckpt`` style paths: a folder gives its newest checkpoint."""
    p = Path(path)
    if p.is_dir():
        ckpts = sorted(p.glob("*.ckpt"), key=lambda f: f.stat().st_mtime)
        if (p / "last.ckpt").exists():
            return str(p / "last.ckpt")
        if ckpts:
            return str(ckpts[-1])
    return str(p)


def get_checkpoint_step(path: str) -> int:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return int(ckpt.get("global_step", 0))


def _to_float(value: Union[str, float]) -> float:
    return float(value)
