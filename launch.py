"""threestudio's command line.

    python launch.py --config configs/dreamfusion.yaml --train system.prompt_processor.prompt="a hamburger"
    python launch.py --config TRIAL/configs/parsed.yaml --train resume=TRIAL/ckpts/last.ckpt
    python launch.py --config TRIAL/configs/parsed.yaml --test resume=TRIAL/ckpts/last.ckpt
    python launch.py --config TRIAL/configs/parsed.yaml --export resume=TRIAL/ckpts/last.ckpt

Every argument after the flags is a dotted config override (``key.subkey=value``).
"""

import argparse
import errno
import importlib
import logging
import os
import shutil
import sys
import traceback
from datetime import datetime

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


class ColoredFilter(logging.Filter):
    COLORS = {
        "WARNING": "\033[33m",
        "ERROR": "\033[31m",
        "CRITICAL": "\033[31m",
        "DEBUG": "\033[36m",
    }

    def filter(self, record):
        if sys.stderr.isatty() and record.levelname in self.COLORS:
            record.levelname_c = f"{self.COLORS[record.levelname]}{record.levelname}\033[0m"
        else:
            record.levelname_c = record.levelname
        return True


# Warnings that Lightning raises in every run of this launcher on purpose; they tell a user
# nothing. Other warnings still show.
EXPECTED_WARNINGS = [
    r"Checkpoint directory .* exists and is not empty",  # resuming into the trial's ckpts/
    r"isinstance\(treespec, LeafSpec\)",  # a deprecation inside Lightning itself
    r"The '\w+' does not have many workers",  # batches are made in the main process on purpose
    r"predict returned None if it was on purpose",  # --export's predict step writes files
    # --test/--export from a checkpoint need not rebuild the ModelCheckpoint that wrote it
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
    # under DDP the evaluation views are split over the ranks on purpose; the few that padding
    # repeats are written to the same file (see SaverMixin._write_image)
    r"Using `DistributedSampler` with the dataloaders",
]


def quiet_third_party() -> None:
    """Lightning logs at INFO what a user needs not read (GPU/TPU/HPU available, tips for its
    cloud products, "`weights_only` was not set", "Seed set to", checkpoint restore notices):
    its loggers show warnings only. Its import sets them to INFO, so this runs after it."""
    import warnings

    import lightning_fabric  # noqa: F401
    import pytorch_lightning  # noqa: F401

    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{pattern}")


def setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("threestudio")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(ColoredFilter())
        handler.setFormatter(logging.Formatter("[%(levelname_c)s] %(message)s"))
        logger.addHandler(handler)
    logger.propagate = False
    if not verbose:
        quiet_third_party()


class OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes are one ``error:`` line (and status 2), like every other bad input."""

    def error(self, message):
        self.exit(2, f"error: {message} (see python launch.py --help)\n")


def gpu_list(value: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip() != ""]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"'{value}' is not a list of GPU indices (e.g. --gpu 0 or --gpu 0,1)"
        )
    return ",".join(parts)


def parse_args(argv=None):
    parser = OneLineParser(
        description="threestudio: text/image to 3D with 2D diffusion guidance",
        epilog="Any other argument is a dotted config override, e.g. trainer.max_steps=1000",
    )
    parser.add_argument("--config", required=True, help="path to a YAML config file")
    parser.add_argument(
        "--gpu",
        default="0",
        type=gpu_list,
        help="GPU(s) to use, e.g. 0 or 0,1 (with CUDA_VISIBLE_DEVICES set these index into it); "
        "without CUDA the run uses the CPU",
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--train", action="store_true", help="fit, then run the test stage")
    group.add_argument("--validate", action="store_true")
    group.add_argument("--test", action="store_true", help="render the test views and a video")
    group.add_argument("--export", action="store_true", help="export a mesh")
    parser.add_argument("--verbose", action="store_true", help="debug logs and full tracebacks")
    parser.add_argument(
        "--typecheck", action="store_true", help="check jaxtyping shapes at run time (slow)"
    )
    add_batch_arguments(parser)
    return parser.parse_known_args(argv)


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Many prompts in one launch (threestudio/batch.py)."""
    group = parser.add_argument_group("many prompts in one launch (with --train)")
    group.add_argument(
        "--prompts", help="file of prompts, one a line (# comments); each is its own trial"
    )
    group.add_argument("--seeds", help="seeds for every prompt, e.g. 0,1 (each is its own trial)")
    group.add_argument(
        "--shard",
        help="i/n: run items i, i+n, ... only (Slurm: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)",
    )
    group.add_argument(
        "--workers", type=int, help="worker processes (default: one per GPU in --gpu; 1 on CPU)"
    )
    group.add_argument(
        "--scorer", choices=("classifier", "clip"), help="R-precision of each trial in the summary"
    )
    group.add_argument("--scorer-model", help="classifier folder or CLIP model of --scorer")
    group.add_argument("--batch-worker", help=argparse.SUPPRESS)  # k/n: a worker's share
    group.add_argument("--batch-results", help=argparse.SUPPRESS)  # where a worker writes


def custom_dirs():
    dirs = []
    for candidate in [os.path.join(os.getcwd(), "custom"), os.path.join(REPO_ROOT, "custom")]:
        candidate = os.path.realpath(candidate)
        if os.path.isdir(candidate) and candidate not in dirs:
            dirs.append(candidate)
    for extra in os.environ.get("THREESTUDIO_CUSTOM_PATH", "").split(os.pathsep):
        if extra and os.path.isdir(extra) and os.path.realpath(extra) not in dirs:
            dirs.append(os.path.realpath(extra))
    return dirs


def load_custom_modules(verbose: bool = False):
    """Import every ``custom/<name>/`` with an ``__init__.py`` as ``custom.<name>`` (names ending in
    ``_disabled`` are skipped). An extension that fails is reported and the run goes on."""
    import threestudio

    loaded, failed = [], []
    for base in custom_dirs():
        parent = os.path.dirname(base)
        if parent not in sys.path:
            sys.path.insert(0, parent)
        for name in sorted(os.listdir(base)):
            path = os.path.join(base, name)
            if name.endswith("_disabled") or name.startswith((".", "_")):
                continue
            if not os.path.isfile(os.path.join(path, "__init__.py")):
                continue
            try:
                importlib.import_module(f"custom.{name}")
                loaded.append(name)
            except Exception as e:  # an extension must never stop the run
                reason = f"{type(e).__name__}: {e}".splitlines()[0]
                threestudio.warn(
                    f"custom extension '{name}' failed to import ({reason}); skipping it"
                )
                threestudio.__failed_extensions__[name] = reason
                if verbose:
                    traceback.print_exc()
                failed.append(name)
    if loaded:
        threestudio.debug(f"custom extensions loaded: {', '.join(loaded)}")
    return loaded, failed


def select_devices(gpu: str, trainer_cfg: dict):
    """(accelerator, devices, n_gpus): CUDA with the GPUs ``--gpu`` names, else the CPU. Lightning's
    ``trainer.accelerator``/``trainer.devices``, where the config sets them, take over (and are
    taken out of ``trainer_cfg``): ``trainer.accelerator=cpu trainer.devices=2`` runs two CPU
    processes joined by gloo."""
    import threestudio
    from threestudio.utils.distributed import devices_from_config

    requested = [g.strip() for g in gpu.split(",") if g.strip() != ""]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None and "devices" not in trainer_cfg:
        # before CUDA is initialised (torch.cuda.is_available() does that): later it is ignored
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(requested)
    import torch

    if not torch.cuda.is_available():
        if trainer_cfg.get("accelerator") != "cpu":
            hint = " (trainer.accelerator=cpu trainer.devices=N runs N processes)"
            threestudio.info(
                "CUDA is not available: running on the CPU" + (hint if len(requested) > 1 else "")
            )
        chosen = ("cpu", 1, 1)
    elif visible is None or visible == ",".join(requested):
        # what this launcher set (also in the DDP ranks it re-runs): every visible GPU is ours
        chosen = ("gpu", len(requested), len(requested))
    else:
        chosen = ("gpu", [int(g) for g in requested], len(requested))
    return devices_from_config(trainer_cfg, *chosen)


def adjust_precision(trainer_cfg: dict, accelerator: str) -> None:
    import threestudio

    precision = str(trainer_cfg.get("precision", "32-true"))
    if accelerator == "cpu" and precision in ("16", "16-mixed", "16-true"):
        threestudio.info(
            f"trainer.precision={precision} needs CUDA; on the CPU the run uses 32-true precision"
        )
        trainer_cfg["precision"] = "32-true"


def checkpoint_trial_dir(ckpt_path: str):
    """TRIAL for TRIAL/ckpts/x.ckpt when TRIAL/configs/parsed.yaml exists, else None."""
    trial = os.path.dirname(os.path.dirname(os.path.abspath(ckpt_path)))
    if os.path.isfile(os.path.join(trial, "configs", "parsed.yaml")):
        return trial
    return None


def config_trial_dir(config_path: str):
    """TRIAL when the config is TRIAL/configs/parsed.yaml (a trial's own configuration)."""
    folder = os.path.dirname(os.path.abspath(config_path))
    if os.path.basename(folder) == "configs" and os.path.basename(config_path) == "parsed.yaml":
        return os.path.dirname(folder)
    return None


def same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def resolve_trial_dir(cfg, args, load):
    """Pick the trial folder. Training never writes into an existing trial unless it resumes
    from that trial's checkpoint; evaluation from a checkpoint writes into the checkpoint's trial."""
    import threestudio
    from threestudio.utils.checkpoints import read_checkpoint
    from threestudio.utils.errors import UserError

    if cfg.resume:
        read_checkpoint(cfg.resume)  # missing, truncated or foreign: one line naming it
        trial = checkpoint_trial_dir(cfg.resume)
        config_trial = config_trial_dir(args.config)
        if trial is not None and config_trial is not None and not same_path(trial, config_trial):
            # training would rewrite the checkpoint's trial with another trial's configuration
            raise UserError(
                f"resume: {cfg.resume} belongs to the trial {trial}, but --config is the "
                f"configuration of {config_trial}; use --config "
                f"{os.path.join(trial, 'configs', 'parsed.yaml')}"
            )
        if trial is not None:
            cfg.trial_dir = trial
        return cfg
    from threestudio.utils.distributed import env_global_rank

    if env_global_rank() > 0:
        return cfg  # DDP ranks write into rank 0's trial (THREESTUDIO_TIMESTAMP names it)
    if args.train and os.path.exists(cfg.trial_dir):
        if not cfg.use_timestamp:
            raise UserError(
                f"trial folder {cfg.trial_dir} exists; pass resume=<its ckpt> to continue it, or "
                "set another tag (or use_timestamp=true)"
            )
        base = datetime.now().strftime("@%Y%m%d-%H%M%S")
        for i in range(1000):
            cfg = load(timestamp=base if i == 0 else f"{base}-{i}")
            if not os.path.exists(cfg.trial_dir):
                break
        threestudio.info(f"the trial folder exists already; writing to {cfg.trial_dir} instead")
    return cfg


def find_configured(cfg, key: str, suffix: str):
    """The class registered as ``cfg.<key>``; errors name the key (and the choices when empty)."""
    import threestudio
    from threestudio.utils.errors import UserError

    name = getattr(cfg, key)
    if not name:
        choices = ", ".join(sorted(n for n in threestudio.__modules__ if n.endswith(suffix)))
        raise UserError(
            f"{key} is empty: set it to a registered name" + (f" ({choices})" if choices else "")
        )
    try:
        return threestudio.find(name)
    except UserError as e:
        raise UserError(f"{key}: {e}") from e


# trainer keys whose values must be numbers (Lightning would fail on a string deep inside)
TRAINER_NUMBERS = {
    "max_steps": (int,),
    "max_epochs": (int,),
    "min_steps": (int,),
    "log_every_n_steps": (int,),
    "num_sanity_val_steps": (int,),
    "check_val_every_n_epoch": (int,),
    "accumulate_grad_batches": (int,),
    "num_nodes": (int,),
    "val_check_interval": (int, float),
    "limit_train_batches": (int, float),
    "limit_val_batches": (int, float),
    "limit_test_batches": (int, float),
    "limit_predict_batches": (int, float),
    "gradient_clip_val": (int, float),
}


def check_trainer_numbers(trainer_cfg: dict) -> None:
    from threestudio.utils.errors import UserError

    for key, types in TRAINER_NUMBERS.items():
        value = trainer_cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            kind = "an integer" if types == (int,) else "a number"
            raise UserError(f"trainer.{key}: {value!r} is not {kind}")


def run(args, extras) -> int:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    import threestudio
    from threestudio.utils.callbacks import (
        AtomicCheckpointIO,
        CodeSnapshotCallback,
        CommandLogCallback,
        ConfigSnapshotCallback,
        DataParallelSummary,
        FinalCheckpoint,
        ProgressBar,
        StepCheckpoint,
        StopOnInterrupt,
    )
    from threestudio.utils.config import config_to_primitive, load_config
    from threestudio.utils.distributed import env_global_rank
    from threestudio.utils.errors import UserError
    from threestudio.utils.misc import get_checkpoint_step

    if env_global_rank() > 0 and not args.verbose:
        logging.getLogger("threestudio").setLevel(logging.WARNING)  # rank 0 says it once
    load_custom_modules(verbose=args.verbose)
    n_gpus = 1

    # a batch item's prompt, seed and timestamp (threestudio/batch.py), over config and extras
    overrides = getattr(args, "item_overrides", None) or {}

    def load(**kwargs):
        return load_config(args.config, cli_args=extras, n_gpus=n_gpus, **{**overrides, **kwargs})

    cfg = load()
    trainer_cfg = dict(config_to_primitive(cfg.trainer))
    accelerator, devices, n_gpus = select_devices(args.gpu, trainer_cfg)
    cfg.n_gpus = n_gpus
    cfg = resolve_trial_dir(cfg, args, load)
    if cfg.resume and args.train and env_global_rank() == 0 and os.path.isdir(cfg.trial_dir):
        # partial files of a killed run (hidden .tmpPID folders): never read, now removed
        from threestudio.utils.atomic import remove_stale_temporaries

        remove_stale_temporaries(cfg.trial_dir)
    _RUN_STATE.clear()  # launch.main may run several times in one process
    _RUN_STATE["trial_dir"] = cfg.trial_dir
    _RUN_STATE["trial_created"] = not os.path.exists(cfg.trial_dir)
    _RUN_STATE["exp_dir"] = os.path.dirname(os.path.abspath(cfg.trial_dir))
    _RUN_STATE["exp_dir_created"] = not os.path.exists(_RUN_STATE["exp_dir"])
    # DDP re-runs this script per rank: the other ranks must land in the same trial folder
    os.environ.setdefault("THREESTUDIO_TIMESTAMP", cfg.timestamp or "")

    # each rank draws its own cameras: data.batch_size is per device
    pl.seed_everything(cfg.seed + env_global_rank(n_gpus), workers=True)
    dm = find_configured(cfg, "data_type", "-datamodule")(cfg.data)
    system = find_configured(cfg, "system_type", "-system")(
        cfg.system, resumed=cfg.resume is not None
    )
    system.set_save_dir(os.path.join(cfg.trial_dir, "save"))

    adjust_precision(trainer_cfg, accelerator)
    trainer_cfg.setdefault("enable_model_summary", False)
    callbacks = (
        [ProgressBar(refresh_rate=1)] if trainer_cfg.get("enable_progress_bar", True) else []
    )
    loggers = []
    if args.train:
        callbacks += [
            StepCheckpoint(
                dirpath=os.path.join(cfg.trial_dir, "ckpts"), **config_to_primitive(cfg.checkpoint)
            ),
            FinalCheckpoint(os.path.join(cfg.trial_dir, "ckpts", "last.ckpt")),
            LearningRateMonitor(logging_interval="step"),
            DataParallelSummary(),
            CodeSnapshotCallback(
                os.path.join(cfg.trial_dir, "code"),
                [os.path.join(REPO_ROOT, "threestudio"), os.path.join(REPO_ROOT, "launch.py")]
                + custom_dirs(),
            ),
            ConfigSnapshotCallback(args.config, cfg, os.path.join(cfg.trial_dir, "configs")),
        ]
        loggers += [
            # one version folder per run: a resumed run never overwrites earlier logs
            TensorBoardLogger(cfg.trial_dir, name="tb_logs"),
            CSVLogger(cfg.trial_dir, name="csv_logs"),
        ]
        callbacks.append(
            CommandLogCallback(
                os.path.join(cfg.trial_dir, "cmd.txt"),
                "python " + " ".join(sys.argv),
                started=lambda: _RUN_STATE.update(training_started=True),
            )
        )
        if env_global_rank(n_gpus) == 0:
            try:
                os.makedirs(cfg.trial_dir, exist_ok=True)
                # the log versions a resume that fails before training must not leave behind
                _RUN_STATE["log_dirs"] = {
                    os.path.join(cfg.trial_dir, logs, v)
                    for logs in ("tb_logs", "csv_logs")
                    if os.path.isdir(os.path.join(cfg.trial_dir, logs))
                    for v in os.listdir(os.path.join(cfg.trial_dir, logs))
                }
            except OSError as e:
                raise UserError(
                    f"exp_root_dir: cannot write the trial folder {cfg.trial_dir}: "
                    f"{e.strerror or e} (set exp_root_dir to a writable folder)"
                ) from e

    strategy = trainer_cfg.pop("strategy", "ddp" if n_gpus > 1 else "auto")
    check_trainer_numbers(trainer_cfg)
    try:
        trainer = pl.Trainer(
            callbacks=callbacks,
            logger=loggers or False,
            inference_mode=False,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            plugins=[AtomicCheckpointIO()],
            **trainer_cfg,
        )
    except (TypeError, ValueError, MisconfigurationException) as e:
        raise UserError(f"trainer: {str(e).splitlines()[0]}") from e

    def set_system_status(ckpt_path):
        if ckpt_path is None:
            threestudio.warn("no resume= checkpoint given: evaluating untrained weights")
            return
        ckpt_step = get_checkpoint_step(ckpt_path)
        threestudio.info(f"Evaluating {ckpt_path} (step {ckpt_step})")
        system.set_resume_status(0, ckpt_step)

    if args.train:
        if cfg.resume:
            threestudio.info(f"Resuming from {cfg.resume}")
        with StopOnInterrupt(trainer):
            trainer.fit(system, datamodule=dm, ckpt_path=cfg.resume)
        trainer.test(system, datamodule=dm)
        if getattr(system.cfg, "export_after_train", False):
            trainer.predict(system, datamodule=dm)
    elif args.validate:
        set_system_status(cfg.resume)
        trainer.validate(system, datamodule=dm, ckpt_path=cfg.resume)
    elif args.test:
        set_system_status(cfg.resume)
        trainer.test(system, datamodule=dm, ckpt_path=cfg.resume)
    elif args.export:
        set_system_status(cfg.resume)
        trainer.predict(system, datamodule=dm, ckpt_path=cfg.resume)
    threestudio.info(f"Outputs are in {cfg.trial_dir}")
    return 0


def _has_checkpoint(trial_dir: str) -> bool:
    ckpts = os.path.join(trial_dir, "ckpts")
    return os.path.isdir(ckpts) and any(f.endswith(".ckpt") for f in os.listdir(ckpts))


_RUN_STATE = {}


def _remove_unfinished_trial() -> None:
    """A run that failed before writing any checkpoint leaves no half-made trial folder. Only the
    folder this run created is touched; earlier trials are never removed. A resume that failed
    before training started (e.g. on its checkpoint) removes the log versions it opened."""
    trial = _RUN_STATE.get("trial_dir")
    if trial and not _RUN_STATE.get("trial_created") and "log_dirs" in _RUN_STATE:
        if not _RUN_STATE.get("training_started"):
            for logs in ("tb_logs", "csv_logs"):
                folder = os.path.join(trial, logs)
                for version in os.listdir(folder) if os.path.isdir(folder) else []:
                    path = os.path.join(folder, version)
                    if path not in _RUN_STATE["log_dirs"]:
                        shutil.rmtree(path, ignore_errors=True)
    if not trial or not _RUN_STATE.get("trial_created") or not os.path.isdir(trial):
        return
    if _has_checkpoint(trial):
        return
    shutil.rmtree(trial, ignore_errors=True)
    exp_dir = _RUN_STATE.get("exp_dir")
    if _RUN_STATE.get("exp_dir_created") and exp_dir and os.path.isdir(exp_dir):
        if not os.listdir(exp_dir):
            os.rmdir(exp_dir)


def batch_request(args, extras):
    """The prompts and seeds of a many-prompt launch (threestudio/batch.py), or None."""
    from threestudio import batch

    return batch.batch_request(args, extras)


def run_batch(args, argv, request) -> int:
    from threestudio import batch

    launcher = batch.Launcher(
        run_one=run,
        remove_unfinished_trial=_remove_unfinished_trial,
        state=_RUN_STATE,
        script=os.path.abspath(__file__),
        argv=list(sys.argv[1:] if argv is None else argv),
        load_extensions=lambda: load_custom_modules(verbose=args.verbose),
    )
    return batch.run_batch(args, request, launcher)


def enable_typecheck() -> None:
    """Check the jaxtyping shapes in threestudio's signatures at run time (before it is imported)."""
    from jaxtyping import install_import_hook

    install_import_hook("threestudio", "typeguard.typechecked")


def main(argv=None) -> int:
    args, extras = parse_args(argv)
    setup_logging(args.verbose)
    if args.typecheck:
        enable_typecheck()

    from threestudio.utils.callbacks import QuitRequested
    from threestudio.utils.errors import UserError

    try:
        request = batch_request(args, extras)
        if request is not None:
            return run_batch(args, argv, request)
        return run(args, extras)
    except UserError as e:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        _remove_unfinished_trial()
        return 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            _remove_unfinished_trial()
            raise
        if args.verbose:
            traceback.print_exc()
        where = f" while writing {e.filename}" if e.filename else ""
        print(
            f"error: no space left on the device{where}: free some space (or set exp_root_dir "
            "to another disk) and resume from the trial's last.ckpt; earlier files are kept",
            file=sys.stderr,
        )
        _remove_unfinished_trial()
        return 2
    except (KeyboardInterrupt, QuitRequested):
        print("\ninterrupted: quitting", file=sys.stderr)
        return 130
    except Exception:
        _remove_unfinished_trial()
        raise


if __name__ == "__main__":
    sys.exit(main())
