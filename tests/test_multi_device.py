"""Several devices through Lightning's ddp strategy: two CPU processes joined by gloo.

The end-to-end test runs launch.py with the tiny extension (tests/fixtures/ext_tiny_fit), whose
``log_steps`` hook makes every rank append the cameras and a global random draw of each step to
save/steps-rank<R>.txt."""

import csv
import os
import shutil
import subprocess
import sys

import imageio.v2 as imageio
import pytest
import torch

from threestudio.utils.distributed import count_devices, devices_from_config, env_global_rank
from threestudio.utils.errors import ConfigError
from threestudio.utils.paths import REPO_ROOT as REPO

LAUNCH = os.path.join(REPO, "launch.py")
CONFIG = os.path.join(REPO, "tests", "fixtures", "tiny_fit.yaml")
TWO_CPUS = ["trainer.accelerator=cpu", "trainer.devices=2"]
COMMON = ["trainer.enable_progress_bar=false", "system.log_steps=true"]

gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this build of torch",
)


# ---------- unit tests: device choice and ranks from the environment ----------


@pytest.mark.parametrize(
    "devices, count",
    [(2, 2), ("3", 3), ([0, 1], 2), ("0,1,2", 3), ("auto", None), (-1, None), ("-1", None)],
)
def test_count_devices(devices, count):
    assert count_devices(devices) == count


@pytest.mark.parametrize("devices", [True, "two", 1.5])
def test_count_devices_rejects_other_values(devices):
    with pytest.raises(ConfigError, match="trainer.devices"):
        count_devices(devices)


def test_trainer_keys_take_over_from_gpu_flag():
    # nothing set: --gpu's choice stands, the trainer keys are left alone
    cfg = {"max_steps": 3}
    assert devices_from_config(cfg, "gpu", 2, 2) == ("gpu", 2, 2)
    assert cfg == {"max_steps": 3}
    # trainer.accelerator=cpu trainer.devices=2: two CPU processes, keys taken out for Trainer()
    cfg = {"accelerator": "cpu", "devices": 2, "max_steps": 3}
    assert devices_from_config(cfg, "gpu", [0], 1) == ("cpu", 2, 2)
    assert cfg == {"max_steps": 3}
    # only the accelerator: on the CPU as many processes as --gpu named GPUs, not their indices
    cfg = {"accelerator": "cpu"}
    assert devices_from_config(cfg, "gpu", [2, 3], 2) == ("cpu", 2, 2)
    # only the devices: a count on --gpu's accelerator
    assert devices_from_config({"devices": "0,1"}, "gpu", 1, 1) == ("gpu", "0,1", 2)


@pytest.mark.parametrize(
    "env, devices_per_node, rank",
    [
        ({}, 4, 0),
        ({"RANK": "5", "LOCAL_RANK": "1"}, 4, 5),  # torchrun
        ({"LOCAL_RANK": "1"}, 2, 1),  # a rank Lightning's launcher started
        ({"NODE_RANK": "1"}, 2, 2),  # the main process on the second node
        ({"NODE_RANK": "1", "LOCAL_RANK": "1"}, 2, 3),
        ({"SLURM_PROCID": "6"}, 4, 6),
    ],
)
def test_env_global_rank(monkeypatch, env, devices_per_node, rank):
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("JSM_NAMESPACE_RANK", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert env_global_rank(devices_per_node) == rank


# ---------- end to end: a 2-process gloo run, resumed on 2 processes and on 1 ----------


@pytest.fixture
def workdir(tmp_path):
    custom = tmp_path / "custom"
    custom.mkdir()
    shutil.copytree(
        os.path.join(REPO, "tests", "fixtures", "ext_tiny_fit"), custom / "ext_tiny_fit"
    )
    return tmp_path


def launch(workdir, *args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "THREESTUDIO_TIMESTAMP"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, LAUNCH, *args, *COMMON],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def losses(trial, version):
    rows = list(csv.DictReader(open(trial / "csv_logs" / f"version_{version}" / "metrics.csv")))
    return {int(r["step"]): float(r["train/loss"]) for r in rows if r.get("train/loss")}


def step_lines(trial, rank):
    """{step: [the line of each run that trained it, in order]} from one rank's step log."""
    path = trial / "save" / f"steps-rank{rank}.txt"
    runs = {}
    for line in path.read_text().splitlines():
        fields = line.split()
        assert int(fields[0]) == rank
        runs.setdefault(int(fields[1]), []).append(" ".join(fields[2:]))
    return runs


@gloo
@pytest.mark.slow
def test_two_processes_write_one_trial_and_resume(workdir):
    proc = launch(workdir, "--config", CONFIG, "--train", *TWO_CPUS)
    assert proc.returncode == 0, proc.stderr
    (trial,) = sorted((workdir / "outputs" / "tiny-fit").iterdir())
    # one set of checkpoints, one video of all 4 test views, one config snapshot, one log
    assert sorted(os.listdir(trial / "ckpts")) == [
        "epoch=0-step=3.ckpt",
        "epoch=0-step=6.ckpt",
        "last.ckpt",
    ]
    videos = [f for f in os.listdir(trial / "save") if f.endswith(".mp4")]
    assert videos == ["it6-test.mp4"]
    assert len(imageio.mimread(str(trial / "save" / "it6-test.mp4"))) == 4
    assert sorted(os.listdir(trial / "save" / "it6-test")) == [f"{i}.png" for i in range(4)]
    assert sorted(os.listdir(trial / "configs")) == ["parsed.yaml", "raw.yaml"]
    assert len((trial / "cmd.txt").read_text().splitlines()) == 1
    assert os.listdir(trial / "csv_logs") == ["version_0"]
    assert os.listdir(trial / "tb_logs") == ["version_0"]
    assert "n_gpus: 2" in (trial / "configs" / "parsed.yaml").read_text()
    # rank 0 alone speaks; it says how the batch is split
    assert proc.stderr.count("Outputs are in") == 1
    assert proc.stderr.count("data parallel over 2 processes") == 1
    assert "data.batch_size=2 cameras (4 views per step)" in proc.stderr

    # both ranks trained every step, each on its own cameras and its own random stream
    straight = {rank: step_lines(trial, rank) for rank in (0, 1)}
    for rank in (0, 1):
        assert sorted(straight[rank]) == list(range(6))
    for step in range(6):
        assert straight[0][step] != straight[1][step]
    straight_losses = losses(trial, 0)
    assert sorted(straight_losses) == list(range(6))
    last = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    assert len(last["threestudio"]["rng_state_per_rank"]) == 2
    straight_weights = last["state_dict"]

    # resume from step 3 on 2 processes: same trial, steps 3-5 again with the same cameras and
    # random draws on each rank, the same losses and weights
    parsed = str(trial / "configs" / "parsed.yaml")
    ckpt3 = str(trial / "ckpts" / "epoch=0-step=3.ckpt")
    proc = launch(workdir, "--config", parsed, "--train", f"resume={ckpt3}", *TWO_CPUS)
    assert proc.returncode == 0, proc.stderr
    assert sorted((workdir / "outputs" / "tiny-fit").iterdir()) == [trial]
    for rank in (0, 1):
        runs = step_lines(trial, rank)
        assert sorted(runs) == list(range(6))
        for step in (3, 4, 5):
            assert runs[step] == straight[rank][step] * 2, (rank, step)
    assert losses(trial, 1) == {s: straight_losses[s] for s in (3, 4, 5)}
    resumed = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 6
    for key, value in straight_weights.items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert [f for f in os.listdir(trial / "save") if f.endswith(".mp4")] == ["it6-test.mp4"]

    # resume the 2-process checkpoint on one process: rank 0's cameras and draws continue
    # (the tiny fit's gradient does not depend on the cameras, so the weights agree too)
    proc = launch(
        workdir,
        "--config",
        parsed,
        "--train",
        f"resume={ckpt3}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
    )
    assert proc.returncode == 0, proc.stderr
    runs = step_lines(trial, 0)
    for step in (3, 4, 5):
        assert runs[step] == straight[0][step] * 3, step
    assert step_lines(trial, 1) == {s: v * (2 if s >= 3 else 1) for s, v in straight[1].items()}
    assert losses(trial, 2) == {s: straight_losses[s] for s in (3, 4, 5)}
    single = torch.load(trial / "ckpts" / "last.ckpt", weights_only=True)
    assert single["global_step"] == 6
    assert "rng_state_per_rank" not in single["threestudio"]
    for key, value in straight_weights.items():
        assert torch.equal(single["state_dict"][key], value), key


def _broadcast_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.nn as nn

    from threestudio.utils.distributed import broadcast_module, global_rank, world_size

    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2
    )
    try:
        torch.manual_seed(100 + rank)  # each rank's own shape prior, say
        module = nn.Linear(3, 2)
        module.register_buffer("grid", torch.rand(4))
        before = {k: v.clone() for k, v in module.state_dict().items()}
        broadcast_module(module)
        torch.save(
            {"rank": global_rank(), "world": world_size(), "before": before,
             "after": module.state_dict()},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )  # fmt: skip
    finally:
        torch.distributed.destroy_process_group()


@gloo
@pytest.mark.slow
def test_broadcast_module_makes_every_rank_equal_to_rank_zero(tmp_path):
    torch.multiprocessing.spawn(
        _broadcast_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert not torch.equal(r0["before"]["weight"], r1["before"]["weight"])
    for key in ("weight", "bias", "grid"):
        assert torch.equal(r0["after"][key], r0["before"][key]), key
        assert torch.equal(r1["after"][key], r0["before"][key]), key
