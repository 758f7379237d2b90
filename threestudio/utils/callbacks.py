"""Lightning callbacks and plugins used by launch.py."""

import os
import shutil
import sys

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from threestudio.utils.atomic import atomic_path
from threestudio.utils.config import dump_config


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file (``ckpts/.tmpPID/NAME``), then rename: an interrupted
    save never leaves a truncated checkpoint under a checkpoint's name (and never replaces a good
    one with a broken one)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = str(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)
        except OSError as e:  # e.g. a full disk: name the checkpoint, not the temporary file
            raise OSError(e.errno, e.strerror or str(e), path) from e


class ConfigSnapshotCallback(Callback):
    def __init__(self, config_path: str, config, save_dir: str, use_version: bool = False):
        self.config_path, self.config, self.save_dir = config_path, config, save_dir

    @rank_zero_only
    def _save(self) -> None:
        os.makedirs(self.save_dir, exist_ok=True)
        dump_config(os.path.join(self.save_dir, "parsed.yaml"), self.config)
        with atomic_path(os.path.join(self.save_dir, "raw.yaml")) as tmp:
            shutil.copyfile(self.config_path, tmp)

    # written when training starts (after a resumed checkpoint loaded): a resume that fails on
    # its checkpoint leaves the trial's configuration as it was
    def on_train_start(self, trainer, pl_module) -> None:
        self._save()


class CommandLogCallback(Callback):
    """Appends the command line to TRIAL/cmd.txt when training starts; ``started()`` is called
    then too (launch.py marks the run as past its checkpoint loading)."""

    def __init__(self, path: str, command: str, started=None):
        self.path, self.command, self.started = path, command, started

    def on_train_start(self, trainer, pl_module) -> None:
        if self.started is not None:
            self.started()
        if trainer.is_global_zero:
            with open(self.path, "a") as f:
                f.write(self.command + "\n")


class CodeSnapshotCallback(Callback):
    """Copies the code that ran (threestudio/, custom/, launch.py) into the trial."""

    def __init__(self, save_dir: str, roots):
        self.save_dir, self.roots = save_dir, list(roots)

    @rank_zero_only
    def _save(self) -> None:
        os.makedirs(self.save_dir, exist_ok=True)
        for root in self.roots:
            if os.path.isfile(root):
                shutil.copy(root, self.save_dir)
                continue
            if not os.path.isdir(root):
                continue
            target = os.path.join(self.save_dir, os.path.basename(root.rstrip("/")))
            shutil.copytree(
                root,
                target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", "*.ckpt", "*.safetensors", "*.bin"
                ),
            )

    def on_train_start(self, trainer, pl_module) -> None:  # after a resumed checkpoint loaded
        self._save()


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (every config key of ``checkpoint:`` is its argument) made to
    leave one ``last.ckpt`` per trial. Two of its habits would add a second one:

    - its version counter writes ``last-v1.ckpt`` beside a ``last.ckpt`` it did not write itself
      (one from FinalCheckpoint, or from the run a resume continues); here a re-save overwrites
      (atomically, see AtomicCheckpointIO), as a re-saved step checkpoint does;
    - at the end of fit it saves ``last`` once more when it saved nothing itself, with end-of-fit
      loop state that resumes one step off; FinalCheckpoint has written that step's last.ckpt from
      inside the loop already."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)

    def on_train_end(self, trainer, pl_module) -> None:
        return None


class FinalCheckpoint(Callback):
    """Write ``last.ckpt`` at the end of the last training step (max_steps reached or Ctrl-C),
    from inside the loop: a checkpoint written after ``fit()`` returns carries end-of-fit loop
    state and would resume one step off. Skipped when ModelCheckpoint saved this step already."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if not (last_step or trainer.should_stop):
            return
        for cb in trainer.checkpoint_callbacks:
            if getattr(cb, "_last_global_step_saved", -1) == trainer.global_step and cb.save_last:
                return
        trainer.save_checkpoint(self.path)


class DataParallelSummary(Callback):
    """Says once, at the start of a run on several processes, how the work is split: every rank
    renders and guides its own ``data.batch_size`` cameras and the gradients are averaged, so a
    step sees world_size x batch_size views."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.world_size <= 1 or not trainer.is_global_zero:
            return
        import threestudio

        dataset = getattr(pl_module, "train_dataset", None)
        per_rank = getattr(dataset, "batch_size", None)
        views = f" ({trainer.world_size * per_rank} views per step)" if per_rank else ""
        threestudio.info(
            f"data parallel over {trainer.world_size} processes ({trainer.num_nodes} node(s) x "
            f"{trainer.num_devices} device(s)): each draws its own data.batch_size={per_rank} "
            f"cameras{views}"
        )


class ProgressBar(TQDMProgressBar):
    """Training bar counts global steps towards max_steps (the dataset is endless)."""

    def get_metrics(self, trainer, model):
        items = super().get_metrics(trainer, model)
        items.pop("v_num", None)
        return items

    def on_train_epoch_start(self, trainer, *_) -> None:
        super().on_train_epoch_start(trainer)
        if trainer.max_steps and trainer.max_steps > 0:
            self.train_progress_bar.reset(total=trainer.max_steps)
            self.train_progress_bar.initial = 0
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_description("Training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.max_steps and trainer.max_steps > 0:
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
            self.train_progress_bar.refresh()
        else:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class QuitRequested(BaseException):
    """The second Ctrl-C: Lightning tears the run down and re-raises this (a KeyboardInterrupt
    would make Lightning call sys.exit(1) itself)."""


class StopOnInterrupt:
    """First Ctrl-C: finish the current step, stop training, go on to testing.
    Second Ctrl-C: quit at once."""

    # set by a first Ctrl-C in this process: a batch of trials (threestudio/batch.py) then stops
    # after the current one
    stop_requested = False

    def __init__(self, trainer: pl.Trainer):
        self.trainer = trainer
        self.count = 0
        self.previous = None

    def __enter__(self):
        import signal

        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            print(
                "\nCtrl-C: stopping training after this step and running the test stage "
                "(press Ctrl-C again to quit)",
                file=sys.stderr,
                flush=True,
            )
            self.trainer.should_stop = True
            StopOnInterrupt.stop_requested = True
        else:
            raise QuitRequested()

    def __exit__(self, *exc):
        import signal

        signal.signal(signal.SIGINT, self.previous or signal.default_int_handler)
        return False
