"""Prompt processing: turn a text prompt into the text embeddings a diffusion guidance consumes.

A ``PromptProcessor`` resolves the prompt (``lib:kw1_kw2`` picks one from the prompt library),
builds one prompt per view direction (side/front/back/overhead), encodes every prompt once and
keeps the embeddings. Encoding happens in a separate process by default (``spawn``) so the text
encoder's memory is returned to the system before training starts, and the results are cached on
disk keyed by ``hash_prompt(model, prompt)``.

Calling the processor returns a ``PromptProcessorOutput``, which picks per-camera embeddings:
``get_text_embeddings`` returns ``[cond; uncond]`` (``2B`` rows) and
``get_text_embeddings_perp_neg`` the Perp-Neg layout ``[pos; uncond; neg_0, neg_1 per sample]``
(``4B`` rows) with the negative guidance weights ``[B, 2]``.
"""

import difflib
import hashlib
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

import torch
import torch.multiprocessing as mp

import threestudio
from threestudio.utils.atomic import atomic_path
from threestudio.utils.base import BaseObject
from threestudio.utils.errors import ConfigError, MissingModelError, UserError
from threestudio.utils.hub import load_pretrained
from threestudio.utils.misc import barrier, cleanup, get_device, get_rank
from threestudio.utils.paths import LOAD_DIR
from threestudio.utils.typing import (
    Any,
    Callable,
    Dict,
    Float,
    Int,
    List,
    Optional,
    Tensor,
    Tuple,
    Union,
)

# ============ helpers ============

# a model folder may list the only words its text encoder was trained on (the bundled tiny model)
VOCABULARY_FILE = "vocabulary.json"


def hash_prompt(model: str, prompt: str) -> str:
    """The cache key of the embedding of ``prompt`` by text encoder ``model``."""
    return hashlib.md5(f"{model}-{prompt}".encode()).hexdigest()


def load_text_encoder(tokenizer_cls, encoder_cls, name: str, device, **encoder_kwargs):
    """The tokenizer and the text encoder (on ``device``, in eval mode) from the ``tokenizer``
    and ``text_encoder`` subfolders of model ``name``, for an ``encode_prompts``."""
    # the tokenizer's worker threads would be forked into the training processes otherwise
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = load_pretrained(tokenizer_cls, name, subfolder="tokenizer")
    text_encoder = load_pretrained(encoder_cls, name, subfolder="text_encoder", **encoder_kwargs)
    # frozen: encoding never needs gradients, and a batch of trials may share it (utils.hub)
    return tokenizer, text_encoder.to(device).eval().requires_grad_(False)


def default_cache_dir() -> str:
    """``$THREESTUDIO_CACHE_DIR/text_embeddings``, else ``~/.cache/threestudio/text_embeddings``."""
    root = os.environ.get("THREESTUDIO_CACHE_DIR") or os.path.join("~", ".cache", "threestudio")
    return os.path.join(os.path.expanduser(root), "text_embeddings")


def model_cache_dir(cache_dir: str, model: str) -> str:
    """Where the embeddings of ``model`` are cached under ``cache_dir``: the folder itself for a
    hub id; for a local model folder a subfolder named after the size and modification time of
    its text encoder and tokenizer files, so a model retrained or replaced in place (the
    bundled models are rebuilt by their scripts) never reads embeddings of its earlier
    weights. The file names inside are ``hash_prompt(model, prompt)`` as established."""
    if not os.path.isdir(model):
        return cache_dir
    stats = []
    for part in ("text_encoder", "tokenizer"):
        for root, _, files in os.walk(os.path.join(model, part)):
            for name in sorted(files):
                st = os.stat(os.path.join(root, name))
                stats.append(f"{part}/{name}:{st.st_size}:{st.st_mtime_ns}")
    fingerprint = hashlib.md5("|".join(sorted(stats)).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"local-{fingerprint}")


def default_prompt_library_path() -> str:
    """The library shipped with the code (``load/prompt_library.json`` beside the package)."""
    return os.path.join(LOAD_DIR, "prompt_library.json")


def shift_azimuth_deg(azimuth: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """Azimuth in degrees wrapped to [-180, 180)."""
    return (azimuth + 180) % 360 - 180


def shifted_exponential_decay(a: float, b: float, c: float, r: Tensor) -> Tensor:
    """``a * exp(-b * r) + c``: the Perp-Neg weight curve over the interpolation ratio ``r``."""
    return a * torch.exp(-b * r) + c


# ============ view directions ============


@dataclass
class DirectionConfig:
    name: str
    prompt: Callable[[str], str]
    negative_prompt: Callable[[str], str]
    # (elevation, azimuth, camera_distances) in degrees -> bool mask of cameras in this direction
    condition: Callable[[Tensor, Tensor, Tensor], Tensor]


def make_directions(
    view_dependent_prompt_front: bool,
    front_threshold: float,
    back_threshold: float,
    overhead_threshold: float,
) -> List[DirectionConfig]:
    """side (default), front, back, overhead, in that order: a later direction wins where
    several conditions hold, so overhead overrides front/back, which override side."""

    def is_side(ele, azi, dis):
        return torch.ones_like(ele, dtype=torch.bool)

    def is_front(ele, azi, dis):
        return shift_azimuth_deg(azi).abs() < front_threshold

    def is_back(ele, azi, dis):
        return shift_azimuth_deg(azi).abs() > 180 - back_threshold

    def is_overhead(ele, azi, dis):
        return ele > overhead_threshold

    def keep(s: str) -> str:
        return s

    if view_dependent_prompt_front:
        templates = {
            "side": "side view of {}",
            "front": "front view of {}",
            "back": "backside view of {}",
            "overhead": "overhead view of {}",
        }
    else:
        templates = {
            "side": "{}, side view",
            "front": "{}, front view",
            "back": "{}, back view",
            "overhead": "{}, overhead view",
        }
    conditions = {"side": is_side, "front": is_front, "back": is_back, "overhead": is_overhead}
    return [
        DirectionConfig(name, templates[name].format, keep, conditions[name])
        for name in ("side", "front", "back", "overhead")
    ]


def direction_indices(
    directions: List[DirectionConfig],
    elevation: Float[Tensor, "B"],
    azimuth: Float[Tensor, "B"],
    camera_distances: Float[Tensor, "B"],
) -> Int[Tensor, "B"]:
    """Index into ``directions`` of each camera: the last direction whose condition holds."""
    direction_idx = torch.zeros_like(elevation, dtype=torch.long)
    for i, d in enumerate(directions):
        direction_idx[d.condition(elevation, azimuth, camera_distances)] = i
    return direction_idx


# ============ output ============


@dataclass
class PromptProcessorOutput:
    text_embeddings: Float[Tensor, "1 N Nf"]
    uncond_text_embeddings: Float[Tensor, "1 N Nf"]
    text_embeddings_vd: Float[Tensor, "Nv N Nf"]
    uncond_text_embeddings_vd: Float[Tensor, "Nv N Nf"]
    directions: List[DirectionConfig]
    direction2idx: Dict[str, int]
    use_perp_neg: bool = False
    perp_neg_f_sb: Tuple[float, float, float] = (1.0, 0.5, -0.606)
    perp_neg_f_fsb: Tuple[float, float, float] = (1.0, 0.5, 0.967)
    perp_neg_f_fs: Tuple[float, float, float] = (4.0, 0.5, -2.426)
    perp_neg_f_sf: Tuple[float, float, float] = (4.0, 0.5, -2.426)
    prompt: str = ""
    prompts_vd: List[str] = field(default_factory=list)

    def get_direction_idx(
        self,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
    ) -> Int[Tensor, "B"]:
        """Index into ``directions`` of each camera (elevation/azimuth in degrees)."""
        return direction_indices(self.directions, elevation, azimuth, camera_distances)

    def get_text_embeddings(
        self,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
        view_dependent_prompting: bool = True,
    ) -> Float[Tensor, "BB N Nf"]:
        """``[cond; uncond]``: rows ``0..B-1`` conditional, ``B..2B-1`` unconditional (note the
        order: conditional first, unlike diffusers' pipelines)."""
        batch_size = elevation.shape[0]
        if view_dependent_prompting:
            idx = self.get_direction_idx(elevation, azimuth, camera_distances)
            idx = idx.to(self.text_embeddings_vd.device)
            text_embeddings = self.text_embeddings_vd[idx]
            uncond_text_embeddings = self.uncond_text_embeddings_vd[idx]
        else:
            text_embeddings = self.text_embeddings.expand(batch_size, -1, -1)
            uncond_text_embeddings = self.uncond_text_embeddings.expand(batch_size, -1, -1)
        return torch.cat([text_embeddings, uncond_text_embeddings], dim=0)

    def get_text_embeddings_perp_neg(
        self,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
        view_dependent_prompting: bool = True,
    ) -> Tuple[Float[Tensor, "BBBB N Nf"], Float[Tensor, "B 2"]]:
        """Perp-Neg embeddings and negative guidance weights.

        Rows: ``[pos (B); uncond (B); neg (2B)]`` where the negatives are interleaved per sample
        (``b0n0, b0n1, b1n0, ...``). With ``a = |azimuth|`` (shifted to [-180, 180)):
        - overhead cameras: pos = overhead prompt, negatives = uncond, weights 0;
        - ``a < 90`` (front half): ``r = 1 - a/90``, pos = ``r*front + (1-r)*side``, negatives
          (front, side), weights ``(-f_fs(r), -f_sf(1-r))``;
        - otherwise (back half): ``r = 2 - a/90``, pos = ``r*side + (1-r)*back``, negatives
          (side, front), weights ``(-f_sb(r), -f_fsb(r))``;
        with ``f(a, b, c; r) = a*exp(-b*r) + c``."""
        assert view_dependent_prompting, "Perp-Neg only works with view-dependent prompting"
        device = self.text_embeddings_vd.device
        idx = self.get_direction_idx(elevation, azimuth, camera_distances).to(device)
        abs_azimuth = shift_azimuth_deg(azimuth).abs().to(device=device, dtype=torch.float32)

        vd = self.text_embeddings_vd
        side = vd[self.direction2idx["side"]][None]
        front = vd[self.direction2idx["front"]][None]
        back = vd[self.direction2idx["back"]][None]
        overhead = vd[self.direction2idx["overhead"]][None]
        uncond = self.uncond_text_embeddings_vd[idx]

        is_overhead = idx == self.direction2idx["overhead"]
        front_half = abs_azimuth < 90
        r_fs = 1.0 - abs_azimuth / 90.0  # 1: full front, 0: full side
        r_sb = 2.0 - abs_azimuth / 90.0  # 1: full side, 0: full back

        def per_sample(mask: Tensor) -> Tensor:
            return mask[:, None, None]

        r_fs_ = r_fs[:, None, None].to(vd.dtype)
        r_sb_ = r_sb[:, None, None].to(vd.dtype)
        pos = torch.where(
            per_sample(front_half),
            r_fs_ * front + (1 - r_fs_) * side,
            r_sb_ * side + (1 - r_sb_) * back,
        )
        pos = torch.where(per_sample(is_overhead), overhead.expand_as(pos), pos)
        neg_0 = torch.where(per_sample(front_half), front, side)
        neg_1 = torch.where(per_sample(front_half), side, front)
        neg_0 = torch.where(per_sample(is_overhead), uncond, neg_0)
        neg_1 = torch.where(per_sample(is_overhead), uncond, neg_1)

        w_0 = torch.where(
            front_half,
            -shifted_exponential_decay(*self.perp_neg_f_fs, r_fs),
            -shifted_exponential_decay(*self.perp_neg_f_sb, r_sb),
        )
        w_1 = torch.where(
            front_half,
            -shifted_exponential_decay(*self.perp_neg_f_sf, 1 - r_fs),
            -shifted_exponential_decay(*self.perp_neg_f_fsb, r_sb),
        )
        weights = torch.stack([w_0, w_1], dim=-1)
        weights = torch.where(is_overhead[:, None], torch.zeros_like(weights), weights)

        neg = torch.stack([neg_0, neg_1], dim=1).flatten(0, 1)
        text_embeddings = torch.cat([pos, uncond, neg], dim=0)
        return text_embeddings, weights.to(elevation.device)


# ============ processor ============

_warned_no_spawn = False


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _save_embedding(embedding: Tensor, path: str) -> None:
    # clone: saving a view would store the whole batch; atomic so a reader (another trial of a
    # batch, another worker) never sees a partial file
    with atomic_path(path) as tmp:
        torch.save(embedding.detach().to("cpu", torch.float32).clone(), tmp)


def _encode_to_dir(
    cls: type, model: str, prompts: List[str], out_dir: str, options: Dict[str, Any]
) -> None:
    if cls.spawn_func is not PromptProcessor.spawn_func:
        # a subclass written for the original threestudio writes the files itself
        cls.spawn_func(model, prompts, out_dir)
        return
    embeddings = cls.encode_prompts(model, prompts, get_device(), **options)
    assert embeddings.shape[0] == len(prompts), "encode_prompts must return one row per prompt"
    for prompt, embedding in zip(prompts, embeddings):
        _save_embedding(embedding, os.path.join(out_dir, f"{hash_prompt(model, prompt)}.pt"))


def _encode_worker(
    cls: type,
    model: str,
    prompts: List[str],
    out_dir: str,
    options: Dict[str, Any],
    error_path: str,
) -> None:
    """Entry point of the encoding subprocess: errors are handed back through ``error_path``."""
    try:
        _encode_to_dir(cls, model, prompts, out_dir, options)
    except BaseException as e:
        with open(error_path, "w") as f:
            json.dump(
                {
                    "type": type(e).__name__,
                    "missing_model": isinstance(e, MissingModelError),
                    "user_error": isinstance(e, UserError),
                    "message": _one_line(e),
                },
                f,
            )
        sys.exit(1)


def load_prompt_library(path: str) -> List[str]:
    """All prompts of a library file ``{"dreamfusion": [...], ...}`` (every list is read)."""
    if not os.path.isfile(path):
        raise ConfigError(f"prompt_library: file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"prompt_library: {path} is not valid JSON ({e})") from e
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()
    ):
        raise ConfigError(
            f'prompt_library: {path} must hold {{"dreamfusion": ["prompt", ...]}} (lists of strings)'
        )
    return list(dict.fromkeys(p for prompts in data.values() for p in prompts))


def find_library_prompt(query: str, library: List[str], library_path: str = "library") -> str:
    """The single prompt containing every ``_``-separated keyword of ``query`` (any case)."""
    keywords = [k for k in query.lower().split("_") if k]
    if not keywords:
        raise UserError(
            f"prompt 'lib:{query}' names no keywords; use e.g. 'lib:delicious_hamburger'"
        )
    matches = [p for p in library if all(k in p.lower() for k in keywords)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        text = " ".join(keywords)

        def score(p: str) -> Tuple[int, float]:
            hits = sum(k in p.lower() for k in keywords)
            return hits, difflib.SequenceMatcher(None, text, p.lower()).ratio()

        # prefer prompts holding the most keywords, then the most similar text
        best_hits = max((score(p)[0] for p in library), default=0)
        pool = [p for p in library if score(p)[0] == best_hits] if best_hits else library
        closest = sorted(pool, key=score, reverse=True)[:3]
        suggestion = "; closest: " + ", ".join(repr(p) for p in closest) if closest else ""
        raise UserError(
            f"no prompt in {library_path} contains all keywords {keywords} of 'lib:{query}'"
            f"{suggestion}"
        )
    shown = ", ".join(repr(p) for p in matches[:10])
    more = f" and {len(matches) - 10} more" if len(matches) > 10 else ""
    raise UserError(
        f"{len(matches)} prompts in {library_path} contain all keywords {keywords} of "
        f"'lib:{query}': {shown}{more}; add a keyword to pick one"
    )


class PromptProcessor(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        # the prompt; "lib:kw1_kw2" picks the one library prompt containing every keyword
        prompt: str = "a hamburger"
        # each replaces the templated prompt of that view
        prompt_front: Optional[str] = None
        prompt_side: Optional[str] = None  # see prompt_front
        prompt_back: Optional[str] = None  # see prompt_front
        prompt_overhead: Optional[str] = None  # see prompt_front

        negative_prompt: str = ""  # the unconditional prompt (every view)
        pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"  # hub id or folder
        overhead_threshold: float = 60.0  # overhead where elevation > this (wins over the others)
        front_threshold: float = 45.0  # front where |azimuth| < this (degrees)
        back_threshold: float = 45.0  # back where |azimuth| > 180 - this; everything else is side
        # "front view of <prompt>" instead of "<prompt>, front view"
        view_dependent_prompt_front: bool = False
        use_cache: bool = True  # reuse embeddings saved under cache_dir (keyed by hash_prompt)
        # encode in a separate process, so the text encoder's memory is freed before training
        spawn: bool = True

        use_perp_neg: bool = False  # tell the guidance to use Perp-Neg
        # Perp-Neg weight curves a*exp(-b*r)+c as (a, b, c): side/back interpolation, weight of
        # the side negative
        perp_neg_f_sb: Tuple[float, float, float] = (1.0, 0.5, -0.606)
        # side/back interpolation: weight of the front negative
        perp_neg_f_fsb: Tuple[float, float, float] = (1.0, 0.5, 0.967)
        # front/side interpolation: weight of the front negative
        perp_neg_f_fs: Tuple[float, float, float] = (4.0, 0.5, -2.426)
        # front/side interpolation: weight of the side negative
        perp_neg_f_sf: Tuple[float, float, float] = (4.0, 0.5, -2.426)

        # JSON file {"dreamfusion": [...]} for "lib:" prompts; None: the shipped library
        prompt_library: Optional[str] = None
        # None: $THREESTUDIO_CACHE_DIR/text_embeddings or ~/.cache/threestudio/text_embeddings
        cache_dir: Optional[str] = None

    cfg: Config

    # ---- what a subclass provides ----

    @staticmethod
    def encode_prompts(
        pretrained_model_name_or_path: str,
        prompts: List[str],
        device: Union[str, torch.device],
        **options,
    ) -> Float[Tensor, "B N Nf"]:
        """Embeddings of ``prompts``, one row each. Runs in the encoding subprocess when
        ``spawn`` is on, so it must load (and drop) the encoder itself."""
        raise NotImplementedError

    def encoder_options(self) -> Dict[str, Any]:
        """Extra keyword arguments for ``encode_prompts`` (must be picklable)."""
        return {}

    @staticmethod
    def spawn_func(pretrained_model_name_or_path: str, prompts: List[str], cache_dir: str):
        """Hook of the original threestudio API: a subclass overriding it writes
        ``{hash_prompt(model, prompt)}.pt`` into ``cache_dir`` itself."""
        raise NotImplementedError

    # ---- building ----

    def configure(self) -> None:
        all_prompts = self.plan_prompts()
        self.warn_unknown_words(all_prompts)
        embeddings = self.prepare_text_embeddings(all_prompts)
        self.text_embeddings = embeddings[self.prompt][None]
        self.uncond_text_embeddings = embeddings[self.negative_prompt][None]
        self.text_embeddings_vd = torch.stack([embeddings[p] for p in self.prompts_vd])
        self.uncond_text_embeddings_vd = torch.stack(
            [embeddings[p] for p in self.negative_prompts_vd]
        )

    def plan_prompts(self) -> List[str]:
        """Resolves the prompt and builds the view-dependent prompts; returns every text to
        encode (the prompt, the negative prompt and one of each per view)."""
        self._cache_dir = model_cache_dir(
            os.path.expanduser(self.cfg.cache_dir or default_cache_dir()),
            self.cfg.pretrained_model_name_or_path,
        )
        self.directions = make_directions(
            self.cfg.view_dependent_prompt_front,
            self.cfg.front_threshold,
            self.cfg.back_threshold,
            self.cfg.overhead_threshold,
        )
        self.direction2idx = {d.name: i for i, d in enumerate(self.directions)}

        self.prompt = self.preprocess_prompt(self.cfg.prompt)
        self.negative_prompt = self.cfg.negative_prompt
        threestudio.info(
            f"Using prompt [{self.prompt}] and negative prompt [{self.negative_prompt}]"
        )

        self.prompts_vd = [
            getattr(self.cfg, f"prompt_{d.name}") or d.prompt(self.prompt) for d in self.directions
        ]
        self.negative_prompts_vd = [
            d.negative_prompt(self.negative_prompt) for d in self.directions
        ]
        threestudio.info(
            "Using view-dependent prompts "
            + " ".join(f"[{d.name}]:[{p}]" for d, p in zip(self.directions, self.prompts_vd))
        )

        return [self.prompt, self.negative_prompt] + self.prompts_vd + self.negative_prompts_vd

    def known_words(self) -> Optional[List[str]]:
        """The words the model knows, where its folder lists them in ``vocabulary.json``
        (``{"words": [...]}``); None for a model of open vocabulary."""
        path = os.path.join(self.cfg.pretrained_model_name_or_path, VOCABULARY_FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return list(json.load(f)["words"])

    def warn_unknown_words(self, prompts: List[str]) -> List[str]:
        """One warning line naming the words of ``prompts`` the model never saw, with the words
        it knows; returns the unknown words."""
        known = self.known_words()
        if known is None:
            return []
        vocabulary = {w.lower() for w in known}
        words = [w for p in prompts for w in re.findall(r"[a-z0-9']+", p.lower())]
        unknown = [w for w in dict.fromkeys(words) if w not in vocabulary]
        if unknown:
            threestudio.warn(
                f"'{self.cfg.pretrained_model_name_or_path}' never saw the word(s) "
                f"{', '.join(unknown)} in its training; it knows: {', '.join(known)}"
            )
        return unknown

    def preprocess_prompt(self, prompt: str) -> str:
        """``lib:kw1_kw2`` -> the one library prompt holding every keyword; others unchanged."""
        if not prompt.startswith("lib:"):
            return prompt
        path = self.cfg.prompt_library or default_prompt_library_path()
        candidate = find_library_prompt(prompt[4:], load_prompt_library(path), path)
        threestudio.info(f"Found prompt in library: {candidate}")
        return candidate

    def cache_path(self, prompt: str, cache_dir: Optional[str] = None) -> str:
        model = self.cfg.pretrained_model_name_or_path
        return os.path.join(cache_dir or self._cache_dir, f"{hash_prompt(model, prompt)}.pt")

    def prepare_text_embeddings(self, prompts: List[str]) -> Dict[str, Tensor]:
        """Embeddings of ``prompts`` on this process's device, computed once.

        With ``use_cache`` rank 0 encodes what the cache lacks while the other ranks wait;
        without it every rank encodes all prompts into a private temporary folder."""
        unique = list(dict.fromkeys(prompts))
        if self.cfg.use_cache:
            if get_rank() == 0:
                os.makedirs(self._cache_dir, exist_ok=True)
                missing = [p for p in unique if not os.path.exists(self.cache_path(p))]
                if missing:
                    self.encode_to_dir(missing, self._cache_dir)
                else:
                    threestudio.debug("Text embeddings found in cache; no encoding needed")
            barrier()
            return {p: self._load(p, self._cache_dir) for p in unique}
        with tempfile.TemporaryDirectory(prefix="threestudio-text-") as out_dir:
            self.encode_to_dir(unique, out_dir)
            return {p: self._load(p, out_dir) for p in unique}

    def load_from_cache(self, prompt: str) -> Tensor:
        """The cached embedding of ``prompt`` (name kept from the original threestudio API)."""
        return self._load(prompt, self._cache_dir)

    def _load(self, prompt: str, cache_dir: str) -> Tensor:
        path = self.cache_path(prompt, cache_dir)
        if not os.path.exists(path):
            raise UserError(
                f"text embedding of prompt [{prompt}] for model "
                f"'{self.cfg.pretrained_model_name_or_path}' is missing from {cache_dir} "
                "(rank 0 did not write it); rerun with system.prompt_processor.use_cache=false"
            )
        return torch.load(path, map_location=self.device, weights_only=True)

    def encode_to_dir(self, prompts: List[str], out_dir: str) -> None:
        """Encode ``prompts`` into ``out_dir``: in a subprocess when ``spawn`` (falling back to
        this process, with one warning, where a subprocess cannot be started)."""
        args = (
            type(self),
            self.cfg.pretrained_model_name_or_path,
            prompts,
            out_dir,
            self.encoder_options(),
        )
        threestudio.info(
            f"Encoding {len(prompts)} prompt(s) with '{self.cfg.pretrained_model_name_or_path}'"
        )
        if not (self.cfg.spawn and self._encode_in_subprocess(*args)):
            _encode_to_dir(*args)
        cleanup()

    def _encode_in_subprocess(
        self, cls: type, model: str, prompts: List[str], out_dir: str, options: Dict[str, Any]
    ) -> bool:
        """False where no subprocess could be started; raises where the subprocess failed."""
        global _warned_no_spawn
        with tempfile.TemporaryDirectory(prefix="threestudio-spawn-") as tmp:
            error_path = os.path.join(tmp, "error.json")
            try:
                ctx = mp.get_context("spawn")
                process = ctx.Process(
                    target=_encode_worker,
                    args=(cls, model, prompts, out_dir, options, error_path),
                )
                process.start()
            except Exception as e:  # unpicklable class, daemonic parent, no semaphores ...
                if not _warned_no_spawn:
                    threestudio.warn(
                        f"cannot encode prompts in a separate process ({type(e).__name__}: "
                        f"{_one_line(e)}); encoding in this process instead"
                    )
                    _warned_no_spawn = True
                return False
            process.join()
            if process.exitcode == 0:
                return True
            error = {}
            if os.path.exists(error_path):
                with open(error_path) as f:
                    error = json.load(f)
        if error.get("missing_model"):
            raise MissingModelError(error["message"])
        if error.get("user_error"):
            raise UserError(error["message"])
        cause = (
            f"{error['type']}: {error['message']}"
            if error
            else f"the process exited with code {process.exitcode}"
        )
        raise UserError(
            f"encoding prompts with '{model}' in a separate process failed ({cause}); set "
            "system.prompt_processor.spawn=false to see the full traceback"
        )

    def __call__(self) -> PromptProcessorOutput:
        return PromptProcessorOutput(
            text_embeddings=self.text_embeddings,
            uncond_text_embeddings=self.uncond_text_embeddings,
            text_embeddings_vd=self.text_embeddings_vd,
            uncond_text_embeddings_vd=self.uncond_text_embeddings_vd,
            directions=self.directions,
            direction2idx=self.direction2idx,
            use_perp_neg=self.cfg.use_perp_neg,
            perp_neg_f_sb=tuple(self.cfg.perp_neg_f_sb),
            perp_neg_f_fsb=tuple(self.cfg.perp_neg_f_fsb),
            perp_neg_f_fs=tuple(self.cfg.perp_neg_f_fs),
            perp_neg_f_sf=tuple(self.cfg.perp_neg_f_sf),
            prompt=self.prompt,
            prompts_vd=list(self.prompts_vd),
        )


def encode_ahead(processors: List[Tuple[str, Any]]) -> int:
    """For a batch of trials (threestudio/batch.py): encode into the embedding cache, in one go
    per text encoder (one load, one subprocess with ``spawn``), every text the prompt processors
    of ``processors`` (registered name, config) will ask for, so each trial finds its embeddings
    cached. Processors with their own ``configure``, without ``use_cache``, or whose prompt does
    not resolve (their trial reports it) are left to encode for themselves. Returns how many
    texts were encoded."""
    import logging

    from threestudio.utils.config import parse_structured

    groups: Dict[tuple, Tuple[PromptProcessor, List[str]]] = {}
    quiet = logging.getLogger("threestudio")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # planning logs what each trial logs again
    try:
        for name, cfg in processors:
            cls = threestudio.find(name)
            if not (isinstance(cls, type) and issubclass(cls, PromptProcessor)):
                continue
            if cls.configure is not PromptProcessor.configure:
                continue
            processor = cls.__new__(cls)
            try:
                processor.cfg = parse_structured(cls.Config, cfg)
                processor.device = get_device()
                if not processor.cfg.use_cache:
                    continue
                texts = processor.plan_prompts()
            except UserError:
                continue
            missing = [
                p for p in dict.fromkeys(texts) if not os.path.exists(processor.cache_path(p))
            ]
            key = (
                cls,
                processor.cfg.pretrained_model_name_or_path,
                processor._cache_dir,
                repr(processor.encoder_options()),
                processor.cfg.spawn,
            )
            groups.setdefault(key, (processor, []))[1].extend(missing)
    finally:
        quiet.setLevel(level)
    encoded = 0
    for processor, missing in groups.values():
        missing = list(dict.fromkeys(missing))
        if missing:
            os.makedirs(processor._cache_dir, exist_ok=True)
            processor.encode_to_dir(missing, processor._cache_dir)
            encoded += len(missing)
    return encoded
