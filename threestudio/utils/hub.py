"""Loading pretrained weights from the Hugging Face Hub or a local folder, with one clear error.

``load_pretrained(cls, name, **kwargs)`` wraps ``cls.from_pretrained(name, **kwargs)`` for any
transformers/diffusers class. When the weights are neither on disk nor downloadable (no network,
``HF_HUB_OFFLINE=1``, a mistyped id or folder) it raises ``MissingModelError`` with one line that
names the model and the two ways to provide it (``missing_model_message``).
"""

import os
from typing import Sequence

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
    from huggingface_hub.errors import LocalEntryNotFoundError

    name = shipped_path(name)  # the bundled load/tiny-shapes from any working directory
    if _looks_like_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise MissingModelError(missing_model_message(name, key_hint))
    path = os.path.expanduser(name) if _looks_like_path(name) else name
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
