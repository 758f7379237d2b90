"""Loading pretrained weights from the Hugging Face Hub or a local folder, with one clear error.

``load_pretrained(cls, name, **kwargs)`` wraps ``cls.from_pretrained(name, **kwargs)`` for any
transformers/diffusers class. When the weights are neither on disk nor downloadable (no network,
``HF_HUB_OFFLINE=1``, a mistyped id or folder) it raises ``MissingModelError`` with one line that
names the model and the two ways to provide it (``missing_model_message``).
"""

import contextlib
import os
from typing import Iterator, Sequence

from threestudio.utils.errors import MissingModelError
from threestudio.utils.paths import shipped_path
from threestudio.utils.typing import Any, Optional, Union

DEFAULT_KEY_HINT = (
    "system.prompt_processor.pretrained_model_name_or_path",
    "system.guidance.pretrained_model_name_or_path",
)


def _looks_like_path(name: str) -> bool:
    # hub ids are "name" or "owner/name"; anything else is meant as a folder on disk
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\", "..\\"))
        or name.count("/") > 1
        or "\\" in name
    )


def missing_model_message(
    name: str,
    key_hint: Union[str, Sequence[str], None] = None,
    detail: Optional[str] = None,
) -> str:
    """One line naming the model ``name`` and the two ways to provide it.

    ``key_hint``: the config key(s) that take a local folder instead (default: the prompt
    processor's and the guidance's ``pretrained_model_name_or_path``)."""
    keys = DEFAULT_KEY_HINT if key_hint is None else key_hint
    if isinstance(keys, str):
        keys = [keys]
    local = " and ".join(f"{key}=/path/to/folder" for key in keys)
    is_folder = os.path.isdir(os.path.expanduser(name))
    if is_folder or _looks_like_path(name):
        what = "is incomplete" if is_folder else "does not exist"
        head = f"model folder '{name}' {what}" + (f" ({detail})" if detail and is_folder else "")
        message = (
            f"{head}; either pass a complete local copy with {local}, or a hub id downloaded "
            "while online (e.g. `hf download <id>`, formerly `huggingface-cli download <id>`)"
        )
    else:
        message = (
            f"pretrained model '{name}' is not available offline and could not be downloaded; "
            f"either download it while online (e.g. `hf download {name}`, formerly "
            f"`huggingface-cli download {name}`) or pass a local copy with {local}"
        )
    return " ".join(message.split())  # one line, whatever ``detail`` held


def _is_tokenizer(cls: Any) -> bool:
    try:
        from transformers import PreTrainedTokenizerBase
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    return isinstance(cls, type) and issubclass(cls, PreTrainedTokenizerBase)


def load_pretrained(
    cls: Any,
    name: str,
    key_hint: Union[str, Sequence[str], None] = None,
    **kwargs,
) -> Any:
    """``cls.from_pretrained(name, **kwargs)``; missing weights become ``MissingModelError``.

    ``name`` is a hub id (``owner/model``) or a local folder in the diffusers layout; pass
    ``subfolder=`` for one component (``"text_encoder"``, ``"tokenizer"``, ``"unet"`` ...)."""
    name = shipped_path(name)  # the bundled load/tiny-shapes from any working directory
    if _looks_like_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise MissingModelError(missing_model_message(name, key_hint))
    path = os.path.expanduser(name) if _looks_like_path(name) else name
    cache = _shared_cache
    if cache is not None:
        key = cache.key(cls, path, kwargs)
        reused = cache.take(key)
        if reused is not None:
            return reused
    loaded = _from_pretrained(cls, name, path, key_hint, **kwargs)
    if cache is not None:
        cache.keep(key, loaded)
    return loaded


def _from_pretrained(cls: Any, name: str, path: str, key_hint, **kwargs) -> Any:
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        if _is_tokenizer(cls):
            # transformers 5 builds an empty tokenizer instead of failing when the files are
            # missing, so make sure its config can be found first
            from transformers.utils import cached_file

            cached_file(path, "tokenizer_config.json", subfolder=kwargs.get("subfolder") or "")
        return cls.from_pretrained(path, **kwargs)
    except (OSError, LocalEntryNotFoundError) as e:
        # OSError covers transformers' "couldn't connect"/"does not appear to have a file" and
        # huggingface_hub's offline cache misses
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        detail = detail.split(" Checkout '")[0]  # drop transformers' link to a hub page
        if kwargs.get("subfolder"):
            detail = f"loading its '{kwargs['subfolder']}' failed: {detail}"
        raise MissingModelError(missing_model_message(name, key_hint, detail=detail)) from e


# ============ one load per batch of trials ============


class SharedPretrained:
    """The models ``load_pretrained`` loaded during a batch of trials in this process (see
    ``shared_pretrained_models``), so the next trial with the same config reuses them.

    Only ``torch.nn.Module`` results are kept (tokenizers and schedulers are cheap and carry
    state). The key is (class, folder or hub id, every ``from_pretrained`` keyword: subfolder,
    revision, variant, torch_dtype, ...); the device is the process's own (one worker process
    per device), and models are moved to it by their owner after loading, as without sharing.
    Within one trial a model is handed out once: a second request loads a fresh copy (e.g. a
    LoRA copy of the same UNet). After a trial (``end_trial``) a model that has any parameter
    requiring a gradient was trained or extended by that trial (LoRA layers, a camera
    embedding) and is dropped, so the next trial gets clean weights."""

    def __init__(self) -> None:
        self.models: dict = {}
        self.in_use: set = set()
        self.loads = 0  # models (nn.Module) loaded by from_pretrained
        self.reuses = 0  # requests answered from the cache

    @staticmethod
    def key(cls: Any, path: str, kwargs: dict) -> tuple:
        where = os.path.realpath(path) if os.path.isdir(path) else path
        options = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
        return (
            f"{getattr(cls, '__module__', '')}.{getattr(cls, '__qualname__', cls)}",
            where,
            options,
        )

    def take(self, key: tuple) -> Any:
        if key in self.in_use or key not in self.models:
            return None
        self.in_use.add(key)
        self.reuses += 1
        return self.models[key]

    def keep(self, key: tuple, model: Any) -> None:
        import torch

        if not isinstance(model, torch.nn.Module):
            return
        self.loads += 1
        if key not in self.in_use:
            self.models[key] = model
            self.in_use.add(key)

    def end_trial(self) -> None:
        for key in list(self.in_use):
            model = self.models.get(key)
            if model is not None and any(p.requires_grad for p in model.parameters()):
                del self.models[key]
        self.in_use.clear()

    def release(self) -> None:
        self.models.clear()
        self.in_use.clear()


_shared_cache: Optional[SharedPretrained] = None


@contextlib.contextmanager
def shared_pretrained_models() -> Iterator[SharedPretrained]:
    """Within the block, ``load_pretrained`` keeps what it loads and hands it to the next trial
    (see ``SharedPretrained``); on leaving, every kept model is released."""
    global _shared_cache
    outer, _shared_cache = _shared_cache, SharedPretrained()
    cache = _shared_cache
    try:
        yield cache
    finally:
        cache.release()
        _shared_cache = outer
