"""system.camera_refinement on BaseLift3DSystem (here zero123-system): off by default, its own
optimiser group, applied to the training batch's dataset view before each step (through
Lightning's hooks), saved with the checkpoint."""

import pytorch_lightning as pl
import torch

import threestudio
from threestudio.data.image import SingleImageDataModule
from threestudio.utils.config import load_config
from threestudio.utils.paths import REPO_ROOT as REPO

TINY = [
    "data.height=16",
    "data.width=16",
    "data.random_camera.height=8",
    "data.random_camera.width=8",
    "data.random_camera.batch_size=1",
    "system.renderer.num_samples_per_ray=32",
    "system.renderer.grid_prune=false",
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    # the reference view alone: no guidance, no model to load
    "system.freq.ref_only_steps=1000",
    "system.loss.lambda_sds=0",
    "system.guidance_type=''",
    "system.prompt_processor_type=''",
]
ON = ["system.camera_refinement.enabled=true", "system.camera_refinement.lr=0.02"]


def make_system(cli):
    cfg = load_config(f"{REPO}/configs/zero123.yaml", cli_args=TINY + cli)
    return cfg, threestudio.find(cfg.system_type)(cfg.system)


def groups_of(optim):
    return {group.get("name"): group for group in optim.param_groups}


def test_off_by_default():
    _, system = make_system([])
    assert system.camera_refinement is None
    assert not any(name.startswith("camera_refinement") for name, _ in system.named_parameters())
    batch = {"c2w": torch.eye(4)[None]}
    assert system.refine_cameras(batch) is batch


def test_the_deltas_get_their_own_optimiser_group(monkeypatch):
    # the published optimiser lists geometry and background under params
    _, system = make_system(ON)
    warnings = []
    monkeypatch.setattr(threestudio, "warn", warnings.append)
    optim = system.configure_optimizers()["optimizer"]
    # the deltas are not reported as left out of system.optimizer.params
    assert not [w for w in warnings if "camera_refinement" in w], warnings
    assert all(p.requires_grad for p in system.camera_refinement.parameters())
    groups = groups_of(optim)
    assert set(groups) == {"geometry", "background", "camera_refinement"}
    refinement = groups["camera_refinement"]
    assert refinement["lr"] == 0.02 and refinement["weight_decay"] == 0.0
    assert {id(p) for p in refinement["params"]} == {
        id(p) for p in system.camera_refinement.parameters()
    }
    assert groups["geometry"]["lr"] == 0.05  # the others keep theirs


def test_without_params_the_deltas_leave_the_all_parameters_group():
    _, system = make_system(ON + ["system.optimizer.params=null"])
    optim = system.configure_optimizers()["optimizer"]
    assert len(optim.param_groups) == 2
    main, refinement = optim.param_groups
    ids = {id(p) for p in system.camera_refinement.parameters()}
    assert not ids & {id(p) for p in main["params"]}
    assert {id(p) for p in refinement["params"]} == ids
    # everything else is still optimised
    n_all = sum(1 for p in system.parameters() if p.requires_grad)
    assert len(main["params"]) + len(refinement["params"]) == n_all


class RecordBatch(pl.Callback):
    """The rays that training_step renders (after every on_train_batch_start hook)."""

    def __init__(self):
        self.rays_o = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rays_o.append(batch["rays_o"].detach().clone())


def test_a_training_run_refines_the_reference_camera(tmp_path):
    torch.manual_seed(0)
    cfg, system = make_system(ON)
    system.set_save_dir(str(tmp_path))
    dm = SingleImageDataModule(cfg.data)
    record = RecordBatch()
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[record],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(system, datamodule=dm)
    refinement = system.camera_refinement
    moved = refinement.rotation.abs().max() + refinement.translation.abs().max()
    assert float(moved) > 0, "the reference-view losses did not reach the camera deltas"
    # steps 2 and 3 rendered rays moved by the deltas of the steps before them
    reference = dm.train_dataset.rays_o
    assert torch.equal(record.rays_o[0], reference)  # step 1: deltas still zero
    assert float((record.rays_o[2] - reference).abs().max()) > 0
    # the dataset's own reference rays are untouched
    assert torch.equal(dm.train_dataset.references[0]["rays_o"], reference)
    # the size of the corrections is logged (as of the last step's start)
    logged = trainer.callback_metrics
    assert float(logged["train_params/camera_translation"]) > 0
    assert "train_params/camera_rotation_deg" in logged
    # saved with the system's state
    state = system.state_dict()
    assert torch.equal(state["camera_refinement.rotation"], refinement.rotation.detach())


def readme_commands(heading):
    text = open(f"{REPO}/README.md").read()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    joined = section.replace("\\\n", " ")
    return [ln.strip() for ln in joined.splitlines() if ln.strip().startswith("python launch.py")]


def test_the_readme_command_parses_and_enables_refinement(monkeypatch):
    """The Camera refinement section's command goes through launch.py's argument parsing, the
    config and the system's and the refinement's config classes (no training)."""
    import shlex
    import sys

    from threestudio.models.camera_refinement import CameraRefinement
    from threestudio.utils.config import parse_structured

    sys.path.insert(0, str(REPO))
    import launch

    commands = readme_commands("## Camera refinement")
    assert len(commands) == 1
    monkeypatch.chdir(REPO)
    args, extras = launch.parse_args(shlex.split(commands[0])[2:])
    cfg = load_config(args.config, cli_args=extras)
    system_cfg = parse_structured(threestudio.find(cfg.system_type).Config, cfg.system)
    refinement = parse_structured(CameraRefinement.Config, system_cfg.camera_refinement)
    assert refinement.enabled and refinement.n_images == 1
    assert cfg.data.image_path.endswith("torus_rgba.png")
