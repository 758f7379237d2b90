"""The shipped configs hold the published threestudio recipes, value for value.

The tables below are threestudio's published configs (github.com/threestudio-project/threestudio,
``configs/<name>``) read as data: every key a file sets, flattened to dotted keys, values as
written (interpolations unresolved, ``???`` for a value the user must give). Each table names the
commit it was read at: the latest version of that file in the public index used; the DreamFusion
ones are the versions this project's configs follow.

``TABLE`` says which published file each config in ``configs/`` follows and where it deviates. A
shipped config must set exactly the published keys, with the published values (same types: an int
step and a float step mean different things to ``C()``), apart from the deviations its entry
lists; each deviation gives its reason, and the shipped YAML must say why in a comment. The
published files of methods this project does not ship yet are in the table as well, so a config
that joins ``configs/`` under a published name is checked from its first commit (re-read the
current published file then: versions before the newest one may be missing from the index).
"""

import os
from dataclasses import dataclass, field

import pytest
import yaml
from omegaconf import OmegaConf

import threestudio
from threestudio.utils.config import load_config, parse_structured
from threestudio.utils.typing import Any, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")

# ============ the published configs ============

# threestudio-project/threestudio@7afa727:configs/dreamfusion-sd.yaml
DREAMFUSION_SD = {
    "name": "dreamfusion-sd",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 64,
    "data.height": 64,
    "data.camera_distance_range": [1.5, 2.0],
    "data.fovy_range": [40, 70],
    "data.elevation_range": [-10, 45],
    "data.light_sample_strategy": "dreamfusion",
    "data.eval_camera_distance": 2.0,
    "data.eval_fovy_deg": 70.0,
    "system_type": "dreamfusion-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 2.0,
    "system.geometry.normal_type": "analytic",
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.pos_encoding_config.otype": "ProgressiveBandHashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.geometry.pos_encoding_config.start_level": 8,
    "system.geometry.pos_encoding_config.start_step": 2000,
    "system.geometry.pos_encoding_config.update_steps": 500,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 2001,
    "system.material.albedo_activation": "sigmoid",
    "system.background_type": "neural-environment-map-background",
    "system.background.color_activation": "sigmoid",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.weighting_strategy": "sds",
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": 0.98,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_orient": [0, 10.0, 1000.0, 5000],
    "system.loss.lambda_sparsity": 1.0,
    "system.loss.lambda_opaque": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.lr": 0.01,
    "system.optimizer.params.background.lr": 0.001,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@abfe213:configs/dreamfusion-if.yaml
# (the newest version found; the HiFA-era commits that moved dreamfusion-sd to SD 2.1-base and
# elevations up to 45 have no version of this file)
DREAMFUSION_IF = {
    "name": "dreamfusion-if",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 64,
    "data.height": 64,
    "data.camera_distance_range": [1.5, 2.0],
    "data.fovy_range": [40, 70],
    "data.elevation_range": [-10, 90],
    "data.light_sample_strategy": "dreamfusion",
    "data.eval_camera_distance": 2.0,
    "data.eval_fovy_deg": 70.0,
    "system_type": "dreamfusion-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 2.0,
    "system.geometry.normal_type": "analytic",
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.pos_encoding_config.otype": "ProgressiveBandHashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.geometry.pos_encoding_config.start_level": 8,
    "system.geometry.pos_encoding_config.start_step": 2000,
    "system.geometry.pos_encoding_config.update_steps": 500,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 2001,
    "system.material.albedo_activation": "scale_-11_01",
    "system.background_type": "neural-environment-map-background",
    "system.background.color_activation": "scale_-11_01",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "deep-floyd-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "deep-floyd-guidance",
    "system.guidance.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "system.guidance.guidance_scale": 20.0,
    "system.guidance.weighting_strategy": "sds",
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": 0.98,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_orient": [0, 10.0, 1000.0, 5000],
    "system.loss.lambda_sparsity": 1.0,
    "system.loss.lambda_opaque": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.lr": 0.01,
    "system.optimizer.params.background.lr": 0.001,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@7afa727:configs/magic3d-coarse-sd.yaml
MAGIC3D_COARSE_SD = {
    "name": "magic3d-coarse-sd",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.width": 64,
    "data.height": 64,
    "data.camera_distance_range": [1.5, 2.0],
    "data.elevation_range": [-10, 45],
    "data.light_sample_strategy": "magic3d",
    "data.eval_camera_distance": 2.0,
    "data.eval_fovy_deg": 70.0,
    "system_type": "magic3d-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 2.0,
    "system.geometry.normal_type": "analytic",
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.4472692374403782,
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_threshold": "auto",
    "system.geometry.isosurface_coarse_to_fine": True,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 2001,
    "system.material.soft_shading": True,
    "system.background_type": "neural-environment-map-background",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.weighting_strategy": "uniform",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": 0.98,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_orient": [0, 10.0, 1000.0, 5000],
    "system.loss.lambda_sparsity": 1.0,
    "system.loss.lambda_opaque": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.lr": 0.01,
    "system.optimizer.params.background.lr": 0.001,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@bf542b2:configs/magic3d-coarse-if.yaml
MAGIC3D_COARSE_IF = {
    "name": "magic3d-coarse-if",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.width": 64,
    "data.height": 64,
    "data.camera_distance_range": [1.5, 2.0],
    "data.light_sample_strategy": "magic3d",
    "data.eval_camera_distance": 2.0,
    "data.eval_fovy_deg": 70.0,
    "system_type": "magic3d-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 2.0,
    "system.geometry.normal_type": "analytic",
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.4472692374403782,
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_threshold": "auto",
    "system.geometry.isosurface_coarse_to_fine": True,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 2001,
    "system.material.soft_shading": True,
    "system.background_type": "neural-environment-map-background",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "deep-floyd-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "deep-floyd-guidance",
    "system.guidance.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "system.guidance.weighting_strategy": "uniform",
    "system.guidance.guidance_scale": 20.0,
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": 0.98,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_orient": [0, 10.0, 1000.0, 5000],
    "system.loss.lambda_sparsity": 1.0,
    "system.loss.lambda_opaque": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.lr": 0.01,
    "system.optimizer.params.background.lr": 0.001,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@02d05b0:configs/magic3d-refine-sd.yaml
# (02d05b0 is from the HiFA series, which later dropped lambda_sds_img/lambda_z_variance from
# magic3d-coarse-sd; a newer version of this file may exist)
MAGIC3D_REFINE_SD = {
    "name": "magic3d-refine-sd",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.width": 512,
    "data.height": 512,
    "data.camera_distance_range": [1.5, 2.0],
    "data.elevation_range": [-10, 45],
    "data.light_sample_strategy": "magic3d",
    "data.fovy_range": [30, 45],
    "data.eval_camera_distance": 2.0,
    "data.eval_fovy_deg": 70.0,
    "system_type": "magic3d-system",
    "system.refinement": True,
    "system.geometry_convert_from": "???",
    "system.geometry_convert_inherit_texture": True,
    "system.geometry_type": "tetrahedra-sdf-grid",
    "system.geometry.radius": 2.0,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_deformable_grid": True,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.4472692374403782,
    "system.geometry.fix_geometry": False,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 0,
    "system.material.soft_shading": True,
    "system.background_type": "neural-environment-map-background",
    "system.renderer_type": "nvdiff-rasterizer",
    "system.renderer.context_type": "gl",
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.weighting_strategy": "sds",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": 0.5,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_sds_img": 0.0,
    "system.loss.lambda_normal_consistency": 10000.0,
    "system.loss.lambda_z_variance": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "trainer.max_steps": 5000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 1,
    "trainer.val_check_interval": 100,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@89b2618:configs/prolificdreamer.yaml
PROLIFICDREAMER = {
    "name": "prolificdreamer",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": [1, 1],
    "data.width": [64, 512],
    "data.height": [64, 512],
    "data.resolution_milestones": [5000],
    "data.camera_distance_range": [1.0, 1.5],
    "data.fovy_range": [40, 70],
    "data.elevation_range": [-10, 45],
    "data.camera_perturb": 0.0,
    "data.center_perturb": 0.0,
    "data.up_perturb": 0.0,
    "data.eval_camera_distance": 1.5,
    "data.eval_fovy_deg": 70.0,
    "system_type": "prolificdreamer-system",
    "system.stage": "coarse",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 1.0,
    "system.geometry.normal_type": None,
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.material_type": "no-material",
    "system.material.n_output_dims": 3,
    "system.material.color_activation": "sigmoid",
    "system.background_type": "neural-environment-map-background",
    "system.background.color_activation": "sigmoid",
    "system.background.random_aug": True,
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.prompt_processor.front_threshold": 30.0,
    "system.prompt_processor.back_threshold": 30.0,
    "system.guidance_type": "stable-diffusion-vsd-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.pretrained_model_name_or_path_lora": "stabilityai/stable-diffusion-2-1",
    "system.guidance.guidance_scale": 7.5,
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": [5000, 0.98, 0.5, 5001],
    "system.guidance.sqrt_anneal": False,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_vsd": 1.0,
    "system.loss.lambda_lora": 1.0,
    "system.loss.lambda_orient": 0.0,
    "system.loss.lambda_sparsity": 10.0,
    "system.loss.lambda_opaque": [10000, 0.0, 1000.0, 10001],
    "system.loss.lambda_z_variance": 0.0,
    "system.optimizer.name": "AdamW",
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.encoding.lr": 0.01,
    "system.optimizer.params.geometry.density_network.lr": 0.001,
    "system.optimizer.params.geometry.feature_network.lr": 0.001,
    "system.optimizer.params.background.lr": 0.001,
    "system.optimizer.params.guidance.lr": 0.0001,
    "trainer.max_steps": 25000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": 32,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@89b2618:configs/prolificdreamer-geometry.yaml
PROLIFICDREAMER_GEOMETRY = {
    "name": "prolificdreamer-geometry",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 512,
    "data.height": 512,
    "data.camera_distance_range": [1.0, 1.5],
    "data.fovy_range": [40, 70],
    "data.elevation_range": [-10, 45],
    "data.camera_perturb": 0.0,
    "data.center_perturb": 0.0,
    "data.up_perturb": 0.0,
    "data.eval_camera_distance": 1.5,
    "data.eval_fovy_deg": 70.0,
    "system_type": "prolificdreamer-system",
    "system.stage": "geometry",
    "system.geometry_convert_from": "???",
    "system.geometry_type": "tetrahedra-sdf-grid",
    "system.geometry.radius": 1.0,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_deformable_grid": True,
    "system.geometry.geometry_only": True,
    "system.material_type": "no-material",
    "system.material.n_output_dims": 0,
    "system.background_type": "solid-color-background",
    "system.renderer_type": "nvdiff-rasterizer",
    "system.renderer.context_type": "gl",
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": [5000, 0.98, 0.5, 5001],
    "system.guidance.weighting_strategy": "sds",
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_normal_consistency": 10000.0,
    "system.loss.lambda_laplacian_smoothness": 10000.0,
    "system.loss.lambda_z_variance": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.005,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "trainer.max_steps": 15000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 1,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": 32,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@9f5bdb7:configs/prolificdreamer-texture.yaml
PROLIFICDREAMER_TEXTURE = {
    "name": "prolificdreamer-texture",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 512,
    "data.height": 512,
    "data.camera_distance_range": [1.0, 1.5],
    "data.fovy_range": [40, 70],
    "data.elevation_range": [-10, 45],
    "data.camera_perturb": 0.0,
    "data.center_perturb": 0.0,
    "data.up_perturb": 0.0,
    "data.eval_camera_distance": 1.5,
    "data.eval_fovy_deg": 70.0,
    "system_type": "prolificdreamer-system",
    "system.stage": "texture",
    "system.geometry_convert_from": "???",
    "system.geometry_type": "tetrahedra-sdf-grid",
    "system.geometry.radius": 1.0,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_deformable_grid": True,
    "system.geometry.isosurface_remove_outliers": True,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.geometry.fix_geometry": True,
    "system.material_type": "no-material",
    "system.material.n_output_dims": 3,
    "system.material.color_activation": "sigmoid",
    "system.background_type": "neural-environment-map-background",
    "system.background.color_activation": "sigmoid",
    "system.renderer_type": "nvdiff-rasterizer",
    "system.renderer.context_type": "gl",
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.prompt_processor.front_threshold": 30.0,
    "system.prompt_processor.back_threshold": 30.0,
    "system.guidance_type": "stable-diffusion-vsd-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.pretrained_model_name_or_path_lora": "stabilityai/stable-diffusion-2-1",
    "system.guidance.guidance_scale": 7.5,
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": [5000, 0.98, 0.5, 5001],
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_vsd": 1.0,
    "system.loss.lambda_vsd_img": 0.0,
    "system.loss.lambda_lora": 1.0,
    "system.optimizer.name": "AdamW",
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.encoding.lr": 0.01,
    "system.optimizer.params.geometry.feature_network.lr": 0.001,
    "system.optimizer.params.background.lr": 0.001,
    "system.optimizer.params.guidance.lr": 0.0001,
    "trainer.max_steps": 30000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 1,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": 32,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@02d05b0:configs/latentnerf.yaml
# (02d05b0 is from the HiFA series, which later dropped lambda_sds_img/lambda_z_variance from
# magic3d-coarse-sd; a newer version of this file may exist)
LATENTNERF = {
    "name": "latentnerf",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.elevation_range": [-10, 45],
    "system_type": "latentnerf-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.n_feature_dims": 4,
    "system.geometry.normal_type": None,
    "system.geometry.density_bias": "blob_dreamfusion",
    "system.geometry.density_activation": "trunc_exp",
    "system.geometry.density_blob_scale": 5.0,
    "system.geometry.density_blob_std": 0.2,
    "system.material_type": "no-material",
    "system.material.n_output_dims": 4,
    "system.material.color_activation": "none",
    "system.background_type": "neural-environment-map-background",
    "system.background.n_output_dims": 4,
    "system.background.color_activation": "none",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.weighting_strategy": "sds",
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_sds_img": 0.0,
    "system.loss.lambda_sparsity": 0.0005,
    "system.loss.lambda_opaque": 0.0,
    "system.loss.lambda_orient": 0.0,
    "system.loss.lambda_z_variance": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.scheduler.name": "SequentialLR",
    "system.scheduler.interval": "step",
    "system.scheduler.warmup_steps": 100,
    "system.scheduler.milestones": ["${system.scheduler.warmup_steps}"],
    "system.scheduler.schedulers": [
        {
            "name": "LinearLR",
            "args": {
                "start_factor": 0.1,
                "end_factor": 1.0,
                "total_iters": "${system.scheduler.warmup_steps}",
            },
        },
        {
            "name": "ExponentialLR",
            "args": {
                "gamma": "${calc_exp_lr_decay_rate:0.1,${sub:${trainer.max_steps},${system.scheduler.warmup_steps}}}"
            },
        },
    ],
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@9f6ea4a:configs/latentnerf-refine.yaml
LATENTNERF_REFINE = {
    "name": "latentnerf-refine",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "system_type": "latentnerf-system",
    "system.refinement": True,
    "system.weights": "???",
    "system.weights_ignore_modules": ["material", "background"],
    "system.geometry_type": "implicit-volume",
    "system.geometry.n_feature_dims": 4,
    "system.geometry.normal_type": None,
    "system.geometry.density_bias": "blob_dreamfusion",
    "system.geometry.density_activation": "trunc_exp",
    "system.geometry.density_blob_scale": 5.0,
    "system.geometry.density_blob_std": 0.2,
    "system.material_type": "sd-latent-adapter-material",
    "system.background_type": "neural-environment-map-background",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.weighting_strategy": "sds",
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_sparsity": 0.0005,
    "system.loss.lambda_opaque": 0.0,
    "system.loss.lambda_orient": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.scheduler.name": "SequentialLR",
    "system.scheduler.interval": "step",
    "system.scheduler.warmup_steps": 100,
    "system.scheduler.milestones": ["${system.scheduler.warmup_steps}"],
    "system.scheduler.schedulers": [
        {
            "name": "LinearLR",
            "args": {
                "start_factor": 0.1,
                "end_factor": 1.0,
                "total_iters": "${system.scheduler.warmup_steps}",
            },
        },
        {
            "name": "ExponentialLR",
            "args": {
                "gamma": "${calc_exp_lr_decay_rate:0.1,${sub:${trainer.max_steps},${system.scheduler.warmup_steps}}}"
            },
        },
    ],
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 1,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@bf542b2:configs/fantasia3d.yaml
FANTASIA3D = {
    "name": "fantasia3d",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 512,
    "data.height": 512,
    "data.camera_distance_range": [3, 3],
    "data.fovy_range": [25, 45],
    "data.camera_perturb": 0.0,
    "data.center_perturb": 0.0,
    "data.up_perturb": 0.0,
    "data.elevation_range": [-10, 45],
    "data.azimuth_range": [-180, 180],
    "data.batch_uniform_azimuth": True,
    "data.eval_camera_distance": 3.0,
    "data.eval_fovy_deg": 45.0,
    "system_type": "fantasia3d-system",
    "system.latent_steps": 1000,
    "system.geometry_type": "implicit-sdf",
    "system.geometry.radius": 1.0,
    "system.geometry.n_feature_dims": 0,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_deformable_grid": True,
    "system.geometry.isosurface_coarse_to_fine": False,
    "system.geometry.shape_init": "sphere",
    "system.geometry.shape_init_params": 0.5,
    "system.material_type": "no-material",
    "system.material.n_output_dims": 0,
    "system.background_type": "solid-color-background",
    "system.renderer_type": "nvdiff-rasterizer",
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.max_step_percent": 0.5,
    "system.guidance.weighting_strategy": "fantasia3d",
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_normal_consistency": 0.0,
    "system.optimizer.name": "AdamW",
    "system.optimizer.args.lr": 0.001,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 1,
    "trainer.val_check_interval": 500,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@3dc1666:configs/fantasia3d-texture.yaml
FANTASIA3D_TEXTURE = {
    "name": "fantasia3d-texture",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 512,
    "data.height": 512,
    "data.camera_distance_range": [3, 3],
    "data.fovy_range": [25, 45],
    "data.camera_perturb": 0.0,
    "data.center_perturb": 0.0,
    "data.up_perturb": 0.0,
    "data.elevation_range": [-10, 45],
    "data.azimuth_range": [-180, 180],
    "data.batch_uniform_azimuth": True,
    "data.eval_camera_distance": 3.0,
    "data.eval_fovy_deg": 45.0,
    "system_type": "fantasia3d-system",
    "system.texture": True,
    "system.geometry_convert_from": "???",
    "system.geometry_convert_inherit_texture": False,
    "system.geometry_type": "tetrahedra-sdf-grid",
    "system.geometry.radius": 1.0,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_deformable_grid": True,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.4472692374403782,
    "system.geometry.n_feature_dims": 8,
    "system.geometry.fix_geometry": True,
    "system.material_type": "pbr-material",
    "system.material.material_activation": "sigmoid",
    "system.material.environment_texture": "load/lights/mud_road_puresky_1k.hdr",
    "system.material.environment_scale": 2.0,
    "system.material.min_metallic": 0.0,
    "system.material.max_metallic": 0.9,
    "system.material.min_roughness": 0.08,
    "system.material.max_roughness": 0.9,
    "system.material.use_bump": True,
    "system.background_type": "solid-color-background",
    "system.renderer_type": "nvdiff-rasterizer",
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.guidance_scale": 100,
    "system.guidance.weighting_strategy": "sds",
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": 0.5,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_normal_consistency": 0.0,
    "system.optimizer.name": "AdamW",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "trainer.max_steps": 5000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 1,
    "trainer.val_check_interval": 500,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@bf542b2:configs/sjc.yaml
SJC = {
    "name": "sjc",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.camera_distance_range": [1.5, 1.5],
    "data.camera_perturb": 0.0,
    "data.center_perturb": 0.0,
    "data.up_perturb": 0.0,
    "data.light_position_perturb": 0.0,
    "data.eval_elevation_deg": 20.0,
    "system_type": "sjc-system",
    "system.geometry_type": "volume-grid",
    "system.geometry.normal_type": None,
    "system.geometry.grid_size": [100, 100, 100],
    "system.geometry.density_bias": -1.0,
    "system.geometry.n_feature_dims": 4,
    "system.material_type": "no-material",
    "system.material.n_output_dims": 4,
    "system.material.color_activation": "none",
    "system.background_type": "textured-background",
    "system.background.n_output_dims": 4,
    "system.background.color_activation": "none",
    "system.background.height": 4,
    "system.background.width": 4,
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.num_samples_per_ray": 512,
    "system.renderer.grid_prune": False,
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.prompt_processor.prompt": "???",
    "system.prompt_processor.view_dependent_prompt_front": True,
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.use_sjc": True,
    "system.guidance.var_red": True,
    "system.guidance.min_step_percent": 0.01,
    "system.guidance.max_step_percent": 0.97,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.center_ratio": 0.78125,
    "system.loss.lambda_depth": 0,
    "system.loss.lambda_emptiness": [5000, 10000.0, 200000.0, 5001],
    "system.loss.emptiness_scale": 10,
    "system.optimizer.name": "Adamax",
    "system.optimizer.args.lr": 0.05,
    "system.optimizer.params.geometry.lr": 0.05,
    "system.optimizer.params.background.lr": 0.0001,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@857fd04:configs/textmesh-if.yaml
# (of the two versions found, the one with Neuralangelo's progressive normal eps that the
# README describes)
TEXTMESH_IF = {
    "name": "textmesh-if",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 64,
    "data.height": 64,
    "data.camera_distance_range": [1.5, 2.0],
    "data.fovy_range": [40, 70],
    "data.elevation_range": [-10, 90],
    "data.light_sample_strategy": "dreamfusion",
    "data.eval_camera_distance": 2.0,
    "data.eval_fovy_deg": 70.0,
    "system_type": "textmesh-system",
    "system.geometry_type": "implicit-sdf",
    "system.geometry.radius": 2.0,
    "system.geometry.normal_type": "finite_difference",
    "system.geometry.finite_difference_normal_eps": "progressive",
    "system.geometry.sdf_bias": "sphere",
    "system.geometry.sdf_bias_params": 0.5,
    "system.geometry.pos_encoding_config.otype": "ProgressiveBandHashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.381912879967776,
    "system.geometry.pos_encoding_config.start_level": 8,
    "system.geometry.pos_encoding_config.start_step": 2000,
    "system.geometry.pos_encoding_config.update_steps": 500,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 2001,
    "system.material.albedo_activation": "sigmoid",
    "system.background_type": "neural-environment-map-background",
    "system.background.color_activation": "sigmoid",
    "system.renderer_type": "neus-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.renderer.cos_anneal_end_steps": "${trainer.max_steps}",
    "system.renderer.eval_chunk_size": 8192,
    "system.prompt_processor_type": "deep-floyd-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "deep-floyd-guidance",
    "system.guidance.pretrained_model_name_or_path": "DeepFloyd/IF-I-XL-v1.0",
    "system.guidance.guidance_scale": 20.0,
    "system.guidance.weighting_strategy": "sds",
    "system.guidance.min_step_percent": 0.02,
    "system.guidance.max_step_percent": 0.98,
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_orient": 0.0,
    "system.loss.lambda_sparsity": 0.0,
    "system.loss.lambda_opaque": 0.0,
    "system.loss.lambda_eikonal": 1000.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.encoding.lr": 0.01,
    "system.optimizer.params.geometry.sdf_network.lr": 0.001,
    "system.optimizer.params.geometry.feature_network.lr": 0.001,
    "system.optimizer.params.background.lr": 0.001,
    "system.optimizer.params.renderer.lr": 0.001,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@13a395a:configs/zero123.yaml
# (the README of 2024 says to download zero123-xl.ckpt, so a newer version may name it)
ZERO123 = {
    "name": "zero123",
    "tag": "${data.random_camera.height}_${rmspace:${basename:${data.image_path}},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "single-image-datamodule",
    "data.image_path": "./load/images/hamburger_rgba.png",
    "data.height": 128,
    "data.width": 128,
    "data.default_elevation_deg": 0.0,
    "data.default_azimuth_deg": 0.0,
    "data.default_camera_distance": 3.8,
    "data.default_fovy_deg": 20.0,
    "data.random_camera.height": 64,
    "data.random_camera.width": 64,
    "data.random_camera.eval_height": 256,
    "data.random_camera.eval_width": 256,
    "data.random_camera.batch_size": 12,
    "data.random_camera.eval_batch_size": 1,
    "data.random_camera.elevation_range": [-10, 80],
    "data.random_camera.azimuth_range": [-180, 180],
    "data.random_camera.camera_distance_range": [3.8, 3.8],
    "data.random_camera.fovy_range": [20.0, 20.0],
    "data.random_camera.camera_perturb": 0.0,
    "data.random_camera.center_perturb": 0.0,
    "data.random_camera.up_perturb": 0.0,
    "data.random_camera.light_position_perturb": 1.0,
    "data.random_camera.light_distance_range": [7.5, 10.0],
    "data.random_camera.eval_elevation_deg": "${data.default_elevation_deg}",
    "data.random_camera.eval_camera_distance": "${data.default_camera_distance}",
    "data.random_camera.eval_fovy_deg": "${data.default_fovy_deg}",
    "data.random_camera.light_sample_strategy": "dreamfusion",
    "data.random_camera.batch_uniform_azimuth": False,
    "data.random_camera.n_val_views": 30,
    "data.random_camera.n_test_views": 120,
    "system_type": "zero123-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 2.0,
    "system.geometry.normal_type": "analytic",
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.geometry.mlp_network_config.otype": "VanillaMLP",
    "system.geometry.mlp_network_config.activation": "ReLU",
    "system.geometry.mlp_network_config.output_activation": "none",
    "system.geometry.mlp_network_config.n_neurons": 64,
    "system.geometry.mlp_network_config.n_hidden_layers": 1,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 100000,
    "system.material.textureless_prob": 0.05,
    "system.material.albedo_activation": "sigmoid",
    "system.background_type": "neural-environment-map-background",
    "system.background.color_activation": "sigmoid",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.renderer.return_comp_normal": "${gt0:${system.loss.lambda_normal_smooth}}",
    "system.renderer.return_normal_perturb": "${gt0:${system.loss.lambda_3d_normal_smooth}}",
    "system.prompt_processor_type": "zero123-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "",
    "system.prompt_processor.prompt": "",
    "system.guidance_type": "zero123-guidance",
    "system.guidance.pretrained_model_name_or_path": "./load/zero123/105000.ckpt",
    "system.guidance.pretrained_config": "./load/zero123/sd-objaverse-finetune-c_concat-256.yaml",
    "system.guidance.vram_O": "${not:${gt0:${system.freq.guidance_eval}}}",
    "system.guidance.cond_image_path": "${data.image_path}",
    "system.guidance.cond_elevation_deg": "${data.default_elevation_deg}",
    "system.guidance.cond_azimuth_deg": "${data.default_azimuth_deg}",
    "system.guidance.cond_camera_distance": "${data.default_camera_distance}",
    "system.guidance.guidance_scale": 3.0,
    "system.guidance.min_step_percent": [0, 0.4, 0.02, 2000],
    "system.guidance.max_step_percent": [0, 0.85, 0.85, 2000],
    "system.freq.n_ref": 2,
    "system.freq.ref_only_steps": 0,
    "system.freq.guidance_eval": 0,
    "system.freq.ref_or_zero123": "accumulate",
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 0.03,
    "system.loss.lambda_rgb": 500.0,
    "system.loss.lambda_mask": 50.0,
    "system.loss.lambda_depth": 0.05,
    "system.loss.lambda_normal_smooth": 5.0,
    "system.loss.lambda_3d_normal_smooth": 2.0,
    "system.loss.lambda_orient": 1.0,
    "system.loss.lambda_sparsity": 0.1,
    "system.loss.lambda_opaque": 0.05,
    "system.optimizer.name": "Adan",
    "system.optimizer.args.lr": 0.05,
    "system.optimizer.args.max_grad_norm": 5.0,
    "system.optimizer.args.eps": 1e-08,
    "system.optimizer.args.weight_decay": 1e-05,
    "system.optimizer.params.geometry.lr": "${system.optimizer.args.lr}",
    "system.optimizer.params.background.lr": "${system.optimizer.args.lr}",
    "trainer.max_steps": 1999,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 100,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@919434c:configs/stable-zero123.yaml
# (another version, 5e42131, names the checkpoint stable-zero123.ckpt as the README does;
# which is newer is not known here)
STABLE_ZERO123 = {
    "name": "zero123-sai",
    "tag": "${data.random_camera.height}_${rmspace:${basename:${data.image_path}},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "single-image-datamodule",
    "data.image_path": "./load/images/hamburger_rgba.png",
    "data.height": [128, 256, 512],
    "data.width": [128, 256, 512],
    "data.resolution_milestones": [200, 300],
    "data.default_elevation_deg": 5.0,
    "data.default_azimuth_deg": 0.0,
    "data.default_camera_distance": 3.8,
    "data.default_fovy_deg": 20.0,
    "data.requires_depth": "${cmaxgt0orcmaxgt0:${system.loss.lambda_depth},${system.loss.lambda_depth_rel}}",
    "data.requires_normal": "${cmaxgt0:${system.loss.lambda_normal}}",
    "data.random_camera.height": [64, 128, 256],
    "data.random_camera.width": [64, 128, 256],
    "data.random_camera.batch_size": [12, 8, 4],
    "data.random_camera.resolution_milestones": [200, 300],
    "data.random_camera.eval_height": 512,
    "data.random_camera.eval_width": 512,
    "data.random_camera.eval_batch_size": 1,
    "data.random_camera.elevation_range": [-10, 80],
    "data.random_camera.azimuth_range": [-180, 180],
    "data.random_camera.camera_distance_range": [3.8, 3.8],
    "data.random_camera.fovy_range": [20.0, 20.0],
    "data.random_camera.progressive_until": 0,
    "data.random_camera.camera_perturb": 0.0,
    "data.random_camera.center_perturb": 0.0,
    "data.random_camera.up_perturb": 0.0,
    "data.random_camera.light_position_perturb": 1.0,
    "data.random_camera.light_distance_range": [7.5, 10.0],
    "data.random_camera.eval_elevation_deg": "${data.default_elevation_deg}",
    "data.random_camera.eval_camera_distance": "${data.default_camera_distance}",
    "data.random_camera.eval_fovy_deg": "${data.default_fovy_deg}",
    "data.random_camera.light_sample_strategy": "dreamfusion",
    "data.random_camera.batch_uniform_azimuth": False,
    "data.random_camera.n_val_views": 30,
    "data.random_camera.n_test_views": 120,
    "system_type": "zero123-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 2.0,
    "system.geometry.normal_type": "analytic",
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.geometry.mlp_network_config.otype": "VanillaMLP",
    "system.geometry.mlp_network_config.activation": "ReLU",
    "system.geometry.mlp_network_config.output_activation": "none",
    "system.geometry.mlp_network_config.n_neurons": 64,
    "system.geometry.mlp_network_config.n_hidden_layers": 2,
    "system.material_type": "diffuse-with-point-light-material",
    "system.material.ambient_only_steps": 100000,
    "system.material.textureless_prob": 0.05,
    "system.material.albedo_activation": "sigmoid",
    "system.background_type": "solid-color-background",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.renderer.return_comp_normal": "${cmaxgt0:${system.loss.lambda_normal_smooth}}",
    "system.renderer.return_normal_perturb": "${cmaxgt0:${system.loss.lambda_3d_normal_smooth}}",
    "system.prompt_processor_type": "dummy-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "",
    "system.prompt_processor.prompt": "",
    "system.guidance_type": "stable-zero123-guidance",
    "system.guidance.pretrained_config": "./load/zero123/sd-objaverse-finetune-c_concat-256.yaml",
    "system.guidance.pretrained_model_name_or_path": "./load/zero123/stable_zero123.ckpt",
    "system.guidance.vram_O": "${not:${gt0:${system.freq.guidance_eval}}}",
    "system.guidance.cond_image_path": "${data.image_path}",
    "system.guidance.cond_elevation_deg": "${data.default_elevation_deg}",
    "system.guidance.cond_azimuth_deg": "${data.default_azimuth_deg}",
    "system.guidance.cond_camera_distance": "${data.default_camera_distance}",
    "system.guidance.guidance_scale": 3.0,
    "system.guidance.min_step_percent": [50, 0.7, 0.3, 200],
    "system.guidance.max_step_percent": [50, 0.98, 0.8, 200],
    "system.freq.ref_only_steps": 0,
    "system.freq.guidance_eval": 0,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 0.1,
    "system.loss.lambda_rgb": [100, 500.0, 1000.0, 400],
    "system.loss.lambda_mask": 50.0,
    "system.loss.lambda_depth": 0.0,
    "system.loss.lambda_depth_rel": 0.0,
    "system.loss.lambda_normal": 0.0,
    "system.loss.lambda_normal_smooth": [100, 7.0, 5.0, 150, 10.0, 200],
    "system.loss.lambda_3d_normal_smooth": [100, 7.0, 5.0, 150, 10.0, 200],
    "system.loss.lambda_orient": 1.0,
    "system.loss.lambda_sparsity": 0.5,
    "system.loss.lambda_opaque": 0.5,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-08,
    "trainer.max_steps": 600,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 100,
    "trainer.enable_progress_bar": True,
    "trainer.precision": 32,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": 100,
}

# threestudio-project/threestudio@7afa727:configs/magic123-coarse-sd.yaml
MAGIC123_COARSE_SD = {
    "name": "magic123-coarse-sd",
    "tag": "${rmspace:${basename:${data.image_path}},_}-${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "single-image-datamodule",
    "data.image_path": "???",
    "data.height": 128,
    "data.width": 128,
    "data.default_elevation_deg": 0.0,
    "data.default_azimuth_deg": 0.0,
    "data.default_camera_distance": 2.5,
    "data.default_fovy_deg": 40.0,
    "data.random_camera.batch_size": 1,
    "data.random_camera.height": 128,
    "data.random_camera.width": 128,
    "data.random_camera.elevation_range": [-45, 45],
    "data.random_camera.azimuth_range": [-180, 180],
    "data.random_camera.camera_distance_range": [2.5, 2.5],
    "data.random_camera.fovy_range": [40.0, 40.0],
    "data.random_camera.camera_perturb": 0.0,
    "data.random_camera.center_perturb": 0.0,
    "data.random_camera.up_perturb": 0.0,
    "data.random_camera.eval_height": 512,
    "data.random_camera.eval_width": 512,
    "data.random_camera.eval_elevation_deg": "${data.default_elevation_deg}",
    "data.random_camera.eval_camera_distance": "${data.default_camera_distance}",
    "data.random_camera.eval_fovy_deg": "${data.default_fovy_deg}",
    "data.random_camera.n_val_views": 4,
    "data.random_camera.n_test_views": 120,
    "system_type": "magic123-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 1.0,
    "system.geometry.normal_type": "analytic",
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.pos_encoding_config.otype": "ProgressiveBandHashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.geometry.pos_encoding_config.start_level": 8,
    "system.geometry.pos_encoding_config.start_step": 2000,
    "system.geometry.pos_encoding_config.update_steps": 300,
    "system.geometry.mlp_network_config.otype": "VanillaMLP",
    "system.geometry.mlp_network_config.activation": "ReLU",
    "system.geometry.mlp_network_config.output_activation": "none",
    "system.geometry.mlp_network_config.n_neurons": 64,
    "system.geometry.mlp_network_config.n_hidden_layers": 2,
    "system.material_type": "no-material",
    "system.material.requires_normal": True,
    "system.background_type": "solid-color-background",
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.estimator": "occgrid",
    "system.renderer.num_samples_per_ray": 256,
    "system.renderer.return_comp_normal": True,
    "system.guidance_3d_type": "zero123-unified-guidance",
    "system.guidance_3d.guidance_type": "sds",
    "system.guidance_3d.guidance_scale": 5.0,
    "system.guidance_3d.min_step_percent": 0.2,
    "system.guidance_3d.max_step_percent": 0.6,
    "system.guidance_3d.cond_image_path": "${data.image_path}",
    "system.guidance_3d.cond_elevation_deg": "${data.default_elevation_deg}",
    "system.guidance_3d.cond_azimuth_deg": "${data.default_azimuth_deg}",
    "system.guidance_3d.cond_camera_distance": "${data.default_camera_distance}",
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-unified-guidance",
    "system.guidance.guidance_type": "sds",
    "system.guidance.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.min_step_percent": 0.2,
    "system.guidance.max_step_percent": 0.6,
    "system.guidance.use_img_loss": False,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_rgb": 1000.0,
    "system.loss.lambda_mask": 100.0,
    "system.loss.lambda_sd": 0.025,
    "system.loss.lambda_3d_sd": 1.0,
    "system.loss.lambda_sd_img": 0.0,
    "system.loss.lambda_orient": 0.0,
    "system.loss.lambda_normal_smoothness_2d": 1000.0,
    "system.loss.lambda_sparsity": 0.0,
    "system.loss.lambda_opaque": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-08,
    "system.optimizer.params.geometry.encoding.lr": 0.01,
    "system.optimizer.params.geometry.density_network.lr": 0.001,
    "system.optimizer.params.geometry.feature_network.lr": 0.001,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 100,
    "trainer.enable_progress_bar": True,
    "trainer.precision": 32,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@7afa727:configs/magic123-refine-sd.yaml
MAGIC123_REFINE_SD = {
    "name": "magic123-refine-sd",
    "tag": "${rmspace:${basename:${data.image_path}},_}-${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "single-image-datamodule",
    "data.image_path": "???",
    "data.height": 512,
    "data.width": 512,
    "data.default_elevation_deg": 0.0,
    "data.default_azimuth_deg": 0.0,
    "data.default_camera_distance": 2.5,
    "data.default_fovy_deg": 40.0,
    "data.random_camera.batch_size": 1,
    "data.random_camera.height": 512,
    "data.random_camera.width": 512,
    "data.random_camera.elevation_range": [-45, 45],
    "data.random_camera.azimuth_range": [-180, 180],
    "data.random_camera.camera_distance_range": [2.5, 2.5],
    "data.random_camera.fovy_range": [40.0, 40.0],
    "data.random_camera.camera_perturb": 0.0,
    "data.random_camera.center_perturb": 0.0,
    "data.random_camera.up_perturb": 0.0,
    "data.random_camera.eval_height": 512,
    "data.random_camera.eval_width": 512,
    "data.random_camera.eval_elevation_deg": "${data.default_elevation_deg}",
    "data.random_camera.eval_camera_distance": "${data.default_camera_distance}",
    "data.random_camera.eval_fovy_deg": "${data.default_fovy_deg}",
    "data.random_camera.n_val_views": 4,
    "data.random_camera.n_test_views": 120,
    "system_type": "magic123-system",
    "system.refinement": True,
    "system.geometry_convert_from": "???",
    "system.geometry_convert_inherit_texture": True,
    "system.geometry_type": "tetrahedra-sdf-grid",
    "system.geometry.radius": 1.0,
    "system.geometry.isosurface_resolution": 128,
    "system.geometry.isosurface_deformable_grid": True,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.geometry.mlp_network_config.otype": "VanillaMLP",
    "system.geometry.mlp_network_config.activation": "ReLU",
    "system.geometry.mlp_network_config.output_activation": "none",
    "system.geometry.mlp_network_config.n_neurons": 64,
    "system.geometry.mlp_network_config.n_hidden_layers": 2,
    "system.geometry.fix_geometry": False,
    "system.material_type": "no-material",
    "system.background_type": "solid-color-background",
    "system.renderer_type": "nvdiff-rasterizer",
    "system.renderer.context_type": "gl",
    "system.guidance_3d_type": "zero123-unified-guidance",
    "system.guidance_3d.guidance_type": "sds",
    "system.guidance_3d.guidance_scale": 5.0,
    "system.guidance_3d.min_step_percent": 0.2,
    "system.guidance_3d.max_step_percent": 0.6,
    "system.guidance_3d.cond_image_path": "${data.image_path}",
    "system.guidance_3d.cond_elevation_deg": "${data.default_elevation_deg}",
    "system.guidance_3d.cond_azimuth_deg": "${data.default_azimuth_deg}",
    "system.guidance_3d.cond_camera_distance": "${data.default_camera_distance}",
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-unified-guidance",
    "system.guidance.guidance_type": "sds",
    "system.guidance.pretrained_model_name_or_path": "runwayml/stable-diffusion-v1-5",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.min_step_percent": 0.2,
    "system.guidance.max_step_percent": 0.6,
    "system.guidance.use_img_loss": False,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_rgb": 1000.0,
    "system.loss.lambda_mask": 100.0,
    "system.loss.lambda_sd": 0.025,
    "system.loss.lambda_3d_sd": 1.0,
    "system.loss.lambda_sd_img": 0.0,
    "system.loss.lambda_normal_consistency": 1000.0,
    "system.loss.lambda_laplacian_smoothness": 0.0,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.001,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-08,
    "trainer.max_steps": 10000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 1,
    "trainer.val_check_interval": 100,
    "trainer.enable_progress_bar": True,
    "trainer.precision": 32,
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@7afa727:configs/hifa.yaml
HIFA = {
    "name": "hifa",
    "tag": "${rmspace:${system.prompt_processor.prompt},_}",
    "exp_root_dir": "outputs",
    "seed": 0,
    "data_type": "random-camera-datamodule",
    "data.batch_size": 1,
    "data.width": 512,
    "data.height": 512,
    "data.camera_distance_range": [1.0, 1.5],
    "data.fovy_range": [40, 70],
    "data.elevation_range": [-10, 45],
    "data.camera_perturb": 0.0,
    "data.center_perturb": 0.0,
    "data.up_perturb": 0.0,
    "data.eval_camera_distance": 1.5,
    "data.eval_fovy_deg": 70.0,
    "system_type": "dreamfusion-system",
    "system.geometry_type": "implicit-volume",
    "system.geometry.radius": 1.0,
    "system.geometry.normal_type": None,
    "system.geometry.density_bias": "blob_magic3d",
    "system.geometry.density_activation": "softplus",
    "system.geometry.density_blob_scale": 10.0,
    "system.geometry.density_blob_std": 0.5,
    "system.geometry.pos_encoding_config.otype": "HashGrid",
    "system.geometry.pos_encoding_config.n_levels": 16,
    "system.geometry.pos_encoding_config.n_features_per_level": 2,
    "system.geometry.pos_encoding_config.log2_hashmap_size": 19,
    "system.geometry.pos_encoding_config.base_resolution": 16,
    "system.geometry.pos_encoding_config.per_level_scale": 1.447269237440378,
    "system.material_type": "no-material",
    "system.material.n_output_dims": 3,
    "system.material.color_activation": "sigmoid",
    "system.background_type": "neural-environment-map-background",
    "system.background.color_activation": "sigmoid",
    "system.background.random_aug": True,
    "system.renderer_type": "nerf-volume-renderer",
    "system.renderer.radius": "${system.geometry.radius}",
    "system.renderer.num_samples_per_ray": 512,
    "system.prompt_processor_type": "stable-diffusion-prompt-processor",
    "system.prompt_processor.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.prompt_processor.prompt": "???",
    "system.guidance_type": "stable-diffusion-guidance",
    "system.guidance.pretrained_model_name_or_path": "stabilityai/stable-diffusion-2-1-base",
    "system.guidance.guidance_scale": 100.0,
    "system.guidance.weighting_strategy": "sds",
    "system.guidance.min_step_percent": 0.3,
    "system.guidance.max_step_percent": 0.98,
    "system.guidance.sqrt_anneal": True,
    "system.guidance.use_img_loss": True,
    "system.loggers.wandb.enable": False,
    "system.loggers.wandb.project": "threestudio",
    "system.loggers.wandb.name": "None",
    "system.loss.lambda_sds": 1.0,
    "system.loss.lambda_sds_img": 0.01,
    "system.loss.lambda_orient": 0.0,
    "system.loss.lambda_sparsity": 1.0,
    "system.loss.lambda_opaque": 0.0,
    "system.loss.lambda_z_variance": 100,
    "system.optimizer.name": "Adam",
    "system.optimizer.args.lr": 0.01,
    "system.optimizer.args.betas": [0.9, 0.99],
    "system.optimizer.args.eps": 1e-15,
    "system.optimizer.params.geometry.encoding.lr": 0.01,
    "system.optimizer.params.geometry.density_network.lr": 0.001,
    "system.optimizer.params.geometry.feature_network.lr": 0.001,
    "system.optimizer.params.background.lr": 0.001,
    "trainer.max_steps": 25000,
    "trainer.log_every_n_steps": 1,
    "trainer.num_sanity_val_steps": 0,
    "trainer.val_check_interval": 200,
    "trainer.enable_progress_bar": True,
    "trainer.precision": "16-mixed",
    "checkpoint.save_last": True,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": "${trainer.max_steps}",
}

# threestudio-project/threestudio@363da45:configs/gradio/fantasia3d.yaml
FANTASIA3D_GRADIO = {
    **{k: v for k, v in FANTASIA3D.items() if not k.startswith("checkpoint.")},
    "exp_root_dir": "outputs-gradio",
    "system.renderer.context_type": "cuda",
    "system.exporter_type": "mesh-exporter",
    "system.exporter.fmt": "obj",
    "system.exporter.save_uv": False,
    "system.exporter.save_texture": False,
    "system.exporter.context_type": "cuda",
    "trainer.max_steps": 5000,
    "trainer.val_check_interval": 200,
    "checkpoint.save_last": False,
    "checkpoint.save_top_k": -1,
    "checkpoint.every_n_train_steps": 0,
}


PUBLISHED: Dict[str, Dict[str, Any]] = {
    "dreamfusion-sd.yaml": DREAMFUSION_SD,
    "dreamfusion-if.yaml": DREAMFUSION_IF,
    "magic3d-coarse-sd.yaml": MAGIC3D_COARSE_SD,
    "magic3d-coarse-if.yaml": MAGIC3D_COARSE_IF,
    "magic3d-refine-sd.yaml": MAGIC3D_REFINE_SD,
    "prolificdreamer.yaml": PROLIFICDREAMER,
    "prolificdreamer-geometry.yaml": PROLIFICDREAMER_GEOMETRY,
    "prolificdreamer-texture.yaml": PROLIFICDREAMER_TEXTURE,
    "latentnerf.yaml": LATENTNERF,
    "latentnerf-refine.yaml": LATENTNERF_REFINE,
    "fantasia3d.yaml": FANTASIA3D,
    "fantasia3d-texture.yaml": FANTASIA3D_TEXTURE,
    "gradio/fantasia3d.yaml": FANTASIA3D_GRADIO,
    "sjc.yaml": SJC,
    "textmesh-if.yaml": TEXTMESH_IF,
    "zero123.yaml": ZERO123,
    "stable-zero123.yaml": STABLE_ZERO123,
    "magic123-coarse-sd.yaml": MAGIC123_COARSE_SD,
    "magic123-refine-sd.yaml": MAGIC123_REFINE_SD,
    "hifa.yaml": HIFA,
}

# Config names threestudio publishes (its configs/ folder and READMEs) that have no table here
# yet. A config shipped under one of these names (or a table's) must have an entry in TABLE.
OTHER_PUBLISHED_NAMES = {
    "co3d-imagecondition.yaml",
    "control4d-static.yaml",
    "dreamfusion-if-2order.yaml",
    "dreamfusion-if-lowres.yaml",
    "dreamfusion-if-perpneg.yaml",
    "dreamfusion-noact.yaml",
    "dreamfusion-sd-eff.yaml",
    "dreamfusion-sdxl.yaml",
    "dreamfusion-wonormal.yaml",
    "dreamfusion.yaml",
    "fantasia3d-texture-vsd.yaml",
    "imagecondition.yaml",
    "instructnerf2nerf.yaml",
    "latentnerf-vsd.yaml",
    "latentnerf-wonormal.yaml",
    "latentshape-refine.yaml",
    "latentshape.yaml",
    "magic123-coarse-sd-normal.yaml",
    "magic123-hifa-coarse-sd.yaml",
    "magic123-hifa-refine-sd.yaml",
    "magic123-refine-sd-geometry.yaml",
    "magic3d-coarse.yaml",
    "magic3d-refine.yaml",
    "prolificdreamer-hifa.yaml",
    "prolificdreamer-patch.yaml",
    "prolificdreamer-scene-hifa.yaml",
    "prolificdreamer-scene.yaml",
    "sketchshape-refine.yaml",
    "sketchshape.yaml",
}
PUBLISHED_NAMES = set(PUBLISHED) | OTHER_PUBLISHED_NAMES

# ============ what each shipped config follows ============


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()  # a published key the shipped config leaves out


@dataclass(frozen=True)
class Deviation:
    value: Any  # what the shipped config holds instead, or ABSENT
    reason: str
    mention: str  # text a comment in the shipped YAML must contain (where it says why)


@dataclass(frozen=True)
class Recipe:
    published: str  # the published file, a key of PUBLISHED
    deviations: Dict[str, Deviation] = field(default_factory=dict)


NO_WANDB = (
    "this project has no wandb logger (launch.py logs to TensorBoard and CSV), so the published "
    "system.loggers block, which keeps wandb disabled, would be read by nothing"
)


def without_loggers(published: Dict[str, Any]) -> Dict[str, Deviation]:
    return {
        key: Deviation(ABSENT, NO_WANDB, "system.loggers")
        for key in published
        if key.startswith("system.loggers.")
    }


TABLE: Dict[str, Recipe] = {name: Recipe(name) for name in PUBLISHED}
TABLE.update(
    {
        "dreamfusion-sd.yaml": Recipe("dreamfusion-sd.yaml", without_loggers(DREAMFUSION_SD)),
        "dreamfusion-if.yaml": Recipe("dreamfusion-if.yaml", without_loggers(DREAMFUSION_IF)),
        # threestudio's early dreamfusion.yaml and dreamfusion-wonormal.yaml were development
        # snapshots, which its README later replaced with dreamfusion-sd/-if; the shipped files
        # keep the names users type and follow dreamfusion-sd
        "dreamfusion.yaml": Recipe(
            "dreamfusion-sd.yaml",
            {
                "name": Deviation(
                    "dreamfusion",
                    "trials land in outputs/dreamfusion/, as the command in the README says",
                    "name: dreamfusion",
                ),
                **without_loggers(DREAMFUSION_SD),
            },
        ),
        "dreamfusion-wonormal.yaml": Recipe(
            "dreamfusion-sd.yaml",
            {
                "name": Deviation(
                    "dreamfusion-wonormal", "the config's own name", "name: dreamfusion-wonormal"
                ),
                "system.geometry.normal_type": Deviation(
                    None, "nothing shades the colour, so no normals are needed", "normal_type"
                ),
                "system.material_type": Deviation(
                    "no-material",
                    "the field's colour is rendered directly, without a material assumption",
                    "material_type",
                ),
                "system.material.ambient_only_steps": Deviation(
                    ABSENT, "a diffuse-material setting", "ambient_only_steps"
                ),
                "system.material.albedo_activation": Deviation(
                    ABSENT, "a diffuse-material setting", "albedo_activation"
                ),
                "system.material.n_output_dims": Deviation(
                    3, "no-material's colour, as in the published prolificdreamer", "n_output_dims"
                ),
                "system.material.color_activation": Deviation(
                    "sigmoid",
                    "no-material's colour, as in the published prolificdreamer",
                    "color_activation",
                ),
                "system.loss.lambda_orient": Deviation(
                    0.0, "the orientation loss needs normals", "lambda_orient"
                ),
                **without_loggers(DREAMFUSION_SD),
            },
        ),
    }
)

# ---- magic3d ----
TABLE.update({})

# ---- latentnerf ----
TABLE.update({})

# ---- fantasia3d ----
TABLE.update(
    {
        name: Recipe(name, without_loggers(PUBLISHED[name]))
        for name in ("fantasia3d.yaml", "fantasia3d-texture.yaml", "gradio/fantasia3d.yaml")
    }
)

# ---- sjc ----
TABLE.update({})

# ---- textmesh ----
TABLE.update({})

# ---- sdi ----
TABLE.update({})

# ---- eff-dreamfusion ----
TABLE.update({})

# ---- unified-guidance ----
TABLE.update({})

# ---- hifa ----
TABLE.update({})

SHIPPED: List[str] = sorted(name for name in TABLE if os.path.isfile(os.path.join(CONFIGS, name)))

# values for the keys a published file leaves to the user (???)
FILL = {"system.prompt_processor.prompt": "a hamburger"}

# ============ helpers ============


def flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def unflatten(flat: Dict[str, Any]) -> Dict[str, Any]:
    nested: Dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 and 1.0 differ: C() reads an int step as
    global steps and a float one as epochs)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def expected_values(recipe: Recipe) -> Dict[str, Any]:
    values = dict(PUBLISHED[recipe.published])
    for key, deviation in recipe.deviations.items():
        if deviation.value is ABSENT:
            values.pop(key)
        else:
            values[key] = deviation.value
    return values


def fills(values: Dict[str, Any]) -> Dict[str, Any]:
    return {key: FILL.get(key, "placeholder") for key, v in values.items() if v == "???"}


def resolved(flat: Dict[str, Any]) -> Dict[str, Any]:
    conf = OmegaConf.create(unflatten(flat))
    return flatten(OmegaConf.to_container(conf, resolve=True))


def yaml_comments(path: str) -> List[str]:
    with open(path) as f:
        return [line.split("#", 1)[1] for line in f if "#" in line]


# ============ tests ============


def test_tables_cover_the_shipped_configs_named_like_published_ones():
    named_like_published = [name for name in sorted(os.listdir(CONFIGS)) if name in PUBLISHED_NAMES]
    assert "dreamfusion-sd.yaml" in named_like_published
    missing = [name for name in named_like_published if name not in TABLE]
    assert not missing, f"add these configs to TABLE in {__file__}: {missing}"
    assert set(TABLE) <= PUBLISHED_NAMES
    assert all(recipe.published in PUBLISHED for recipe in TABLE.values())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_tables_resolve(name):
    """Every table is well-formed data: its interpolations resolve once ??? keys are given."""
    table = PUBLISHED[name]
    values = resolved({**table, **fills(table)})
    assert set(values) == set(table)
    assert "???" not in values.values()


def test_deviations_are_real_and_explained():
    for name, recipe in TABLE.items():
        published = PUBLISHED[recipe.published]
        for key, deviation in recipe.deviations.items():
            assert deviation.reason and deviation.mention, (name, key)
            if deviation.value is ABSENT:
                assert key in published, f"{name}: {key} is not in {recipe.published}"
            else:
                assert not same(deviation.value, published.get(key, ABSENT)), (
                    f"{name}: {key} equals the published value; drop the deviation"
                )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_holds_the_published_values(name):
    path = os.path.join(CONFIGS, name)
    recipe = TABLE[name]
    expected = expected_values(recipe)

    # the keys the file sets, as written
    with open(path) as f:
        assert isinstance(yaml.safe_load(f), dict)
    written = flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
    extra = sorted(set(written) - set(expected))
    missing = sorted(set(expected) - set(written))
    assert not extra, (
        f"{name} sets keys that {recipe.published} does not: {extra}; match the published file "
        "or list them in TABLE as deviations with their reasons"
    )
    assert not missing, f"{name} leaves out keys that {recipe.published} sets: {missing}"
    for key, value in expected.items():
        assert (written[key] == "???") == (value == "???"), f"{name}: {key} is {written[key]!r}"

    # the values, as the project loads them
    to_fill = fills(expected)
    cfg = load_config(path, cli_args=[f"{key}={value}" for key, value in to_fill.items()])
    loaded = flatten(OmegaConf.to_container(cfg, resolve=True))
    want = resolved({**expected, **to_fill})
    wrong = {key: (loaded[key], want[key]) for key in want if not same(loaded[key], want[key])}
    assert not wrong, f"{name}: (shipped, published) differ: {wrong}"

    # each deviation is explained in the file itself
    comments = yaml_comments(path)
    for key, deviation in recipe.deviations.items():
        assert any(deviation.mention in c for c in comments), (
            f"{name}: add a comment on why {key} deviates (mentioning '{deviation.mention}')"
        )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_parses_into_the_modules_configs(name):
    """The published values are accepted by this project's Config classes as they are."""
    path = os.path.join(CONFIGS, name)
    to_fill = fills(expected_values(TABLE[name]))
    cfg = load_config(path, cli_args=[f"{key}={value}" for key, value in to_fill.items()])
    data_cls = getattr(threestudio.find(cfg.data_type), "config_class", None)
    if data_cls is not None:
        parse_structured(data_cls, cfg.data)
    system_cls = threestudio.find(cfg.system_type)
    system_cfg = parse_structured(system_cls.Config, cfg.system)
    for key in list(system_cfg.keys()):
        module_name = system_cfg[key]
        if key.endswith("_type") and isinstance(module_name, str) and module_name:
            module_cls = threestudio.find(module_name)
            parse_structured(module_cls.Config, system_cfg.get(key[: -len("_type")]) or {})
