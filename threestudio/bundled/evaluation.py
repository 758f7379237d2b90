"""R-precision of text-to-3D results: does a trial's test views pick out its own prompt?

For every rendered test view, each prompt of a prompt set gets a score; the view counts as a hit
when the trial's prompt scores highest. R-precision (R = 1) is the fraction of hits over the
views (DreamFields, DreamFusion). Two scorers:

- ``clip``: cosine similarity of CLIP image and text embeddings (a hub id or a local folder of a
  ``CLIPModel`` with its tokenizer), for results made with real models;
- ``classifier``: the bundled shape-and-colour classifier (``load/tiny-shapes/classifier``),
  for results in the bundled model's world, whose prompts are "a <colour> <shape>".

Command line (prints one line per trial and writes ``evaluation.json`` into each trial folder):

    python -m threestudio.bundled.evaluation outputs/quickstart/a_blue_cone@...
    python -m threestudio.bundled.evaluation TRIAL --scorer clip --clip-model openai/clip-vit-base-patch32
"""

import argparse
import glob
import json
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

from threestudio.bundled.classifier import ShapeColorClassifier
from threestudio.bundled.shapes import COLORS, SHAPES, all_prompts
from threestudio.bundled.tiny_model import BUNDLED_MODEL_PATH
from threestudio.models.prompt_processors.base import (
    default_prompt_library_path,
    find_library_prompt,
    load_prompt_library,
)
from threestudio.utils.errors import UserError
from threestudio.utils.typing import Dict, Float, List, Optional, Tensor, Tuple

EVALUATION_FILE = "evaluation.json"
# OpenAI CLIP's pixel statistics, used when a model folder has no preprocessor_config.json
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ============ reading a trial ============


def find_test_views(trial_dir: str) -> Tuple[int, List[str]]:
    """(step, image paths) of the latest ``save/it<step>-test`` folder of a trial."""
    folders = []
    for path in glob.glob(os.path.join(trial_dir, "save", "it*-test")):
        match = re.fullmatch(r"it(\d+)-test", os.path.basename(path))
        if match and os.path.isdir(path):
            folders.append((int(match.group(1)), path))
    if not folders:
        raise UserError(
            f"{trial_dir}: no test views (save/it<step>-test/); run the trial's test stage first "
            "(python launch.py --config <trial>/configs/parsed.yaml --test "
            "resume=<trial>/ckpts/last.ckpt)"
        )
    step, folder = max(folders)
    paths = glob.glob(os.path.join(folder, "*.png"))
    paths.sort(key=lambda p: int(re.sub(r"\D", "", os.path.basename(p)) or 0))
    if not paths:
        raise UserError(f"{folder}: no test images")
    return step, paths


def read_views(paths: List[str]) -> List[np.ndarray]:
    """The test images as uint8 arrays [H, W, C] (panels side by side: rgb | normal | opacity)."""
    import imageio.v2 as imageio

    views = [np.asarray(imageio.imread(path)) for path in paths]
    return [v[..., None] if v.ndim == 2 else v for v in views]


def load_rgb_views(views: List[np.ndarray]) -> Float[Tensor, "B H W 3"]:
    """The rgb panel of each test image: the leftmost square."""
    rgb = [torch.from_numpy(v[:, : v.shape[0], :3].copy()) for v in views]
    return torch.stack(rgb).float() / 255.0


def share_in_frame(views: List[np.ndarray], threshold: float = 0.5) -> Optional[float]:
    """The share of test views whose object stays inside the frame: the opacity panel (the
    rightmost square of a view with more than one panel) is below ``threshold`` on the whole
    outermost ring of pixels. None when the views have a single panel (no opacity)."""
    inside = []
    for view in views:
        h, w = view.shape[:2]
        if w < 2 * h:
            return None
        opacity = view[:, w - h :, 0].astype(np.float32) / 255.0
        ring = np.concatenate([opacity[0], opacity[-1], opacity[:, 0], opacity[:, -1]])
        inside.append(bool(ring.max() < threshold))
    return sum(inside) / len(inside)


def trial_prompt(trial_dir: str) -> str:
    """The prompt a trial was trained on, from its ``configs/parsed.yaml``."""
    from omegaconf import OmegaConf

    path = os.path.join(trial_dir, "configs", "parsed.yaml")
    if not os.path.exists(path):
        raise UserError(f"{trial_dir}: no configs/parsed.yaml; is this a trial folder?")
    cfg = OmegaConf.load(path)
    prompt = OmegaConf.select(cfg, "system.prompt_processor.prompt")
    if prompt is None:
        raise UserError(f"{path}: no system.prompt_processor.prompt; pass --prompt")
    if str(prompt).startswith("lib:"):
        library = OmegaConf.select(cfg, "system.prompt_processor.prompt_library")
        library = library or default_prompt_library_path()
        prompt = find_library_prompt(str(prompt)[4:], load_prompt_library(library), library)
    return str(prompt)


# ============ scores ============


def r_precision(scores: Float[Tensor, "B P"], target: int) -> float:
    """Fraction of views (rows) whose highest-scoring prompt is ``target``."""
    return (scores.argmax(dim=-1) == target).float().mean().item()


class ClassifierScorer:
    """log p(prompt | image) from the bundled shape-and-colour classifier; prompts must be
    "a <colour> <shape>" of the bundled world."""

    name = "classifier"

    def __init__(self, folder: Optional[str] = None) -> None:
        self.folder = folder or os.path.join(BUNDLED_MODEL_PATH, "classifier")
        if not os.path.exists(os.path.join(self.folder, "model.safetensors")):
            raise UserError(
                f"no classifier in {self.folder}; rebuild it with "
                "python scripts/train_tiny_model.py"
            )
        self.model = ShapeColorClassifier.load(self.folder)
        self.index = {p: i for i, p in enumerate(all_prompts())}

    def default_prompts(self) -> List[str]:
        return all_prompts()

    @torch.no_grad()
    def __call__(self, images: Float[Tensor, "B H W 3"], prompts: List[str]) -> Tensor:
        unknown = [p for p in prompts if p not in self.index]
        if unknown:
            raise UserError(
                f"the classifier scorer knows only 'a <colour> <shape>' prompts (colours: "
                f"{', '.join(COLORS)}; shapes: {', '.join(SHAPES)}), not: {'; '.join(unknown)}; "
                "use --scorer clip for other prompts"
            )
        log_probs = self.model.prompt_log_probs(images)
        return log_probs[:, [self.index[p] for p in prompts]]


class CLIPScorer:
    """Cosine similarity of CLIP image and text embeddings."""

    name = "clip"

    def __init__(self, model: str, device: str = "cpu") -> None:
        from transformers import AutoTokenizer, CLIPModel

        from threestudio.utils.hub import load_pretrained

        self.model_name = model
        self.device = torch.device(device)
        self.model = load_pretrained(CLIPModel, model).to(self.device).eval()
        self.tokenizer = load_pretrained(AutoTokenizer, model)
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        config = os.path.join(model, "preprocessor_config.json")
        if os.path.isfile(config):
            with open(config) as f:
                pre = json.load(f)
            self.mean = tuple(pre.get("image_mean", self.mean))
            self.std = tuple(pre.get("image_std", self.std))

    def default_prompts(self) -> List[str]:
        return load_prompt_library(default_prompt_library_path())

    @torch.no_grad()
    def image_features(self, images: Float[Tensor, "B H W 3"]) -> Float[Tensor, "B D"]:
        size = self.model.config.vision_config.image_size
        x = images.permute(0, 3, 1, 2).to(self.device)
        x = F.interpolate(x, (size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.as_tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.std, device=self.device).view(1, 3, 1, 1)
        out = self.model.get_image_features(pixel_values=(x - mean) / std)
        out = getattr(out, "pooler_output", out)
        return F.normalize(out, dim=-1)

    @torch.no_grad()
    def text_features(self, prompts: List[str]) -> Float[Tensor, "P D"]:
        tokens = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        out = self.model.get_text_features(
            input_ids=tokens.input_ids.to(self.device),
            attention_mask=tokens.attention_mask.to(self.device),
        )
        out = getattr(out, "pooler_output", out)
        return F.normalize(out, dim=-1)

    def __call__(self, images: Float[Tensor, "B H W 3"], prompts: List[str]) -> Tensor:
        return self.image_features(images) @ self.text_features(prompts).T


# ============ a trial ============


def evaluate_trial(
    trial_dir: str,
    scorer,
    prompts: Optional[List[str]] = None,
    prompt: Optional[str] = None,
    write: bool = True,
) -> Dict[str, object]:
    """Scores a trial's latest test views against ``prompts`` (default: the scorer's set; the
    trial's prompt is added when missing) and writes ``evaluation.json`` into the trial."""
    prompt = prompt or trial_prompt(trial_dir)
    prompts = list(dict.fromkeys(prompts or scorer.default_prompts()))
    if prompt not in prompts:
        prompts.append(prompt)
    step, paths = find_test_views(trial_dir)
    views = read_views(paths)
    scores = scorer(load_rgb_views(views), prompts)
    target = prompts.index(prompt)
    top = scores.argmax(dim=-1).tolist()
    counts: Dict[str, int] = {}
    for i in top:
        counts[prompts[i]] = counts.get(prompts[i], 0) + 1
    result = {
        "trial": os.path.abspath(trial_dir),
        "prompt": prompt,
        "scorer": scorer.name,
        "model": getattr(scorer, "model_name", getattr(scorer, "folder", None)),
        "step": step,
        "n_views": len(paths),
        "n_prompts": len(prompts),
        "r_precision": r_precision(scores, target),
        "top_prompts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    }
    in_frame = share_in_frame(views)
    if in_frame is not None:
        result["in_frame"] = in_frame
    if scorer.name == "classifier":
        # the classifier's probability of the right shape and colour, per view (its log
        # probabilities are normalised over all 30 prompts, whatever ``prompts`` holds)
        p = scores[:, target].exp()
        result.update(confidence=p.mean().item(), min_view_confidence=p.min().item())
    if write:
        path = os.path.join(trial_dir, EVALUATION_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(path + ".tmp", path)
    return result


def read_prompts(path: str) -> List[str]:
    """A prompt set: a JSON list, a JSON object of lists (the prompt library) or text lines."""
    if not os.path.isfile(path):
        raise UserError(f"--prompts: no file {path}")
    with open(path) as f:
        text = f.read()
    if path.endswith(".json"):
        data = json.loads(text)
        if isinstance(data, dict):
            return [p for v in data.values() for p in v]
        return list(data)
    return [line.strip() for line in text.splitlines() if line.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m threestudio.bundled.evaluation",
        description="R-precision of trials' test views against a prompt set.",
    )
    p.add_argument("trials", nargs="+", help="trial folders (outputs/<name>/<tag>@<time>)")
    p.add_argument("--scorer", choices=("classifier", "clip"), default="classifier")
    p.add_argument("--classifier", default=None, help="classifier folder (default: bundled)")
    p.add_argument("--clip-model", default="openai/clip-vit-base-patch32")
    p.add_argument("--prompts", default=None, help="prompt set file (default: the scorer's)")
    p.add_argument("--prompt", default=None, help="the trials' prompt (default: from the trial)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.scorer == "clip":
            scorer = CLIPScorer(args.clip_model, args.device)
        else:
            scorer = ClassifierScorer(args.classifier)
        prompts = read_prompts(args.prompts) if args.prompts else None
        results = []
        for trial in args.trials:
            r = evaluate_trial(trial, scorer, prompts, args.prompt)
            results.append(r)
            best = next(iter(r["top_prompts"]))
            print(
                f"{trial}: R-precision {r['r_precision']:.3f} over {r['n_views']} views, "
                f"{r['n_prompts']} prompts ({scorer.name}); prompt [{r['prompt']}], most "
                f"views read as [{best}]"
                + (
                    f"; classifier confidence in the prompt {r['confidence']:.3f} (mean), "
                    f"{r['min_view_confidence']:.3f} (lowest view)"
                    if "confidence" in r
                    else ""
                )
                + (
                    f"; object inside the frame in {100 * r['in_frame']:.0f}% of views"
                    if "in_frame" in r
                    else ""
                )
            )
        if len(results) > 1:
            mean = sum(r["r_precision"] for r in results) / len(results)
            print(f"mean R-precision over {len(results)} trials: {mean:.3f}")
    except UserError as e:
        if args.verbose:
            raise
        print(f"[ERROR] {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
