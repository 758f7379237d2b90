"""The LPIPS (VGG16) perceptual loss, with random weights saved in the published file formats."""

import os

import pytest
import torch
import torch.nn as nn

import threestudio
from threestudio.utils.config import load_config
from threestudio.utils.errors import MissingModelError, UserError
from threestudio.utils.perceptual import (
    LPIPS_ENV,
    VGG16_ENV,
    PerceptualLoss,
    PerceptualLossModule,
    vgg16_features,
)

# torchvision's vgg16().features: (index, in, out) of each 3x3 conv; ReLUs and pools between
TORCHVISION_VGG16_CONVS = [
    (0, 3, 64), (2, 64, 64),
    (5, 64, 128), (7, 128, 128),
    (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512),
    (24, 512, 512), (26, 512, 512), (28, 512, 512),
]  # fmt: skip
CHANNELS = [64, 128, 256, 512, 512]


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A random VGG16 saved as torchvision saves the whole classifier (features.N.* plus
    classifier.*), and random LPIPS linear layers saved as LPIPS saves them (linK.model.1.*)."""
    root = tmp_path_factory.mktemp("perceptual_weights")
    torch.manual_seed(0)
    features = vgg16_features()
    vgg = {f"features.{k}": v for k, v in features.state_dict().items()}
    vgg["classifier.6.bias"] = torch.zeros(10)
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    torch.save(vgg, root / "vgg16.pth")
    torch.save(lins, root / "lpips_vgg.pth")
    return {"vgg": str(root / "vgg16.pth"), "lpips": str(root / "lpips_vgg.pth"), "sd": vgg}


@pytest.fixture(scope="module")
def loss_fn(weight_files):
    return PerceptualLoss(
        use_dropout=True, vgg_weights=weight_files["vgg"], lpips_weights=weight_files["lpips"]
    ).eval()


@pytest.fixture
def no_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(VGG16_ENV, raising=False)
    monkeypatch.delenv(LPIPS_ENV, raising=False)


def test_vgg16_state_dict_keys_match_torchvision():
    sd = vgg16_features().state_dict()
    expected = {}
    for i, c_in, c_out in TORCHVISION_VGG16_CONVS:
        expected[f"{i}.weight"] = (c_out, c_in, 3, 3)
        expected[f"{i}.bias"] = (c_out,)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    layers = vgg16_features()
    assert len(layers) == 31
    assert all(isinstance(layers[i], nn.MaxPool2d) for i in (4, 9, 16, 23, 30))
    assert all(isinstance(layers[i + 1], nn.ReLU) for i, _, _ in TORCHVISION_VGG16_CONVS)


def test_weights_load_from_torchvision_and_lpips_files(loss_fn, weight_files):
    sd = weight_files["sd"]
    assert torch.equal(loss_fn.net.slice1.get_submodule("0").weight, sd["features.0.weight"])
    assert torch.equal(loss_fn.net.slice5.get_submodule("28").bias, sd["features.28.bias"])
    lins = torch.load(weight_files["lpips"], weights_only=True)
    assert torch.equal(loss_fn.lin3.model[1].weight, lins["lin3.model.1.weight"])
    # the established module's state_dict keys
    keys = set(loss_fn.state_dict())
    assert {"net.slice1.0.weight", "net.slice3.14.bias", "lin0.model.1.weight"} <= keys
    assert not any(p.requires_grad for p in loss_fn.parameters())
    # without dropout the 1x1 layer is model.0; the same LPIPS file loads
    plain = PerceptualLoss(False, weight_files["vgg"], weight_files["lpips"])
    assert torch.equal(plain.lin3.model[0].weight, lins["lin3.model.1.weight"])


def test_a_bare_features_safetensors_file_loads(weight_files, tmp_path):
    from safetensors.torch import save_file

    bare = {k.split(".", 1)[1]: v.half() for k, v in weight_files["sd"].items() if "features" in k}
    save_file(bare, str(tmp_path / "features.safetensors"))
    loaded = PerceptualLoss(
        vgg_weights=str(tmp_path / "features.safetensors"), lpips_weights=weight_files["lpips"]
    )
    weight = loaded.net.slice2.get_submodule("7").weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, bare["7.weight"].float())


def test_identical_images_cost_nothing_and_different_ones_have_a_gradient(loss_fn):
    torch.manual_seed(1)
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = torch.rand(2, 3, 32, 32) * 2 - 1
    same = loss_fn(a, a.clone())
    assert same.shape == (2, 1, 1, 1)
    assert torch.allclose(same, torch.zeros_like(same), atol=1e-6)
    x = a.clone().requires_grad_(True)
    dist = loss_fn(x, b)
    assert torch.all(dist > 0)
    dist.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_loss_equals_the_lpips_formula_on_the_features(loss_fn):
    torch.manual_seed(2)
    a = torch.rand(1, 3, 32, 32) * 2 - 1
    b = torch.rand(1, 3, 32, 32) * 2 - 1
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    features = nn.Sequential(*[loss_fn.net.get_submodule(f"slice{k}") for k in range(1, 6)])
    expected = 0.0
    xa, xb = (a - shift) / scale, (b - shift) / scale
    for k, block in enumerate(features):
        xa, xb = block(xa), block(xb)
        na = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = loss_fn.lins[k].model[-1].weight.view(-1)
        expected += torch.einsum("c,bchw->bhw", w, (na - nb) ** 2).mean()
    assert loss_fn(a, b).item() == pytest.approx(expected.item(), rel=1e-5)


class FixedFeatures(nn.Module):
    """Stands in for the VGG16: fixed feature maps per input, and records what it was given."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x)
        return self.outputs.pop(0)


def test_hand_built_case():
    loss_fn = PerceptualLoss(use_dropout=False, random_weights=True)
    for k, lin in enumerate(loss_fn.lins):
        nn.init.constant_(lin.conv.weight, float(k + 1))  # layer k weighs every channel k+1
    feats0, feats1 = [], []
    for c in CHANNELS:
        # two pixels: at the first the features point along channel 0 (length 2) and channel 1
        # (length 3), unit vectors e0 and e1 once normalised: squared difference 1+1 = 2;
        # at the second both are the same direction: 0. The spatial mean is 1.
        f0, f1 = torch.zeros(1, c, 1, 2), torch.zeros(1, c, 1, 2)
        f0[0, 0, 0, 0], f1[0, 1, 0, 0] = 2.0, 3.0
        f0[0, 2, 0, 1], f1[0, 2, 0, 1] = 1.0, 5.0
        feats0.append(f0)
        feats1.append(f1)
    loss_fn.net = FixedFeatures([feats0, feats1])
    image = torch.zeros(1, 3, 2, 2)
    value = loss_fn(image, image)
    # sum over layers of (k+1) * 1
    assert value.item() == pytest.approx(1 + 2 + 3 + 4 + 5)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    assert torch.allclose(loss_fn.net.inputs[0], (image - shift) / scale)


def test_missing_weights_are_one_line(no_hub_cache, tmp_path):
    with pytest.raises(MissingModelError) as e:
        PerceptualLoss()
    msg = str(e.value)
    assert "\n" not in msg
    assert "VGG16 backbone weights 'timm/vgg16.tv_in1k:model.safetensors'" in msg
    assert "hf download timm/vgg16.tv_in1k model.safetensors" in msg
    assert "LPIPS linear-layer weights" in msg
    assert f"{VGG16_ENV}=/path/to/vgg16.pth" in msg and f"{LPIPS_ENV}=/path/to/" in msg

    cfg = load_config(
        "name: x\nsystem:\n  perceptual_loss:\n    vgg_weights: /no/such/vgg16.pth\n",
        from_string=True,
    )
    with pytest.raises(MissingModelError) as e:
        threestudio.find("perceptual-loss")(cfg.system.perceptual_loss)
    msg = str(e.value)
    assert "\n" not in msg
    assert "the VGG16 backbone weights file '/no/such/vgg16.pth' does not exist" in msg
    assert "system.perceptual_loss.vgg_weights=/path/to/vgg16.pth" in msg
    assert "system.perceptual_loss.lpips_weights=/path/to/lpips_vgg.pth" in msg


def test_registered_module_takes_files_from_config_or_environment(weight_files, monkeypatch):
    cls = threestudio.find("perceptual-loss")
    assert cls is PerceptualLossModule and cls.Config().use_dropout is True
    module = cls({"vgg_weights": weight_files["vgg"], "lpips_weights": weight_files["lpips"]})
    assert isinstance(module.loss.lin0.model[0], nn.Dropout)
    monkeypatch.setenv(VGG16_ENV, weight_files["vgg"])
    monkeypatch.setenv(LPIPS_ENV, weight_files["lpips"])
    from_env = cls({"use_dropout": False}).eval()
    assert not isinstance(from_env.loss.lin0.model[0], nn.Dropout)
    a, b = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16) * 0.5
    assert from_env(a, b).item() == pytest.approx(module.eval()(a, b).item(), rel=1e-6)
    assert os.path.isfile(weight_files["vgg"])


def test_wrong_files_are_user_errors(weight_files):
    with pytest.raises(UserError, match="is not a VGG16 weights file: it lacks features.0.weight"):
        PerceptualLoss(vgg_weights=weight_files["lpips"], lpips_weights=weight_files["lpips"])
    with pytest.raises(UserError, match="is not an LPIPS VGG weights file: it lacks lin0"):
        PerceptualLoss(vgg_weights=weight_files["vgg"], lpips_weights=weight_files["vgg"])
    loss_fn = PerceptualLoss(random_weights=True)
    lins = {f"lin{k}.weight": torch.ones(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    lins["lin2.weight"] = torch.ones(1, 3, 1, 1)
    with pytest.raises(UserError, match=r"lin2 has shape \(1, 3, 1, 1\) but LPIPS \(VGG\) needs"):
        loss_fn.load_linear_layers(lins)
