"""Many prompts in one launch (threestudio/batch.py through launch.py): which items a launch and
a shard pick, one failing item among good ones, the summary, one model load for the batch."""

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import launch
from threestudio import batch
from threestudio.utils import hub
from threestudio.utils.callbacks import StopOnInterrupt
from threestudio.utils.errors import UserError
from threestudio.utils.paths import REPO_ROOT as REPO

QUICKSTART = os.path.join(REPO, "configs", "quickstart.yaml")
TINY_FIT = os.path.join(REPO, "tests", "fixtures", "tiny_fit.yaml")


@pytest.fixture(autouse=True)
def fresh_log_handler(monkeypatch):
    """launch.main adds a handler on the stderr of its first call; each test gets its own."""
    monkeypatch.setattr(logging.getLogger("threestudio"), "handlers", [])


def args_of(*argv):
    args, extras = launch.parse_args(["--config", QUICKSTART, *argv])
    return args, extras


def picked(*argv):
    args, extras = args_of(*argv)
    request = batch.batch_request(args, extras)
    return [(it.prompt, it.seed) for it in request.items], request


# ============ what a launch runs ============


def test_single_prompt_launch_is_no_batch():
    args, extras = args_of("--train", "system.prompt_processor.prompt=a red cube", "seed=3")
    assert batch.batch_request(args, extras) is None


def test_prompt_list_and_seed_list_make_every_pair_prompt_by_prompt():
    items, request = picked(
        "--train", "system.prompt_processor.prompt=[a red cube, a blue cone]", "seed=[0, 5]",
        "trainer.max_steps=2",
    )  # fmt: skip
    assert items == [("a red cube", 0), ("a red cube", 5), ("a blue cone", 0), ("a blue cone", 5)]
    # the lists are the batch's; every other override is every item's
    assert request.extras == ["trainer.max_steps=2"]
    # items of the same prompt get distinct trial names even within one second
    stamps = [batch.item_overrides(it, "@T")["timestamp"] for it in request.items]
    assert stamps == ["@T", "@T-1", "@T", "@T-1"]


def test_prompt_file_skips_blank_lines_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# the bundled world\na red cube\n\n  lib:hamburger  \n# a blue cone\n")
    items, _ = picked("--train", "--prompts", str(path), "--seeds", "1,2")
    assert items == [
        ("a red cube", 1),
        ("a red cube", 2),
        ("lib:hamburger", 1),
        ("lib:hamburger", 2),
    ]


def test_prompt_list_in_the_yaml_file_and_timestamps_off(tmp_path):
    config = tmp_path / "listed.yaml"
    text = open(QUICKSTART).read()
    assert "    prompt: a blue cone\n" in text
    config.write_text(
        text.replace("    prompt: a blue cone\n", "    prompt: [a blue cone, a red cube]\n")
    )
    args, extras = launch.parse_args(["--config", str(config), "--train"])
    request = batch.batch_request(args, extras)
    assert [(it.prompt, it.shown_seed) for it in request.items] == [
        ("a blue cone", "0"),
        ("a red cube", "0"),
    ]
    assert batch._uses_timestamp(args, extras)
    assert not batch._uses_timestamp(args, ["use_timestamp=false"])


def test_shard_picks_every_nth_item_from_i(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(f"p{i}" for i in range(5)))
    shards = [picked("--train", "--prompts", str(path), "--shard", f"{i}/3")[0] for i in range(3)]
    assert [[p for p, _ in s] for s in shards] == [["p0", "p3"], ["p1", "p4"], ["p2"]]
    # the shards together are the batch, each item once
    assert sorted(p for s in shards for p, _ in s) == [f"p{i}" for i in range(5)]


@pytest.mark.parametrize("spec", ["3/3", "-1/2", "1", "a/b", "0/0", "1/2/3"])
def test_bad_shard_is_one_line(spec):
    with pytest.raises(UserError) as e:
        batch.parse_shard(spec)
    assert f"'{spec}'" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--train", "--seeds", "0,x"], "--seeds"),
        (["--test", "--seeds", "0,1"], "--train"),
        (["--train", "--prompts", "missing.txt"], "missing.txt"),
        (["--train", "--prompts", "p.txt", "system.prompt_processor.prompt=a"], "not both"),
        (["--train", "--seeds", "1", "seed=2"], "not both"),
        (["--train", "seed=[1, x]"], "seed"),
        (["--train", "--seeds", "0,1", "resume=x.ckpt"], "resume="),
    ],
)
def test_bad_batch_requests_are_one_line(tmp_path, monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text("a red cube\n")
    args, extras = args_of(*argv)
    with pytest.raises(UserError) as e:
        batch.batch_request(args, extras)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_bad_shard_through_the_command_line_exits_2_with_one_line(capsys):
    code = launch.main(["--config", QUICKSTART, "--train", "--shard", "2/2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [err[0]] and "--shard" in err[0] and "'2/2'" in err[0]


# ============ running: a fake trial, the real batch loop ============


@pytest.fixture
def fake_run(monkeypatch, tmp_path):
    """launch.run replaced by a recorder that makes a trial folder; 'bad' prompts fail."""
    calls = []

    def run(args, extras):
        overrides = args.item_overrides
        prompt = overrides["system"]["prompt_processor"]["prompt"]
        calls.append((prompt, overrides.get("seed"), overrides["timestamp"], list(extras)))
        if prompt.startswith("bad"):
            raise UserError(f"prompt [{prompt}] is bad")
        if prompt.startswith("crash"):
            raise RuntimeError("something broke\nin two lines")
        if prompt.startswith("ctrl-c"):  # what a first Ctrl-C during training leaves
            StopOnInterrupt.stop_requested = True
        trial = (
            tmp_path / "out" / "quickstart" / (prompt.replace(" ", "_") + overrides["timestamp"])
        )
        trial.mkdir(parents=True)
        launch._RUN_STATE["trial_dir"] = str(trial)
        return 0

    monkeypatch.setattr(launch, "run", run)
    # no text encoding ahead (the end-to-end test below does it for real)
    monkeypatch.setattr(batch, "encode_prompts_ahead", lambda *a: None)
    monkeypatch.setenv("THREESTUDIO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return calls


def test_shard_entry_point_runs_its_items_only_and_writes_the_summary(fake_run, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("p0\np1\np2\n")
    code = launch.main(
        ["--config", QUICKSTART, "--train", "--prompts", "p.txt", "--seeds", "0,1",
         "--shard", "1/2", f"exp_root_dir={tmp_path / 'out'}", "trainer.max_steps=2"]
    )  # fmt: skip
    assert code == 0
    # items (p0,0) (p0,1) (p1,0) (p1,1) (p2,0) (p2,1): shard 1/2 takes the 2nd, 4th and 6th
    assert [(p, s) for p, s, _, _ in fake_run] == [("p0", 1), ("p1", 1), ("p2", 1)]
    assert all(
        e == [f"exp_root_dir={tmp_path / 'out'}", "trainer.max_steps=2"] for *_, e in fake_run
    )
    assert [t.endswith("-1") for _, _, t, _ in fake_run] == [True, True, True]
    (md,) = (tmp_path / "out" / "quickstart").glob("batch-*-shard-1-of-2.md")
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ") and "ok" in line]
    assert len(rows) == 3 and "/p1@" in rows[1]
    assert md.with_suffix(".csv").is_file()
    assert "3 of 3 trials ok" in capsys.readouterr().out


def test_a_failing_item_fails_alone_and_the_exit_status_says_so(fake_run, tmp_path, capsys):
    code = launch.main(
        ["--config", QUICKSTART, "--train", f"exp_root_dir={tmp_path / 'out'}",
         "system.prompt_processor.prompt=[good one, bad one, crash one, good two]"]
    )  # fmt: skip
    assert code == 1
    assert [p for p, *_ in fake_run] == ["good one", "bad one", "crash one", "good two"]
    out = capsys.readouterr()
    assert "error: item 2 [bad one]: prompt [bad one] is bad" in out.err
    assert "error: 2 of 4 batch item(s) failed" in out.err
    (md,) = (tmp_path / "out" / "quickstart").glob("batch-*.md")
    rows = [r for r in md.read_text().splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert [r.split(" | ")[5].split(":")[0] for r in rows] == ["ok", "failed", "failed", "ok"]
    assert "RuntimeError: something broke in two lines" in rows[2]
    assert "good_two@" in rows[3] and rows[1].split(" | ")[3] == "-"
    assert "2 of 4 trials ok" in md.read_text()


def test_ctrl_c_once_ends_the_batch_after_the_current_trial(fake_run, tmp_path, monkeypatch):
    monkeypatch.setattr(StopOnInterrupt, "stop_requested", False)
    code = launch.main(
        ["--config", QUICKSTART, "--train", f"exp_root_dir={tmp_path / 'out'}",
         "system.prompt_processor.prompt=[one, ctrl-c two, three]"]
    )  # fmt: skip
    assert code == 1 and [p for p, *_ in fake_run] == ["one", "ctrl-c two"]
    (md,) = (tmp_path / "out" / "quickstart").glob("batch-*.md")
    rows = [r for r in md.read_text().splitlines() if r.startswith("| ") and r[2].isdigit()]
    assert [r.split(" | ")[5] for r in rows] == ["ok", "ok", "not run"]


def test_several_gpus_get_one_worker_each_seeing_only_its_gpu(tmp_path, monkeypatch, capsys):
    """--gpu 1,3 under CUDA_VISIBLE_DEVICES=4,5,6,7: two workers, on physical GPUs 5 and 7,
    each told --gpu 0 and its share; the parent merges their results (processes faked)."""
    started = []

    class FakeWorker:
        def __init__(self, cmd, env):
            started.append((cmd, env["CUDA_VISIBLE_DEVICES"]))
            share = cmd[cmd.index("--batch-worker") + 1]
            k, n = (int(x) for x in share.split("/"))
            rows = [
                {"index": i, "prompt": f"p{i}", "seed": "0", "trial_dir": f"t{i}", "seconds": 1.0,
                 "status": "ok", "message": "", "r_precision": None}
                for i in range(3)[k::n]
            ]  # fmt: skip
            with open(cmd[cmd.index("--batch-results") + 1], "w") as f:
                json.dump(rows, f)

        def wait(self):
            return 0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(batch.subprocess, "Popen", FakeWorker)
    monkeypatch.setattr(batch, "encode_prompts_ahead", lambda *a: None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    monkeypatch.chdir(tmp_path)
    code = launch.main(
        ["--config", QUICKSTART, "--train", "--gpu", "1,3", "system.prompt_processor.prompt=[p0,p1,p2]",
         f"exp_root_dir={tmp_path / 'out'}"]
    )  # fmt: skip
    assert code == 0
    assert [gpu for _, gpu in started] == ["5", "7"]
    for k, (cmd, _) in enumerate(started):
        assert cmd[cmd.index("--batch-worker") + 1] == f"{k}/2"
        assert cmd.count("--gpu") == 1 and cmd[cmd.index("--gpu") + 1] == "0"
    assert "3 of 3 trials ok" in capsys.readouterr().out
    # an index beyond the visible devices is one line
    code = launch.main(
        ["--config", QUICKSTART, "--train", "--gpu", "0,4", "system.prompt_processor.prompt=[p0,p1]"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert (
        code == 2 and "error: --gpu 0,4: 4 is not an index into CUDA_VISIBLE_DEVICES=4,5,6,7" in err
    )
    # one worker with several GPUs still runs in a worker process, on one GPU (not DDP)
    started.clear()
    code = launch.main(
        ["--config", QUICKSTART, "--train", "--gpu", "2,3", "--workers", "1", "--seeds", "0,1",
         f"exp_root_dir={tmp_path / 'out'}"]
    )  # fmt: skip
    assert code == 0 and [gpu for _, gpu in started] == ["6"]


# ============ one load per batch ============


class FakeModel(torch.nn.Module):
    loads = 0

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2), requires_grad=False)

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        cls.loads += 1
        return cls()


def test_shared_models_load_once_per_batch_and_drop_trained_ones(tmp_path):
    FakeModel.loads = 0
    folder = str(tmp_path)
    hub.load_pretrained(FakeModel, folder)
    hub.load_pretrained(FakeModel, folder)
    assert FakeModel.loads == 2  # no batch: every call loads
    with hub.shared_pretrained_models() as shared:
        first = hub.load_pretrained(FakeModel, folder, subfolder="unet")
        # within one trial a second request is a fresh copy (e.g. a LoRA copy of the UNet)
        second = hub.load_pretrained(FakeModel, folder, subfolder="unet")
        assert second is not first and FakeModel.loads == 4
        shared.end_trial()
        assert hub.load_pretrained(FakeModel, folder, subfolder="unet") is first
        # another dtype or subfolder is another model
        other = hub.load_pretrained(FakeModel, folder, subfolder="unet", torch_dtype=torch.float16)
        assert other is not first and FakeModel.loads == 5
        first.w.requires_grad_(True)  # this trial trained it
        shared.end_trial()
        third = hub.load_pretrained(FakeModel, folder, subfolder="unet")
        assert third is not first and FakeModel.loads == 6
        assert (shared.loads, shared.reuses) == (4, 1)
    assert shared.models == {}  # released at the end of the batch
    hub.load_pretrained(FakeModel, folder, subfolder="unet")
    assert FakeModel.loads == 7


def test_summary_escapes_pipes_and_lists_every_item():
    results = [
        batch.ItemResult(0, "a | b", "0", "t0", 1.25, "ok", r_precision=0.5),
        batch.ItemResult(1, "c", "1", "", 0.5, "failed", "bad"),
        batch.ItemResult(2, "d", "0"),
    ]
    md = batch.summary_markdown(results).splitlines()
    assert md[2] == "| 1 | a \\| b | 0 | t0 | 1.2 | ok | 0.500 |"
    assert md[3] == "| 2 | c | 1 | - | 0.5 | failed: bad |  |"
    assert md[4] == "| 3 | d | 0 | - | 0.0 | not run |  |"
    assert md[-1] == "1 of 3 trials ok; 1.8 s in the trials"


# ============ end to end ============

TINY = [
    "trainer.max_steps=2", "trainer.enable_progress_bar=false", "data.batch_size=1",
    "data.width=16", "data.height=16", "data.eval_width=16", "data.eval_height=16",
    "data.n_val_views=1", "data.n_test_views=2",
    "system.geometry.pos_encoding_config.n_levels=4",
    "system.geometry.pos_encoding_config.log2_hashmap_size=12",
    "system.geometry.isosurface_resolution=32", "system.exporter.texture_size=64",
    "system.renderer.num_samples_per_ray=32",
]  # fmt: skip


def count_loads(monkeypatch, cls):
    calls = []
    original = cls.from_pretrained.__func__

    def counting(klass, *a, **k):
        calls.append(k.get("subfolder"))
        return original(klass, *a, **k)

    monkeypatch.setattr(cls, "from_pretrained", classmethod(counting))
    return calls


@pytest.mark.slow
def test_quickstart_batch_three_trials_one_model_load_bad_prompt_fails_alone(
    tmp_path, monkeypatch, capsys
):
    from diffusers import UNet2DConditionModel

    from threestudio.models.prompt_processors.base import PromptProcessor

    monkeypatch.setenv("THREESTUDIO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    unet_loads = count_loads(monkeypatch, UNet2DConditionModel)
    encoded = []
    encode_to_dir = PromptProcessor.encode_to_dir

    def counting_encode(self, prompts, out_dir):
        encoded.append(list(prompts))
        return encode_to_dir(self, prompts, out_dir)

    monkeypatch.setattr(PromptProcessor, "encode_to_dir", counting_encode)
    (tmp_path / "prompts.txt").write_text(
        "# three of the bundled world and one bad keyword\n"
        "a blue cone\nlib:no_such_keyword_anywhere\n\na red cube\na green sphere\n"
    )
    code = launch.main(
        ["--config", QUICKSTART, "--train", "--prompts", "prompts.txt", "--scorer", "classifier",
         f"exp_root_dir={tmp_path / 'out'}", *TINY]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 1, out.err[-2000:]
    exp = tmp_path / "out" / "quickstart"
    trials = sorted(p for p in exp.iterdir() if p.is_dir())
    assert [t.name.split("@")[0] for t in trials] == ["a_blue_cone", "a_green_sphere", "a_red_cube"]
    for trial in trials:
        parsed = yaml.safe_load((trial / "configs" / "parsed.yaml").read_text())
        assert parsed["system"]["prompt_processor"]["prompt"] == trial.name.split("@")[0].replace(
            "_", " "
        )
        assert (trial / "ckpts" / "last.ckpt").is_file()
    # the UNet was loaded once for the four items, and the text encoder ran once (in its
    # subprocess) for every text of the three good prompts: each trial found them cached
    assert unet_loads == ["unet"]
    views = ["", ", side view", ", front view", ", back view", ", overhead view"]
    good = ["a blue cone", "a red cube", "a green sphere"]
    assert len(encoded) == 1 and sorted(encoded[0]) == sorted(
        [""] + [p + v for p in good for v in views]
    )
    assert "error: item 2 [lib:no_such_keyword_anywhere]: no prompt in" in out.err
    (md,) = exp.glob("batch-*.md")
    rows = [
        r.split(" | ") for r in md.read_text().splitlines() if r[:3] in ("| 1", "| 2", "| 3", "| 4")
    ]
    assert [r[1] for r in rows] == [
        "a blue cone",
        "lib:no_such_keyword_anywhere",
        "a red cube",
        "a green sphere",
    ]
    assert [r[5].split(":")[0] for r in rows] == ["ok", "failed", "ok", "ok"]
    assert [r[3] != "-" for r in rows] == [True, False, True, True]
    # R-precision of each good trial by the bundled classifier (a number in [0, 1])
    assert all(0.0 <= float(r[6].rstrip(" |")) <= 1.0 for r in rows if r[5] == "ok")


@pytest.mark.slow
def test_two_worker_processes_on_cpu_share_the_items(tmp_path):
    """--workers 2 on the CPU: each worker runs its share in its own process; the parent merges
    one summary; two seeds of one label get two trial folders in the same second."""
    custom = tmp_path / "custom"
    custom.mkdir()
    shutil.copytree(
        os.path.join(REPO, "tests", "fixtures", "ext_tiny_fit"), custom / "ext_tiny_fit"
    )
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "launch.py"), "--config", TINY_FIT, "--train",
         "--seeds", "0,1", "--workers", "2", "trainer.max_steps=2",
         "trainer.enable_progress_bar=false", "data.n_test_views=1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    exp = tmp_path / "outputs" / "tiny-fit"
    trials = sorted(p.name for p in exp.iterdir() if p.is_dir())
    assert len(trials) == 2
    assert all(t.startswith("a_tiny_fit@") for t in trials)
    seeds = sorted(
        yaml.safe_load((exp / t / "configs" / "parsed.yaml").read_text())["seed"] for t in trials
    )
    assert seeds == [0, 1]
    (md,) = exp.glob("batch-*.md")
    assert "2 of 2 trials ok" in md.read_text()
    assert "batch worker 0: 1 item(s)" in proc.stderr and "batch worker 1: 1 item(s)" in proc.stderr


def test_launch_parser_knows_the_batch_flags():
    parser = argparse.ArgumentParser()
    launch.add_batch_arguments(parser)
    args = parser.parse_args(
        ["--prompts", "f", "--seeds", "0,1", "--shard", "0/2", "--workers", "2"]
    )
    assert (args.prompts, args.seeds, args.shard, args.workers) == ("f", "0,1", "0/2", 2)
