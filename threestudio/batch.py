"""Many prompts in one launch: every (prompt, seed) is its own trial, the models load once.

    python launch.py --config configs/quickstart.yaml --train \\
        system.prompt_processor.prompt="[a blue cone,a red cube]" --seeds 0,1
    python launch.py --config configs/quickstart.yaml --train --prompts prompts.txt
    python launch.py --config configs/quickstart.yaml --train --prompts prompts.txt \\
        --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT

The prompts come from a list-valued ``system.prompt_processor.prompt`` (on the command line or in
the YAML file) or from ``--prompts FILE`` (one prompt per line; blank lines and lines starting
with ``#`` are skipped; ``lib:`` keywords are allowed). The seeds from ``--seeds 0,1`` or
``seed=[0,1]`` (default: the config's one seed). The items are every prompt with every seed,
prompt by prompt; ``--shard i/n`` keeps items i, i+n, i+2n, ... for a Slurm job array or one Ray
task per shard.

Each item is an ordinary ``--train`` launch with the prompt and seed as overrides, so it gets the
trial folder a single launch would (``exp_root_dir/name/<tag>@<timestamp>``); items sharing a
prompt get ``-1``, ``-2`` ... after the timestamp, so trials stay distinct within one second and
across parallel workers. Pretrained models are loaded once per process for the whole batch
(``threestudio.utils.hub.shared_pretrained_models``). With several GPUs in ``--gpu`` (or
``--workers N``) the items are dealt to one worker process per device, each a launch of this
command on its share; on the CPU they run one after another in this process.

An item that fails (a bad ``lib:`` keyword, a non-finite stop, a crash) is reported with one line
and the rest go on; the exit status is 1 when any item failed. At the end a summary table
(prompt, seed, trial folder, time, status, R-precision with ``--scorer``) is printed and written to
``exp_root_dir/name/batch-<timestamp>.md`` (and ``.csv`` beside it).
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime

import threestudio
from threestudio.utils.config import _load_yaml, _parse_cli_args
from threestudio.utils.errors import UserError
from threestudio.utils.typing import Any, Callable, Dict, List, Optional, Tuple

PROMPT_KEY = "system.prompt_processor.prompt"
SEED_KEY = "seed"
BATCH_FLAGS = ("prompts", "seeds", "shard", "workers", "scorer")


# ============ what to run ============


@dataclass
class BatchItem:
    index: int  # position among all items of the batch (before sharding)
    prompt: Optional[str]  # None: the config's own prompt
    seed: Optional[int]  # None: the config's own seed
    repeat: int = 0  # how many earlier items have the same prompt (the trial name's suffix)
    shown_seed: str = ""  # the seed the trial runs with, for the summary


@dataclass
class ItemResult:
    index: int
    prompt: str
    seed: str
    trial_dir: str = ""  # empty where the failed item left no trial
    seconds: float = 0.0
    status: str = "not run"  # ok, failed, not run
    message: str = ""  # the failure, one line
    r_precision: Optional[float] = None


def parse_shard(spec: str) -> Tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(part) for part in spec.split("/"))
    except ValueError:
        i, n = -1, 0
    if not (n >= 1 and 0 <= i < n):
        raise UserError(
            f"--shard: expected i/n with 0 <= i < n (e.g. --shard 0/4, or "
            f"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), got '{spec}'"
        )
    return i, n


def parse_seeds(text: str) -> List[int]:
    """``"0,1,2"`` -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise UserError(f"--seeds: expected integers separated by commas (e.g. 0,1), got '{text}'")
    return seeds


def read_prompt_file(path: str) -> List[str]:
    """One prompt per line; blank lines and lines starting with ``#`` are skipped."""
    if not os.path.isfile(path):
        raise UserError(f"--prompts: file not found: {path}")
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise UserError(f"--prompts: {path} holds no prompt (one a line; # starts a comment)")
    return prompts


def _list_of(value: Any, key: str, kind: type) -> Optional[list]:
    """``value`` as a list when it is one (an OmegaConf ListConfig included), else None."""
    from omegaconf import ListConfig, OmegaConf

    if not isinstance(value, (list, ListConfig)):
        return None
    items = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
    try:
        items = [kind(v) for v in items]
    except (TypeError, ValueError):
        raise UserError(f"{key}: every entry must be a {kind.__name__}, got {items!r}") from None
    if not items:
        raise UserError(f"{key}: the list is empty")
    return items


def _select(conf: Any, key: str) -> Any:
    """``conf``'s value at dotted ``key``; None where absent or not resolvable on its own (an
    interpolation of a key from elsewhere: not a list then)."""
    from omegaconf import OmegaConf

    return OmegaConf.select(conf, key, default=None, throw_on_resolution_failure=False)


def _uses_timestamp(args, extras: List[str]) -> bool:
    """use_timestamp of the command line, else of the YAML file, else the default (true)."""
    value = _select(_parse_cli_args(extras), "use_timestamp")
    if value is None and os.path.isfile(args.config):
        value = _select(_load_yaml(args.config), "use_timestamp")
    return value is None or bool(value)


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].strip() if "=" in arg else ""


@dataclass
class BatchRequest:
    items: List[BatchItem]  # this launch's items (after --shard)
    n_total: int  # items before sharding
    extras: List[str]  # the overrides every item shares (prompt and seed lists removed)
    shard: Optional[Tuple[int, int]] = None


def batch_request(args: Any, extras: List[str]) -> Optional[BatchRequest]:
    """The batch this launch asks for, or None for a single launch (no prompt or seed list, no
    ``--prompts``/``--seeds``/``--shard``)."""
    cli = _parse_cli_args(extras)
    cli_prompt = _select(cli, PROMPT_KEY)
    cli_seed = _select(cli, SEED_KEY)
    prompts = _list_of(cli_prompt, PROMPT_KEY, str)
    seeds = _list_of(cli_seed, SEED_KEY, int)
    if prompts is None and cli_prompt is None and os.path.isfile(args.config):
        # a list in the YAML file itself
        prompts = _list_of(_select(_load_yaml(args.config), PROMPT_KEY), PROMPT_KEY, str)
    if args.prompts:
        if cli_prompt is not None:
            raise UserError(
                f"give the prompts either with --prompts or with {PROMPT_KEY}=..., not both"
            )
        prompts = read_prompt_file(args.prompts)
    if args.seeds:
        if cli_seed is not None:
            raise UserError("give the seeds either with --seeds or with seed=..., not both")
        seeds = parse_seeds(args.seeds)
    wants = prompts is not None or seeds is not None or args.shard or args.batch_worker
    if not wants:
        return None
    if not args.train:
        raise UserError("several prompts or seeds (or --shard) run with --train only")
    if cfg_resumes(extras):
        raise UserError("resume= continues one trial; it cannot be given to a batch of prompts")

    shown_seed = ""
    if seeds is None:  # the config's own seed, shown in the summary
        default = cli_seed
        if default is None and os.path.isfile(args.config):
            default = _select(_load_yaml(args.config), SEED_KEY)
        shown_seed = str(0 if default is None else default)
    drop = {k for k, v in ((PROMPT_KEY, prompts), (SEED_KEY, seeds)) if v is not None}
    shared = [a for a in extras if _override_key(a) not in drop]
    items, seen = [], {}
    for prompt in prompts or [None]:
        for seed in seeds or [None]:
            shown = str(seed) if seed is not None else shown_seed
            items.append(BatchItem(len(items), prompt, seed, seen.get(prompt, 0), shown))
            seen[prompt] = seen.get(prompt, 0) + 1
    n_total = len(items)
    shard = parse_shard(args.shard) if args.shard else None
    if shard is not None:
        items = items[shard[0] :: shard[1]]
    if args.batch_worker:
        k, n = parse_shard(args.batch_worker)
        items = items[k::n]
    return BatchRequest(items, n_total, shared, shard)


def cfg_resumes(extras: List[str]) -> bool:
    return any(_override_key(a) == "resume" and a.split("=", 1)[1].strip() for a in extras)


# ============ running ============


@dataclass
class Launcher:
    """What the batch needs from launch.py: one trial's run, the clean-up of a failed trial
    and the state a run leaves (its trial folder)."""

    run_one: Callable[..., int]  # run(args, extras) -> exit status; args.item_overrides
    remove_unfinished_trial: Callable[[], None]
    state: Dict[str, Any]
    script: str  # launch.py, for worker processes
    argv: List[str] = field(default_factory=list)  # this launch's arguments, for workers
    load_extensions: Callable[[], Any] = lambda: None  # custom/ modules, before configs are read


def item_overrides(item: BatchItem, timestamp: str) -> Dict[str, Any]:
    overrides: Dict[str, Any] = {}
    if item.prompt is not None:
        overrides["system"] = {"prompt_processor": {"prompt": item.prompt}}
    if item.seed is not None:
        overrides["seed"] = item.seed
    overrides["timestamp"] = timestamp + (f"-{item.repeat}" if item.repeat else "")
    return overrides


def encode_prompts_ahead(args, request: BatchRequest, launcher: Launcher) -> None:
    """Every item's text embeddings into the cache before the first trial, one text-encoder
    load for them all (``prompt_processors.base.encode_ahead``). A failure here is left to
    the items: each then reports its own."""
    from threestudio.models.prompt_processors.base import encode_ahead
    from threestudio.utils.config import load_config

    launcher.load_extensions()
    processors = []
    for item in request.items:
        try:
            overrides = {**item_overrides(item, ""), "timestamp": ""}
            cfg = load_config(args.config, cli_args=request.extras, **overrides)
        except UserError:
            continue
        name = cfg.system.get("prompt_processor_type")
        if name:
            processors.append((name, cfg.system.get("prompt_processor") or {}))
    try:
        encoded = encode_ahead(processors)
    except Exception as e:
        threestudio.warn(f"batch: prompts not encoded ahead ({_one_line(e)}); each trial encodes")
        return
    if encoded:
        threestudio.info(f"batch: encoded {encoded} text(s) of {len(processors)} item(s) ahead")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def run_items(args, request: BatchRequest, launcher: Launcher, scorer=None) -> List[ItemResult]:
    """Run the items one after another in this process, sharing the loaded models."""
    from threestudio.utils.callbacks import QuitRequested, StopOnInterrupt
    from threestudio.utils.hub import shared_pretrained_models
    from threestudio.utils.misc import cleanup

    use_timestamp = _uses_timestamp(args, request.extras)
    results = [
        ItemResult(it.index, it.prompt or "(config's)", it.shown_seed) for it in request.items
    ]
    saved_env = os.environ.get("THREESTUDIO_TIMESTAMP")
    with shared_pretrained_models() as models:
        encode_prompts_ahead(args, request, launcher)
        models.end_trial()
        StopOnInterrupt.stop_requested = False
        for item, result in zip(request.items, results):
            threestudio.info(
                f"batch item {item.index + 1}/{request.n_total}: prompt [{result.prompt}]"
                + (f", seed {item.seed}" if item.seed is not None else "")
            )
            launcher.state.clear()
            timestamp = datetime.now().strftime("@%Y%m%d-%H%M%S")
            overrides = item_overrides(item, timestamp)
            if not use_timestamp:
                overrides.pop("timestamp")
            start = time.perf_counter()
            try:
                item_args = argparse.Namespace(**{**vars(args), "item_overrides": overrides})
                launcher.run_one(item_args, request.extras)
                result.status = "ok"
            except (KeyboardInterrupt, QuitRequested):
                result.status, result.message = "failed", "interrupted"
                launcher.remove_unfinished_trial()
                result.seconds = time.perf_counter() - start
                _set_trial(result, launcher.state)
                threestudio.warn("interrupted: the remaining items are not run")
                break
            except Exception as e:
                result.status = "failed"
                result.message = str(e) if isinstance(e, UserError) else _one_line(e)
                result.message = " ".join(result.message.split())
                if args.verbose or not isinstance(e, UserError):
                    traceback.print_exc()
                print(f"error: item {item.index + 1} [{result.prompt}]: {result.message}",
                      file=sys.stderr)  # fmt: skip
                launcher.remove_unfinished_trial()
            finally:
                result.seconds = result.seconds or time.perf_counter() - start
                models.end_trial()
                if saved_env is None:
                    os.environ.pop("THREESTUDIO_TIMESTAMP", None)
                else:
                    os.environ["THREESTUDIO_TIMESTAMP"] = saved_env
                cleanup()
            _set_trial(result, launcher.state)
            if result.status == "ok" and scorer is not None:
                result.r_precision = score_trial(scorer, result.trial_dir)
            if StopOnInterrupt.stop_requested:
                # Ctrl-C stopped this trial's training (it was tested and saved as usual)
                threestudio.warn("Ctrl-C: the remaining items are not run")
                break
        threestudio.info(
            f"batch: {models.loads} pretrained model(s) loaded, {models.reuses} reused by later items"
        )
    return results


def _set_trial(result: ItemResult, state: Dict[str, Any]) -> None:
    trial = state.get("trial_dir") or ""
    result.trial_dir = trial if trial and os.path.isdir(trial) else ""


def make_scorer(args) -> Any:
    """The R-precision scorer of ``--scorer`` (threestudio.bundled.evaluation), or None."""
    if not args.scorer:
        return None
    from threestudio.bundled import evaluation

    if args.scorer == "clip":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        return evaluation.CLIPScorer(args.scorer_model or "openai/clip-vit-base-patch32", device)
    return evaluation.ClassifierScorer(args.scorer_model)


def score_trial(scorer, trial_dir: str) -> Optional[float]:
    from threestudio.bundled import evaluation

    try:
        return float(evaluation.evaluate_trial(trial_dir, scorer)["r_precision"])
    except UserError as e:
        threestudio.warn(f"{trial_dir}: no R-precision: {e}")
        return None


# ============ workers: one process per device ============


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def n_workers(args) -> int:
    """--workers, else one per GPU listed in --gpu where CUDA is available, else 1."""
    if args.workers:
        if args.workers < 1:
            raise UserError(f"--workers: expected a positive number, got {args.workers}")
        return args.workers
    import torch

    if not torch.cuda.is_available():
        return 1
    return max(1, len([g for g in args.gpu.split(",") if g.strip()]))


def _strip_flags(argv: List[str], flags: Tuple[str, ...]) -> List[str]:
    """``argv`` without ``--flag value`` / ``--flag=value`` for each of ``flags``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


def run_workers(args, request: BatchRequest, launcher: Launcher, workers: int) -> List[ItemResult]:
    """Deal the items to ``workers`` processes (this launch with ``--batch-worker k/n``); each
    GPU of ``--gpu`` gets its own (round robin), made its process's only visible device."""
    import torch

    gpus = [g.strip() for g in args.gpu.split(",") if g.strip()] or ["0"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = visible.split(",") if visible else None
    if visible is not None and torch.cuda.is_available():
        beyond = [g for g in gpus if not g.isdigit() or int(g) >= len(visible)]
        if beyond:
            raise UserError(
                f"--gpu {args.gpu}: {', '.join(beyond)} is not an index into "
                f"CUDA_VISIBLE_DEVICES={','.join(visible)}"
            )
    base = _strip_flags(launcher.argv, ("--gpu", "--workers", "--batch-worker", "--batch-results"))
    procs = []
    with tempfile.TemporaryDirectory(prefix="threestudio-batch-") as tmp:
        for k in range(workers):
            env = dict(os.environ)
            cmd = [sys.executable, launcher.script, *base, "--batch-worker", f"{k}/{workers}"]
            cmd += ["--batch-results", os.path.join(tmp, f"{k}.json")]
            if torch.cuda.is_available():
                gpu = gpus[k % len(gpus)]
                env["CUDA_VISIBLE_DEVICES"] = visible[int(gpu)] if visible else gpu
                cmd += ["--gpu", "0"]
            threestudio.info(
                f"batch worker {k}: {len(request.items[k::workers])} item(s)"
                + (f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if torch.cuda.is_available() else "")
            )
            procs.append(subprocess.Popen(cmd, env=env))
        codes = [p.wait() for p in procs]
        results: Dict[int, ItemResult] = {}
        for k, code in enumerate(codes):
            path = os.path.join(tmp, f"{k}.json")
            if os.path.isfile(path):
                with open(path) as f:
                    for row in json.load(f):
                        results[row["index"]] = ItemResult(**row)
            elif code != 0:
                threestudio.warn(f"batch worker {k} exited with status {code} and no results")
    merged = []
    for item in request.items:
        merged.append(
            results.get(item.index)
            or ItemResult(
                item.index,
                item.prompt or "(config's)",
                item.shown_seed,
                status="failed",
                message="its worker process ended without a result",
            )
        )
    return merged


# ============ summary ============

COLUMNS = ("#", "prompt", "seed", "trial", "time (s)", "status", "R-precision")


def summary_rows(results: List[ItemResult]) -> List[List[str]]:
    rows = []
    for r in results:
        status = r.status if not r.message else f"{r.status}: {r.message}"
        rp = "" if r.r_precision is None else f"{r.r_precision:.3f}"
        rows.append(
            [str(r.index + 1), r.prompt, r.seed, r.trial_dir or "-", f"{r.seconds:.1f}", status, rp]
        )
    return rows


def summary_markdown(results: List[ItemResult]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in summary_rows(results)]
    ok = sum(r.status == "ok" for r in results)
    total = sum(r.seconds for r in results)
    lines += ["", f"{ok} of {len(results)} trials ok; {total:.1f} s in the trials"]
    return "\n".join(lines) + "\n"


def write_summary(results: List[ItemResult], exp_dir: str, shard) -> str:
    """Writes ``exp_dir/batch-<timestamp>[-shard-i-of-n].md`` and ``.csv``; returns the .md path."""
    os.makedirs(exp_dir, exist_ok=True)
    stem = "batch-" + datetime.now().strftime("%Y%m%d-%H%M%S")
    if shard is not None:
        stem += f"-shard-{shard[0]}-of-{shard[1]}"
    path = os.path.join(exp_dir, stem)
    for i in range(1, 1000):
        if not os.path.exists(path + ".md"):
            break
        path = os.path.join(exp_dir, f"{stem}-{i}")
    with open(path + ".md", "w") as f:
        f.write(summary_markdown(results))
    with open(path + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(summary_rows(results))
    return path + ".md"


def experiment_dir(args, request: BatchRequest) -> str:
    """exp_root_dir/name of the config, where the summary goes."""
    from threestudio.utils.config import load_config

    overrides = {"timestamp": ""}
    if request.items:
        overrides = {**item_overrides(request.items[0], ""), "timestamp": ""}
    return load_config(args.config, cli_args=request.extras, **overrides).exp_dir


# ============ entry point ============


def run_batch(args, request: BatchRequest, launcher: Launcher) -> int:
    """Runs the batch; 0 when every item succeeded, 1 otherwise."""
    shard = f" (shard {request.shard[0]}/{request.shard[1]})" if request.shard else ""
    threestudio.info(f"batch: {len(request.items)} of {request.n_total} item(s){shard}")
    if args.batch_worker:
        results = run_items(args, request, launcher, make_scorer(args))
        with open(args.batch_results + ".tmp", "w") as f:
            json.dump([asdict(r) for r in results], f)
        os.replace(args.batch_results + ".tmp", args.batch_results)
        return 0 if all(r.status == "ok" for r in results) else 1

    exp_dir = experiment_dir(args, request)
    workers = min(n_workers(args), max(1, len(request.items)))
    # several GPUs for one trial in this process would be DDP, which re-runs the command once
    # per device: with several GPUs every trial runs in a worker process on one GPU
    several_gpus = len([g for g in args.gpu.split(",") if g.strip()]) > 1 and _cuda()
    if workers > 1 or several_gpus:
        encode_prompts_ahead(args, request, launcher)  # once for all workers
        results = run_workers(args, request, launcher, workers)
    else:
        results = run_items(args, request, launcher, make_scorer(args))
    table = summary_markdown(results)
    path = write_summary(results, exp_dir, request.shard)
    print("\n" + table + f"summary: {path}", flush=True)
    failed = [r for r in results if r.status != "ok"]
    if failed:
        print(f"error: {len(failed)} of {len(results)} batch item(s) failed", file=sys.stderr)
    return 1 if failed else 0
