"""What the kernels share about their accelerated backends: the lazy ``tinycudann`` import, and
the one message a kernel gives when its accelerated backend was asked for but the pure-PyTorch
one runs instead (a missing library, a CPU device): one line, once per process and kernel."""

import functools

import threestudio

_REPORTED: set = set()  # kernels that have already said so in this process


def report_fallback(kernel: str, accelerated: str, reason: str) -> None:
    """Log (info) that ``kernel`` runs in pure PyTorch instead of ``accelerated`` because of
    ``reason``; later calls for the same kernel are silent."""
    if kernel in _REPORTED:
        return
    _REPORTED.add(kernel)
    threestudio.info(
        f"{kernel}: {accelerated} is not used ({reason}); running the pure-PyTorch backend"
    )


@functools.cache
def tinycudann():
    """The ``tinycudann`` module, or None when it is not installed or cannot load."""
    try:
        import tinycudann  # noqa: PLC0415 - CUDA-only extension, imported lazily on purpose
    except Exception:  # ImportError, or an OSError/RuntimeError from a broken CUDA install
        return None
    return tinycudann
