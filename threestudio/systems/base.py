"""System bases: one training step per method file; everything shared lives here.

``BaseSystem`` owns the loss convention (every ``loss_X`` is weighted by ``C(cfg.loss.lambda_X)``
and logged), step bookkeeping (``true_global_step``, resume status), Updateable hooks around every
batch, exact-resume state (RNG states, camera stream) and the evaluation/export plumbing.
``BaseLift3DSystem`` builds geometry, material, background and renderer from ``*_type`` + config
pairs, the guidance and prompt processor when fitting starts (each built once: not at all when the
method file builds its own, as systems written for the established API do), and writes validation
grids, the test turntable video and ``--export`` files, so a method file only holds what is its own.
"""

import math
import os
import random
from dataclasses import dataclass, field

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn as nn

import threestudio
from threestudio.data.uncond import fitted_distance, refit_turntable
from threestudio.models.camera_refinement import CameraRefinement
from threestudio.models.exporters.base import ExporterOutput
from threestudio.systems.utils import parse_optimizer, parse_scheduler
from threestudio.utils.base import (
    Updateable,
    update_end_if_possible,
    update_if_possible,
)
from threestudio.utils.checkpoints import state_dict_mismatch
from threestudio.utils.config import load_config, parse_structured
from threestudio.utils.distributed import broadcast_module, global_rank, world_size
from threestudio.utils.errors import ConfigError, UserError, did_you_mean
from threestudio.utils.framing import (
    bounds_of,
    contain_distance,
    frame_extent,
    inside_silhouettes,
    object_bounds,
    object_vertices,
)
from threestudio.utils.misc import (
    C,
    cleanup,
    find_last_path,
    load_module_weights,
    split_weights_spec,
)
from threestudio.utils.ops import as_size
from threestudio.utils.saving import SaverMixin
from threestudio.utils.typing import (
    Any,
    Bool,
    Dict,
    Float,
    List,
    Optional,
    Sequence,
    Tensor,
    Tuple,
)


def _rng_state() -> Dict[str, Any]:
    # only tensors and plain Python values: checkpoints stay loadable with weights_only=True
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            name,
            torch.from_numpy(keys.astype(np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class BaseSystem(pl.LightningModule, Updateable, SaverMixin):
    @dataclass
    class Config:
        loggers: dict = field(default_factory=dict)  # unused; accepted for original configs
        # lambda_X: the weight of loss_X, a number or a C() schedule (0 skips the term)
        loss: dict = field(default_factory=dict)
        # {name: <torch.optim class>, args: {...}, params: {dotted.module: {lr: ...}}}; without
        # params every parameter is optimised
        optimizer: dict = field(default_factory=dict)
        # {name: <torch.optim.lr_scheduler class>, args: {...}, interval: step | epoch}
        scheduler: Optional[dict] = None
        # "path/to.ckpt" (or "path:module.prefix"): load these weights after configure()
        weights: Optional[str] = None
        weights_ignore_modules: Optional[List[str]] = None  # dotted prefixes not to load
        cleanup_after_validation_step: bool = False  # free memory (cleanup()) after each step
        cleanup_after_test_step: bool = False  # the same after each test step
        # a training step whose loss or gradients hold NaN/Inf changes nothing (no parameter or
        # optimiser-state update; under fp16 AMP the grad scaler skips it), is counted
        # (train/nonfinite_steps) and warned about
        skip_nonfinite_steps: bool = True
        # stop the run after this many non-finite steps in a row, naming the last good
        # checkpoint (0: never stop)
        max_nonfinite_steps: int = 20

    cfg: Config

    def __init__(self, cfg, resumed: bool = False) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)
        self._save_dir: Optional[str] = None
        self._resumed: bool = resumed
        self._resumed_eval: bool = False
        self._resumed_eval_status: dict = {"global_step": 0, "current_epoch": 0}
        self._eval_rng_state: Optional[Dict[str, Any]] = None
        self._pending_rng_state: Optional[Dict[str, Any]] = None
        self._loss_terms: Dict[str, Any] = {}
        self._nonfinite = {"total": 0, "in_a_row": 0}
        self.configure()
        self.finish_configure()
        if self.cfg.weights is not None:
            self.load_weights(self.cfg.weights, self.cfg.weights_ignore_modules)
        self.post_configure()

    # ---------- construction ----------

    def configure(self) -> None:
        pass

    def finish_configure(self) -> None:
        """After the subclass's ``configure()``, before weights are loaded: a base builds here
        what the subclass may have built itself."""

    def post_configure(self) -> None:
        pass

    def load_weights(self, weights: str, ignore_modules: Optional[Sequence[str]] = None) -> None:
        path, prefix = split_weights_spec(weights)
        state_dict, epoch, global_step = load_module_weights(
            find_last_path(path),
            module_name=prefix,
            ignore_modules=ignore_modules,
            map_location="cpu",
        )
        self.load_state_dict(state_dict, strict=False)
        # restore step-dependent state of the modules (e.g. progressive encodings)
        self.do_update_step(epoch, global_step, on_load_weights=True)

    # ---------- steps ----------

    def set_resume_status(self, current_epoch: int, global_step: int) -> None:
        """For --test/--export from a checkpoint: report the checkpoint's step in file names."""
        self._resumed_eval = True
        self._resumed_eval_status["current_epoch"] = current_epoch
        self._resumed_eval_status["global_step"] = global_step

    @property
    def resumed(self) -> bool:
        return self._resumed

    @property
    def true_global_step(self) -> int:
        if self._resumed_eval:
            return self._resumed_eval_status["global_step"]
        return self.global_step

    @property
    def true_current_epoch(self) -> int:
        if self._resumed_eval:
            return self._resumed_eval_status["current_epoch"]
        return self.current_epoch

    def C(self, value: Any) -> float:
        return C(value, self.true_current_epoch, self.true_global_step)

    # ---------- the loss convention ----------

    def lambda_of(self, name: str, default: Optional[float] = None) -> float:
        """The current weight of ``loss_<name>`` (``cfg.loss.lambda_<name>`` through ``C()``).
        Without ``default`` a missing weight is an error naming it; systems pass ``default=0``
        for optional regularisers so that configs need not list them."""
        key = f"lambda_{name}"
        if key not in self.cfg.loss and default is not None:
            return default
        if key not in self.cfg.loss:
            raise ConfigError(
                f"system.loss.{key} is not set but the system produced loss_{name}"
                f"{did_you_mean(key, self.cfg.loss.keys())} (add {key} to system.loss; 0 disables it)"
            )
        try:
            return self.C(self.cfg.loss[key])
        except ConfigError as e:
            raise ConfigError(f"system.loss.{key}: {e}") from e

    def weighted_loss(self, terms: Dict[str, Any], prefix: str = "train") -> Tensor:
        """Sum of every ``loss_X`` in ``terms`` weighted by its ``lambda_X``; each term and weight is
        logged. Terms whose weight is 0 are skipped (and need not have been computed)."""
        total = None
        self._loss_terms = terms
        for name, value in terms.items():
            if not name.startswith("loss_"):
                continue
            short = name[len("loss_") :]
            weight = self.lambda_of(short)
            self.log(f"{prefix}/{name}", value if torch.is_tensor(value) else float(value))
            self.log(f"{prefix}/lambda_{short}", float(weight))
            if weight == 0:
                continue
            term = value * weight
            total = term if total is None else total + term
        if total is None:
            raise ConfigError(
                "every loss weight is 0: nothing to optimise (check system.loss.lambda_* values)"
            )
        self.log(f"{prefix}/loss", total, prog_bar=True)
        return total

    # ---------- optimisers ----------

    def own_group_parameters(self) -> List[nn.Parameter]:
        """Parameters that ``add_param_groups`` gives an optimiser group of their own."""
        return []

    def add_param_groups(self, optim: torch.optim.Optimizer) -> None:
        """Add the groups of ``own_group_parameters`` (none here). A system with its own
        ``configure_optimizers`` calls this on its optimiser to include them."""

    def configure_optimizers(self):
        if not self.cfg.optimizer:
            raise ConfigError("system.optimizer is not set (e.g. {name: Adam, args: {lr: 0.01}})")
        # parameters with a group of their own are left to add_param_groups: hidden from
        # parse_optimizer (no "not optimised" warning, not in the all-parameters group)
        own = [p for p in self.own_group_parameters() if p.requires_grad]
        for p in own:
            p.requires_grad_(False)
        try:
            optim = parse_optimizer(self.cfg.optimizer, self)
        finally:
            for p in own:
                p.requires_grad_(True)
        self.add_param_groups(optim)  # before the scheduler, which then covers them too
        ret = {"optimizer": optim}
        if self.cfg.scheduler is not None:
            ret["lr_scheduler"] = parse_scheduler(self.cfg.scheduler, optim)
        return ret

    # ---------- non-finite steps ----------

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        if not self.cfg.skip_nonfinite_steps or optimizer_closure is None:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)

        def guarded_closure():
            loss = optimizer_closure()
            fault = self._nonfinite_fault(loss, optimizer)
            if fault is None:
                self._nonfinite["in_a_row"] = 0
                return loss
            self._skip_nonfinite_step(fault)
            precision = getattr(self.trainer, "precision_plugin", None)
            if getattr(precision, "scaler", None) is None:
                # an optimiser skips parameters without a gradient: no update, no state change
                # (a grad scaler would refuse a step without gradients; it skips this one itself)
                for group in optimizer.param_groups:
                    for param in group["params"]:
                        param.grad = None
            return loss

        return super().optimizer_step(epoch, batch_idx, optimizer, guarded_closure)

    def _nonfinite_fault(self, loss: Any, optimizer) -> Optional[str]:
        """What is NaN/Inf in this step (the loss terms by name, or the gradients), or None. A
        finite step costs one device synchronisation (the loss and every gradient's peak in one
        check); only a faulty one is looked at term by term."""
        value = loss["loss"] if isinstance(loss, dict) else loss
        loss_value = value.detach().reshape(-1).float() if torch.is_tensor(value) else None
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        peaks = [torch.linalg.vector_norm(g.detach(), ord=float("inf")).float() for g in grads]
        checked = ([loss_value] if loss_value is not None else []) + [p.reshape(1) for p in peaks]
        if not checked or bool(torch.isfinite(torch.cat(checked)).all()):
            return None
        if loss_value is not None and not bool(torch.isfinite(loss_value).all()):
            bad = [
                name
                for name, term in self._loss_terms.items()
                if name.startswith("loss_")
                and torch.is_tensor(term)
                and not bool(torch.isfinite(term.detach()).all())
            ]
            return "loss (" + ", ".join(bad or ["total"]) + ")"
        return "gradients"

    def _skip_nonfinite_step(self, fault: str) -> None:
        self._nonfinite["total"] += 1
        self._nonfinite["in_a_row"] += 1
        in_a_row, limit = self._nonfinite["in_a_row"], self.cfg.max_nonfinite_steps
        threestudio.warn(
            f"step {self.true_global_step}: non-finite {fault}: step skipped "
            f"({in_a_row} in a row, {self._nonfinite['total']} in this run)"
        )
        if limit > 0 and in_a_row >= limit:
            raise UserError(
                f"training stopped: {in_a_row} steps in a row had a non-finite {fault} "
                f"(system.max_nonfinite_steps={limit}); {self._last_good_checkpoint()}"
            )

    def _last_good_checkpoint(self) -> str:
        """Where the newest checkpoint of this trial is (skipped steps never changed weights)."""
        callback = getattr(self.trainer, "checkpoint_callback", None)
        folder = getattr(callback, "dirpath", None)
        ckpts = []
        if folder and os.path.isdir(folder):
            ckpts = [os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".ckpt")]
        if not ckpts:
            return "no checkpoint was saved before it"
        newest = max(ckpts, key=os.path.getmtime)
        return f"the last good checkpoint is {newest} (resume={newest})"

    # ---------- batches ----------

    @staticmethod
    def normalize_batch(batch: Any) -> None:
        """In place, before every step: a datamodule's default collate turns an item's
        height/width into tensors; renderers, guidance and image saving take them as ints, as
        the random-camera batches hold them. (Done in the batch-start hooks rather than in
        on_after_batch_transfer, which a datamodule may override.)"""
        if isinstance(batch, dict):
            for key in ("height", "width"):
                if key in batch and not isinstance(batch[key], int):
                    batch[key] = as_size(batch[key], key)

    # ---------- Updateable hooks around every batch ----------

    @property
    def train_dataset(self):
        try:
            return self.trainer.train_dataloader.dataset
        except AttributeError:
            datamodule = getattr(self.trainer, "datamodule", None)
            return getattr(datamodule, "train_dataset", None)

    def on_train_start(self) -> None:
        if self._pending_rng_state is not None:
            _set_rng_state(self._pending_rng_state)
            self._pending_rng_state = None

    def on_train_batch_start(self, batch, batch_idx, unused=0):
        self.normalize_batch(batch)
        self.dataset = self.train_dataset
        update_if_possible(self.dataset, self.true_current_epoch, self.true_global_step)
        self.do_update_step(self.true_current_epoch, self.true_global_step)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self._nonfinite["total"]:
            self.log("train/nonfinite_steps", float(self._nonfinite["total"]))
        update_end_if_possible(self.train_dataset, self.true_current_epoch, self.true_global_step)
        self.do_update_step_end(self.true_current_epoch, self.true_global_step)

    def _eval_batch_start(self) -> None:
        self.do_update_step(self.true_current_epoch, self.true_global_step)

    def on_validation_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self.normalize_batch(batch)
        self._eval_batch_start()

    def on_test_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self.normalize_batch(batch)
        self._eval_batch_start()

    def on_predict_batch_start(self, batch, batch_idx, dataloader_idx=0):
        self.normalize_batch(batch)
        self._eval_batch_start()

    # evaluation must not move the training random stream (resume and straight runs agree)
    def on_validation_epoch_start(self) -> None:
        self._eval_rng_state = _rng_state()

    def on_validation_epoch_end(self) -> None:
        if self._eval_rng_state is not None:
            _set_rng_state(self._eval_rng_state)
            self._eval_rng_state = None

    def on_validation_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        if self.cfg.cleanup_after_validation_step:
            cleanup()

    def on_test_batch_end(self, outputs, batch, batch_idx, dataloader_idx=0):
        if self.cfg.cleanup_after_test_step:
            cleanup()

    # ---------- checkpoints ----------

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = _rng_state()
        checkpoint["threestudio"] = {"rng_state": state, "version": threestudio.__version__}
        if world_size() > 1:
            # every rank runs this hook (Lightning's save_checkpoint is called on all of them);
            # rank 0 writes the file: it carries each rank's random state for an exact resume
            states = [None] * world_size()
            torch.distributed.all_gather_object(states, state)
            checkpoint["threestudio"]["rng_state_per_rank"] = states

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self._check_checkpoint_fits(checkpoint)
        extra = checkpoint.get("threestudio", {})
        if self._resumed:
            # applied in on_train_start: loading models in on_fit_start (after this hook)
            # draws random numbers, which would shift the restored stream. A rank the
            # checkpoint has no state for (more ranks than wrote it) keeps its own seeded one.
            per_rank, rank = extra.get("rng_state_per_rank") or [], global_rank()
            if rank < len(per_rank):
                self._pending_rng_state = per_rank[rank]
            elif rank == 0 and "rng_state" in extra:
                self._pending_rng_state = extra["rng_state"]
        if self._resumed:
            # Lightning builds the train iterator (and prefetches a batch) before on_train_start:
            # the camera stream must continue at the saved step by then
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
            dataset = getattr(datamodule, "train_dataset", None)
            if dataset is not None and hasattr(dataset, "set_step"):
                dataset.set_step(checkpoint.get("global_step", 0))
        self.do_update_step(
            checkpoint.get("epoch", 0), checkpoint.get("global_step", 0), on_load_weights=True
        )

    def _check_checkpoint_fits(self, checkpoint: Dict[str, Any]) -> None:
        """A checkpoint of another configuration (another grid size, another geometry) is one
        line naming the file and the first weight that differs, not Lightning's traceback."""
        if "state_dict" not in checkpoint:
            return
        expected = self.state_dict()
        found = checkpoint["state_dict"]
        if not self.strict_loading:
            found = {k: v for k, v in found.items() if k in expected}
            expected = {k: v for k, v in expected.items() if k in found}
        problem = state_dict_mismatch(expected, found)
        if problem is not None:
            path = getattr(self._trainer, "ckpt_path", None) if self._trainer else None
            raise UserError(
                f"resume: {path or 'the checkpoint'} does not fit this configuration: {problem} "
                "(resume with the trial's own configs/parsed.yaml, or start a new trial)"
            )

    # ---------- export ----------

    def export_outputs(self) -> List[ExporterOutput]:
        """Files written by ``--export``; systems with an exporter override this."""
        return []

    def on_predict_epoch_end(self) -> None:
        if self.global_rank != 0:
            return  # under DDP one rank exports (the export reads the whole model, not a shard)
        outputs = self.export_outputs()
        for out in outputs:
            save_func = getattr(self, f"save_{out.save_type}", None)
            if save_func is None:
                raise ValueError(
                    f"exporter output type '{out.save_type}' has no save_{out.save_type}"
                )
            save_func(f"it{self.true_global_step}-export/{out.save_name}", **out.params)
        threestudio.info(
            f"Exported {len(outputs)} file(s) to "
            f"{self.get_save_path(f'it{self.true_global_step}-export')}"
        )

    def predict_step(self, batch, batch_idx):
        return None


_LAZY_MEMBERS = ("guidance", "prompt_processor", "prompt_utils")


class BaseLift3DSystem(BaseSystem):
    @dataclass
    class Config(BaseSystem.Config):
        geometry_type: str = ""  # registered name of the geometry; geometry is its config
        geometry: dict = field(default_factory=dict)  # config of the geometry
        # a previous stage's checkpoint (TRIAL/ckpts/last.ckpt): its geometry is converted with
        # create_from() at the start of a fresh run
        geometry_convert_from: Optional[str] = None
        geometry_convert_inherit_texture: bool = False  # also copy its encoding/feature network
        # when converting from a previous stage, override these keys of the previous stage's
        # geometry config (e.g. isosurface_threshold)
        geometry_convert_override: dict = field(default_factory=dict)

        material_type: str = ""  # registered name of the material
        material: dict = field(default_factory=dict)  # config of the material

        background_type: str = ""  # registered name of the background
        background: dict = field(default_factory=dict)  # config of the background

        renderer_type: str = ""  # registered name of the renderer
        renderer: dict = field(default_factory=dict)  # config of the renderer

        guidance_type: str = ""  # registered name of the guidance
        guidance: dict = field(default_factory=dict)  # config of the guidance

        prompt_processor_type: str = ""  # registered name of the prompt processor
        prompt_processor: dict = field(default_factory=dict)  # config of the prompt processor

        exporter_type: str = "mesh-exporter"  # registered name of the exporter (--export)
        exporter: dict = field(default_factory=dict)  # config of the exporter

        # --train also runs the export stage at the end (the exporter's files land in
        # save/it<step>-export/, as with --export)
        export_after_train: bool = False
        # save a video of the test views at the end of --test / after --train
        test_save_video: bool = True
        test_video_fps: int = 30  # frame rate of that video

        # a learned pose correction per dataset image (camera-refinement's config: enabled,
        # n_images, lr), applied to the training batch's c2w, rays, mvp_mtx and
        # camera_positions before each step; off by default
        camera_refinement: dict = field(default_factory=dict)

    cfg: Config

    def configure(self) -> None:
        self.geometry = self._build_geometry()
        self.material = self.find_module("material_type")(self.cfg.material)
        self.background = self.find_module("background_type")(self.cfg.background)
        self.renderer = self.find_module("renderer_type")(
            self.cfg.renderer,
            geometry=self.geometry,
            material=self.material,
            background=self.background,
        )
        # guidance, prompt_processor and prompt_utils are not set here: systems written for the
        # established API build their own in configure() or on_fit_start(), and each is built
        # once whichever side builds it (see finish_configure and _lazy_member)

    # ---------- guidance and prompt processor: built once, by the subclass or here ----------

    def _trainable_guidance(self) -> bool:
        cfg = self.__dict__.get("cfg")
        if cfg is None or not cfg.guidance_type:
            return False
        cls = threestudio.find(cfg.guidance_type)
        if not issubclass(cls, nn.Module):
            return False
        # a guidance whose trainable parts depend on its config (the unified guidance: only
        # VSD) says whether this config has any
        has_trainable = getattr(cls, "has_trainable_parameters", None)
        return has_trainable is None or bool(has_trainable(cfg.guidance))

    def finish_configure(self) -> None:
        # trainable guidance (e.g. VSD's LoRA) must exist before the optimiser and checkpoint
        # loading: built now unless the subclass's configure() built (or used) one
        super().finish_configure()
        # the same for the camera deltas (their values are saved with the checkpoint)
        refinement = CameraRefinement(self.cfg.camera_refinement)
        self.camera_refinement = refinement if refinement.cfg.enabled else None
        if self._trainable_guidance():
            self.build_guidance_and_prompts(names=("guidance",))

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes not set (nn.Module keeps modules in _modules)
        if name in _LAZY_MEMBERS:
            modules = self.__dict__.get("_modules", {})
            return modules[name] if name in modules else self._lazy_member(name)
        return super().__getattr__(name)

    def _lazy_member(self, name: str) -> Any:
        """Frozen guidance, prompt processor and prompt utils are built on first use once fitting
        has started (never for --test/--export), so that a subclass that builds its own in
        on_fit_start() (after super().on_fit_start()) leaves nothing for the base to build."""
        # a trainable guidance may be needed from configure() on (its parameters are optimised)
        trainable = name == "guidance" and self._trainable_guidance()
        if not (self.__dict__.get("_build_members", False) or trainable):
            return None
        if name == "prompt_utils":
            processor = self.prompt_processor
            value = processor() if processor is not None else None
        else:
            type_name = getattr(self.cfg, f"{name}_type")
            if not type_name:
                return None
            value = self.find_module(f"{name}_type")(getattr(self.cfg, name))
        setattr(self, name, value)
        return value

    def find_module(self, key: str):
        """The class registered as ``cfg.<key>`` (e.g. geometry_type); an unknown name is one line
        naming the key."""
        try:
            return threestudio.find(getattr(self.cfg, key))
        except UserError as e:
            raise UserError(f"system.{key}: {e}") from e

    def build_guidance_and_prompts(
        self, names: Tuple[str, ...] = ("prompt_processor", "prompt_utils", "guidance")
    ) -> None:
        """Build whatever of ``names`` neither the subclass nor an earlier use has built (called
        when training starts)."""
        for name in names:
            if name in self.__dict__ and self.__dict__[name] is None:
                del self.__dict__[name]  # an explicit None: build as if never set
            getattr(self, name)

    def _build_geometry(self):
        geometry_cls = self.find_module("geometry_type")
        if self.cfg.geometry_convert_from and not self.resumed and self.cfg.weights is None:
            return self._convert_geometry(geometry_cls)
        return geometry_cls(self.cfg.geometry)

    def _convert_geometry(self, geometry_cls):
        ckpt_path = find_last_path(self.cfg.geometry_convert_from)
        if not os.path.isfile(ckpt_path):
            raise UserError(f"system.geometry_convert_from: checkpoint not found: {ckpt_path}")
        # the previous stage's parsed config lives in its trial: TRIAL/ckpts/x.ckpt -> TRIAL/configs
        trial_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt_path)))
        prev_cfg_path = os.path.join(trial_dir, "configs", "parsed.yaml")
        if not os.path.isfile(prev_cfg_path):
            raise UserError(
                f"system.geometry_convert_from: {prev_cfg_path} not found; the checkpoint must sit "
                "in its trial folder (TRIAL/ckpts/...) next to TRIAL/configs/parsed.yaml"
            )
        prev_cfg = load_config(prev_cfg_path, timestamp="")
        prev_system = prev_cfg.system
        prev_geometry_cfg = prev_system.geometry
        prev_geometry_cfg.update(self.cfg.geometry_convert_override)
        prev_geometry = threestudio.find(prev_system.geometry_type)(prev_geometry_cfg)
        state_dict, epoch, global_step = load_module_weights(
            ckpt_path, module_name="geometry", map_location="cpu"
        )
        prev_geometry.load_state_dict(state_dict, strict=False)
        prev_geometry.do_update_step(epoch, global_step, on_load_weights=True)
        threestudio.info(f"Converting geometry from {prev_system.geometry_type} ({ckpt_path})")
        geometry = geometry_cls.create_from(
            prev_geometry,
            self.cfg.geometry,
            copy_net=self.cfg.geometry_convert_inherit_texture,
        )
        del prev_geometry
        cleanup()
        return geometry

    def on_fit_start(self) -> None:
        # a shape prior (e.g. implicit-sdf's shape_init) is fitted once, at the start of a fresh
        # run: never on resume, nor over weights loaded from a checkpoint or a previous stage
        fresh = not self.resumed and self.cfg.weights is None and not self.cfg.geometry_convert_from
        if fresh and hasattr(self.geometry, "initialize_shape"):
            self.geometry.initialize_shape()
            # fitted from each rank's own random samples, after DDP made the ranks equal
            broadcast_module(self.geometry)
        # from now on, guidance / prompt_processor / prompt_utils are built on first use (or
        # when training starts) unless the subclass builds its own first
        self._build_members = True

    def on_train_start(self) -> None:
        # before the restored random state is applied: loading models draws random numbers
        self.build_guidance_and_prompts()
        super().on_train_start()

    # ---------- the test turntable framed on the object (data.eval_fit_object) ----------

    def on_test_start(self) -> None:
        super().on_test_start()
        self._test_framing = None
        datamodule = getattr(self.trainer, "datamodule", None)
        data_cfg = getattr(datamodule, "cfg", None)
        share = float(getattr(data_cfg, "eval_fit_object", 0.0) or 0.0)
        if share <= 0:
            return
        if getattr(data_cfg, "eval_fit_mode", "fill") == "contain":
            self._test_framing = self._contain_framing(data_cfg, share)
            return
        bounds = object_bounds(self.geometry)
        if bounds is None:
            return
        center, radius = bounds
        distance = fitted_distance(radius, data_cfg.eval_fovy_deg, share)
        self._test_framing = (center, distance, data_cfg.rays_d_normalize)
        c = ", ".join(f"{float(x):.2f}" for x in center)
        threestudio.info(
            f"test views framed on the object: centre ({c}), bounding radius {radius:.2f}, "
            f"camera distance {distance:.2f} (data.eval_fit_object={share})"
        )

    def _contain_framing(self, data_cfg, share: float):
        """data.eval_fit_mode=contain: None (the fixed turntable) while the rendered object stays
        inside the fixed turntable's frame (without an opacity output: while its isosurface
        projects within ``share`` of every view's half frame); otherwise the centre of the
        rendered object (its isosurface points inside the render's silhouettes) and the nearest
        distance, no nearer than the fixed one, at which those points project within ``share``
        of every view's half frame."""
        points = object_vertices(self.geometry)
        if points is None:
            return None
        n = int(data_cfg.n_test_views)
        azimuths = [-180.0 + 360.0 * i / n for i in range(n)]
        view = (data_cfg.eval_elevation_deg, azimuths, data_cfg.eval_fovy_deg)
        aspect = data_cfg.eval_width / data_cfg.eval_height
        fixed = float(data_cfg.eval_camera_distance)
        leaves = self._test_views_leave_frame()
        if leaves is None:  # no opacity to look at: the isosurface decides
            origin = torch.zeros(3, dtype=points.dtype, device=points.device)
            leaves = frame_extent(points, origin, fixed, *view, aspect) > share
        if not leaves:
            threestudio.info(
                "test views keep the fixed camera: the object stays inside the frame "
                f"(data.eval_fit_mode=contain, share {share})"
            )
            return None
        seen = self._rendered_points(points, share, view, aspect)
        if seen is not None and bool(seen.any()):
            points = points[seen]  # the isosurface's faint parts the render does not show: out
        center, _ = bounds_of(points)
        distance = contain_distance(points, center, share, *view, aspect, min_distance=fixed)
        c = ", ".join(f"{float(x):.2f}" for x in center)
        threestudio.info(
            f"test views framed on the object, which leaves the fixed camera's frame: centre "
            f"({c}), camera distance {distance:.2f} (data.eval_fit_mode=contain, share {share})"
        )
        return (center, distance, data_cfg.rays_d_normalize)

    def _test_view_opacities(self, look_at: Optional[tuple] = None, every: int = 4):
        """Yields (batch, opacity B H W) for every ``every``-th test view as the system renders
        it, the turntable moved to look at ``look_at`` = (centre, distance) when given. Yields
        (None, None) once when there is nothing to look at: no datamodule (test dataloaders
        passed to the trainer directly) or no opacity in the system's output."""
        from pytorch_lightning.utilities import move_data_to_device

        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            yield None, None
            return
        with torch.no_grad():
            for i, batch in enumerate(datamodule.test_dataloader()):
                if i % every:
                    continue
                batch = move_data_to_device(batch, self.device)
                if look_at is not None:
                    refit_turntable(batch, *look_at, datamodule.cfg.rays_d_normalize)
                out = self(batch)
                opacity = out.get("opacity") if isinstance(out, dict) else None
                if opacity is None:
                    yield None, None
                    return
                yield batch, opacity[..., 0]

    def _test_views_leave_frame(self) -> Optional[bool]:
        """Whether the rendered object leaves the fixed test turntable's frame in any of every
        fourth view: opacity 0.5 or more on the image border, the evaluation's in-frame test
        (an isosurface also holds faint floaters the render does not show). None when there
        is no opacity to look at."""
        for _, o in self._test_view_opacities():
            if o is None:
                return None
            border = torch.cat([o[:, 0], o[:, -1], o[:, :, 0], o[:, :, -1]], dim=-1)
            if bool((border >= 0.5).any()):
                return True
        return False

    def _rendered_points(
        self,
        points: Float[Tensor, "N 3"],
        share: float,
        view: tuple,
        aspect: float,
        passes: int = 3,
    ) -> Optional[Bool[Tensor, "N"]]:
        """Which isosurface points lie inside the rendered object: inside its silhouette
        (opacity 0.5 or more) in every fourth test view. The first pass looks from a turntable
        about the origin far enough to hold every point; each further one from the framing of
        the points kept so far (nearer, so finer). None when the system's output has no
        opacity."""
        half = math.radians(view[2]) / 2
        half = min(half, math.atan(math.tan(half) * aspect))
        center = torch.zeros(3)
        distance = 1.1 * float(points.norm(dim=-1).max()) / math.sin(half)
        keep = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        for _ in range(passes):
            seen = self._inside_rendered_silhouettes(points, center, distance)
            if seen is None:
                return None
            keep &= seen.to(keep.device)
            if not bool(keep.any()):
                break
            center, _ = bounds_of(points[keep])
            distance = contain_distance(points[keep], center, share, *view, aspect)
        return keep

    def _inside_rendered_silhouettes(
        self, points: Float[Tensor, "N 3"], center: Float[Tensor, "3"], distance: float
    ) -> Optional[Bool[Tensor, "N"]]:
        """``inside_silhouettes`` of the system's render in every fourth test view, the
        turntable moved to look at ``center`` from ``distance``; None without an opacity."""
        inside = torch.ones(points.shape[0], dtype=torch.bool, device=points.device)
        for batch, opacity in self._test_view_opacities((center, distance)):
            if opacity is None:
                return None
            seen = inside_silhouettes(points, batch["c2w"], batch["fovy"], opacity)
            inside &= seen.to(inside.device)
        return inside

    def on_test_batch_start(self, batch, batch_idx, dataloader_idx=0):
        super().on_test_batch_start(batch, batch_idx, dataloader_idx)
        framing = getattr(self, "_test_framing", None)
        if framing is not None and isinstance(batch, dict) and "elevation" in batch:
            center, distance, rays_d_normalize = framing
            refit_turntable(batch, center, distance, rays_d_normalize)

    # ---------- camera refinement ----------

    def refine_cameras(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        """The batch with its dataset views' poses corrected by ``camera_refinement`` (the
        batch itself when refinement is off). The top-level cameras of a training batch are the
        dataset views (the reference image, or a multi-view batch with ``index``); sub-batches
        such as ``random_camera`` are not touched."""
        if self.camera_refinement is None:
            return batch
        return self.camera_refinement.refine_batch(batch)

    def on_train_batch_start(self, batch, batch_idx, unused=0):
        super().on_train_batch_start(batch, batch_idx, unused)
        if self.camera_refinement is not None and isinstance(batch, dict):
            # in place: Lightning hands this dict on to training_step
            batch.update(self.refine_cameras(batch))
            refinement = self.camera_refinement
            with torch.no_grad():
                angle = refinement.rotation.norm(dim=-1).max() * (180.0 / math.pi)
                shift = refinement.translation.norm(dim=-1).max()
            self.log("train_params/camera_rotation_deg", float(angle))
            self.log("train_params/camera_translation", float(shift))

    def own_group_parameters(self) -> List[nn.Parameter]:
        own = super().own_group_parameters()
        if self.camera_refinement is not None:
            own = own + list(self.camera_refinement.parameters())
        return own

    def add_param_groups(self, optim: torch.optim.Optimizer) -> None:
        """The camera deltas get a group of their own (``name: camera_refinement``, their
        ``lr``, no weight decay) unless ``system.optimizer.params`` lists them already."""
        super().add_param_groups(optim)
        if self.camera_refinement is None:
            return
        if any(group.get("name") == "camera_refinement" for group in optim.param_groups):
            return
        params = list(self.camera_refinement.parameters())
        ids = {id(p) for p in params}
        # in case a listed module holds them (e.g. params: {"": ...}): one group each
        for group in optim.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        group = {"params": params, "name": "camera_refinement", "lr": self.camera_refinement.cfg.lr}
        if "weight_decay" in optim.defaults:
            group["weight_decay"] = 0.0
        optim.add_param_group(group)

    # ---------- rendering and evaluation shared by every method ----------

    def forward(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        return self.renderer(**batch)

    def guidance_terms(self, guidance_out: Dict[str, Any]) -> Dict[str, Any]:
        """The guidance's ``loss_*`` terms; its other scalar outputs (timestep, step ranges,
        gradient norms) are logged under ``train_params/``."""
        for name, value in guidance_out.items():
            if not name.startswith("loss_") and (
                isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1)
            ):
                self.log(f"train_params/{name}", float(value))
        return {k: v for k, v in guidance_out.items() if k.startswith("loss_")}

    def eval_rgb(self, out: Dict[str, Any]) -> Tensor:
        """The colour panel of a validation/test image ([H, W, 3] in [0, 1]): the render itself;
        methods that render latents decode them here."""
        return out["comp_rgb"][0]

    def eval_image_items(self, out: Dict[str, Any], batch: Dict[str, Any]) -> List[Dict[str, Any]]:
        """The panels of a validation/test image: rgb, normal (when rendered), opacity."""
        items = [{"type": "rgb", "img": self.eval_rgb(out), "kwargs": {"data_format": "HWC"}}]
        if "comp_normal" in out:
            items.append(
                {
                    "type": "rgb",
                    "img": out["comp_normal"][0],
                    "kwargs": {"data_format": "HWC", "data_range": (0, 1)},
                }
            )
        items.append(
            {
                "type": "grayscale",
                "img": out["opacity"][0, :, :, 0],
                "kwargs": {"cmap": None, "data_range": (0, 1)},
            }
        )
        return items

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        index = int(batch["index"][0])
        self.save_image_grid(
            f"it{self.true_global_step}-{index}.png", self.eval_image_items(out, batch)
        )

    def test_step(self, batch, batch_idx):
        out = self(batch)
        index = int(batch["index"][0])
        self.save_image_grid(
            f"it{self.true_global_step}-test/{index}.png", self.eval_image_items(out, batch)
        )

    def on_test_epoch_end(self) -> None:
        if self.cfg.test_save_video:
            self.save_img_sequence(
                f"it{self.true_global_step}-test",
                f"it{self.true_global_step}-test",
                r"(\d+)\.png",
                save_format="mp4",
                fps=self.cfg.test_video_fps,
            )

    def export_outputs(self) -> List[ExporterOutput]:
        exporter = self.find_module("exporter_type")(
            self.cfg.exporter,
            geometry=self.geometry,
            material=self.material,
            background=self.background,
        )
        return exporter()
