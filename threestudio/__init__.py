"""threestudio: a unified framework for 3D content creation from text or images by lifting 2D
diffusion models. Importing the package registers every built-in module."""

import logging

__version__ = "0.2.3"

__modules__ = {}

# custom extension name -> its import error, one line (filled by launch.py); named by find()
__failed_extensions__ = {}

logger = logging.getLogger("threestudio")


def _qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(name):
    """Class decorator registering ``cls`` under ``name`` for ``find``."""

    def decorator(cls):
        existing = __modules__.get(name)
        if existing is not None and _qualified(existing) != _qualified(cls):
            raise ValueError(
                f"module name '{name}' is already registered by {_qualified(existing)}; "
                f"cannot register {_qualified(cls)} under the same name"
            )
        __modules__[name] = cls
        return cls

    return decorator


def find(name):
    """The class registered as ``name``; ``"main:mixin_a,mixin_b"`` builds a class that mixes the
    named classes into ``main`` (mixins first in the MRO, so they may override ``main``)."""
    from threestudio.utils.errors import UserError, did_you_mean

    if ":" in name:
        main_name, mixin_names = name.split(":", 1)
        main_cls = find(main_name)
        mixins = [find(m.strip()) for m in mixin_names.split(",") if m.strip()]
        class_name = main_cls.__name__ + "With" + "".join(m.__name__ for m in mixins)
        return type(class_name, tuple(mixins + [main_cls]), {})
    if not name:
        raise UserError("an empty module name was given: set it to a registered name")
    if name not in __modules__:
        hint = " (extensions in custom/ must be importable and use @threestudio.register)"
        if __failed_extensions__:
            failed = ", ".join(f"'{n}' ({why})" for n, why in __failed_extensions__.items())
            plural = "s" if len(__failed_extensions__) > 1 else ""
            hint = f"; custom extension{plural} {failed} failed to import, which may be why"
        raise UserError(
            f"no module is registered as '{name}'{did_you_mean(name, __modules__.keys())}{hint}"
        )
    return __modules__[name]


def _rank_zero(fn):
    def wrapped(*args, **kwargs):
        from threestudio.utils.misc import get_rank

        if get_rank() == 0:
            fn(*args, **kwargs)

    return wrapped


@_rank_zero
def debug(*args):
    logger.debug(" ".join(str(a) for a in args))


@_rank_zero
def info(*args):
    logger.info(" ".join(str(a) for a in args))


@_rank_zero
def warn(*args):
    logger.warning(" ".join(str(a) for a in args))


def _import_builtin_modules():
    from threestudio import data, models, systems  # noqa: F401
    from threestudio.utils import perceptual  # noqa: F401  (registers perceptual-loss)


_import_builtin_modules()
