"""Typing names shared by every module.

Tensor-facing functions annotate shapes with jaxtyping, e.g. ``Float[Tensor, "B H W 3"]``.
``launch.py --typecheck`` installs jaxtyping's import hook with typeguard so these shapes are
checked at run time; without it they are documentation only and cost nothing.
"""

from dataclasses import dataclass, field  # noqa: F401
from pathlib import Path  # noqa: F401
from typing import (  # noqa: F401
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    Mapping,
    NamedTuple,
    NewType,
    Optional,
    Sequence,
    Sized,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from jaxtyping import Bool, Complex, Float, Inexact, Int, Integer, Num, Shaped, UInt  # noqa: F401
from omegaconf import DictConfig, ListConfig  # noqa: F401
from torch import Tensor  # noqa: F401

try:  # typeguard is only needed for --typecheck
    from typeguard import typechecked as typechecker  # noqa: F401
except ImportError:  # pragma: no cover - optional dependency

    def typechecker(fn):
        return fn
