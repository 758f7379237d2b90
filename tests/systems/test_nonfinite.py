"""Non-finite training steps: NaN injected into a guidance output (the loss, or only its gradient)
changes no parameter and no optimiser state, is counted, and many in a row stop the run with one
line naming the last good checkpoint."""

from dataclasses import dataclass

import pytest
import pytorch_lightning as pl
import torch

import threestudio
from tests.systems.test_base import system_cfg
from threestudio.utils.base import BaseObject
from threestudio.utils.errors import UserError


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradients are NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


@threestudio.register("test-nan-injecting-guidance")
class NaNInjectingGuidance(BaseObject):
    """Scores a render by its distance to dark grey (0.2); on the calls listed in ``nan_calls`` (0-based)
    its loss is NaN (``mode: loss``) or only its gradient is (``mode: grad``)."""

    @dataclass
    class Config(BaseObject.Config):
        nan_calls: tuple = ()
        mode: str = "loss"

    cfg: Config

    def configure(self) -> None:
        self.calls = 0

    def __call__(self, rgb, prompt_utils, *args, **kwargs):
        call, self.calls = self.calls, self.calls + 1
        if call in self.cfg.nan_calls and self.cfg.mode == "grad":
            rgb = NaNGradient.apply(rgb)
        loss = ((rgb - 0.2) ** 2).mean()
        if call in self.cfg.nan_calls and self.cfg.mode == "loss":
            loss = loss * float("nan")
        return {"loss_sds": loss}


class Recorder(pl.Callback):
    """Parameters and the Adam step counts after every training step."""

    def __init__(self):
        self.params, self.adam_steps = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.params.append({k: v.detach().clone() for k, v in module.named_parameters()})
        state = trainer.optimizers[0].state
        self.adam_steps.append(sorted(float(s["step"]) for s in state.values()))


def make_system(nan_calls, mode="loss", **extra):
    cfg = system_cfg("test-nan-injecting-guidance")
    cfg["guidance"] = {"nan_calls": list(nan_calls), "mode": mode}
    cfg["geometry"]["density_bias"] = 1.0  # a fog every ray sees: every step has gradients
    cfg["loss"] = {"lambda_sds": 1.0}
    cfg["optimizer"] = {"name": "Adam", "args": {"lr": 0.1}}
    cfg.update(extra)
    return threestudio.find("dreamfusion-system")(cfg)


def datamodule():
    return threestudio.find("random-camera-datamodule")(
        {"batch_size": 1, "height": 4, "width": 4, "n_val_views": 1, "n_test_views": 1}
    )


def fit(system, max_steps, callbacks=()):
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=list(callbacks),
    )
    trainer.fit(system, datamodule=datamodule())
    return trainer


@pytest.mark.parametrize("mode", ["loss", "grad"])
def test_a_nonfinite_step_changes_nothing_and_is_counted(mode, caplog):
    torch.manual_seed(0)
    system = make_system(nan_calls=(2, 3), mode=mode)
    recorder = Recorder()
    fit(system, 6, [recorder])
    params, steps = recorder.params, recorder.adam_steps
    for k in params[1]:
        # steps 2 and 3 were skipped: every parameter as after step 1, Adam's state as well
        assert torch.equal(params[2][k], params[1][k]), k
        assert torch.equal(params[3][k], params[1][k]), k
    assert steps[3] == steps[1] and steps[4] == [s + 1 for s in steps[1]]
    assert any(not torch.equal(params[4][k], params[3][k]) for k in params[1])  # it trains on
    assert system._nonfinite == {"total": 2, "in_a_row": 0}
    err = caplog.text
    what = "loss (loss_sds)" if mode == "loss" else "gradients"
    assert f"step 2: non-finite {what}: step skipped (1 in a row, 1 in this run)" in err
    assert f"step 3: non-finite {what}: step skipped (2 in a row, 2 in this run)" in err
    assert all(torch.isfinite(v).all() for v in params[-1].values())


def test_many_nonfinite_steps_in_a_row_stop_the_run(tmp_path):
    torch.manual_seed(0)
    system = make_system(nan_calls=range(2, 100), max_nonfinite_steps=3)
    ckpts = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    with pytest.raises(UserError) as raised:
        fit(system, 50, [ckpts])
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(
        "training stopped: 3 steps in a row had a non-finite loss (loss_sds) "
        "(system.max_nonfinite_steps=3); the last good checkpoint is "
    )
    # the checkpoint named is the newest one; the skipped steps left its weights as the last
    # good step (the second) made them
    named = message.split("the last good checkpoint is ")[1].split(" (resume=")[0]
    newest = torch.load(named, weights_only=True)
    good = torch.load(tmp_path / "epoch=0-step=2.ckpt", weights_only=True)
    assert newest["global_step"] == 4
    for key, value in good["state_dict"].items():
        assert torch.equal(newest["state_dict"][key], value), key
    assert torch.isfinite(newest["state_dict"]["geometry.grid"]).all()


def test_the_guard_can_be_turned_off():
    torch.manual_seed(0)
    system = make_system(nan_calls=(1,), skip_nonfinite_steps=False)
    recorder = Recorder()
    fit(system, 3, [recorder])
    # without the guard the NaN gradients reach Adam: the weights the step touched turn NaN
    assert all(torch.isfinite(v).all() for v in recorder.params[0].values())
    assert any(torch.isnan(v).any() for v in recorder.params[1].values())
