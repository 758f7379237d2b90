"""View-dependent prompt selection and Perp-Neg weights of PromptProcessorOutput."""

import math

import pytest
import torch

import threestudio
from threestudio.models.prompt_processors.base import PromptProcessorOutput, hash_prompt
from threestudio.models.prompt_processors.dummy_prompt_processor import DummyPromptProcessor

HIDDEN, LENGTH = 8, 4


def dummy(prompt="a cat", **cfg):
    cls = threestudio.find("dummy-prompt-processor")
    return cls({"prompt": prompt, "hidden_size": HIDDEN, "max_length": LENGTH, **cfg})


def embed(text: str) -> torch.Tensor:
    return DummyPromptProcessor.encode_prompts("dummy", [text], "cpu", HIDDEN, LENGTH)[0]


def cams(elevations, azimuths):
    ele = torch.tensor(elevations, dtype=torch.float32)
    azi = torch.tensor(azimuths, dtype=torch.float32)
    return ele, azi, torch.full_like(ele, 2.0)


# (elevation, azimuth) -> direction with the default thresholds 60/45/45
CASES = [
    (0, 0, "front"),
    (10, 44.9, "front"),
    (0, -44.9, "front"),
    (0, 45, "side"),  # the thresholds are strict
    (0, 90, "side"),
    (0, -90, "side"),
    (0, 135, "side"),
    (0, 135.5, "back"),
    (0, 180, "back"),
    (0, -170, "back"),
    (0, 200, "back"),  # wraps to -160
    (0, 360, "front"),  # wraps to 0
    (60, 0, "front"),  # overhead needs elevation > 60
    (61, 0, "overhead"),
    (80, 180, "overhead"),
]


def test_direction_selection_suffix_templates():
    proc = dummy("a cat")
    assert proc.prompts_vd == [
        "a cat, side view",
        "a cat, front view",
        "a cat, back view",
        "a cat, overhead view",
    ]
    out = proc()
    ele, azi, dis = cams([c[0] for c in CASES], [c[1] for c in CASES])
    emb = out.get_text_embeddings(ele, azi, dis)
    assert emb.shape == (2 * len(CASES), LENGTH, HIDDEN)
    for i, (_, _, name) in enumerate(CASES):
        assert torch.equal(emb[i], embed(f"a cat, {name} view")), CASES[i]
        assert torch.equal(emb[len(CASES) + i], embed(""))  # uncond rows follow


def test_direction_selection_prefix_templates_and_thresholds():
    proc = dummy(
        "a cat",
        view_dependent_prompt_front=True,
        front_threshold=30.0,
        back_threshold=60.0,
        overhead_threshold=30.0,
        negative_prompt="blurry",
    )
    expected = {
        "side": "side view of a cat",
        "front": "front view of a cat",
        "back": "backside view of a cat",
        "overhead": "overhead view of a cat",
    }
    assert proc.prompts_vd == [expected[n] for n in ("side", "front", "back", "overhead")]
    cases = [
        (0, 29, "front"),
        (0, 31, "side"),
        (0, 119, "side"),
        (0, 121, "back"),
        (31, 0, "overhead"),
    ]
    ele, azi, dis = cams([c[0] for c in cases], [c[1] for c in cases])
    emb = proc().get_text_embeddings(ele, azi, dis)
    for i, (_, _, name) in enumerate(cases):
        assert torch.equal(emb[i], embed(expected[name]))
        assert torch.equal(emb[len(cases) + i], embed("blurry"))


def test_per_view_overrides_and_no_view_dependence():
    proc = dummy("a cat", prompt_back="the tail of a cat", prompt_overhead="a cat seen from above")
    assert proc.prompts_vd == [
        "a cat, side view",
        "a cat, front view",
        "the tail of a cat",
        "a cat seen from above",
    ]
    ele, azi, dis = cams([0, 70, 0], [180, 0, 0])
    out = proc()
    emb = out.get_text_embeddings(ele, azi, dis)
    assert torch.equal(emb[0], embed("the tail of a cat"))
    assert torch.equal(emb[1], embed("a cat seen from above"))
    assert torch.equal(emb[2], embed("a cat, front view"))
    plain = out.get_text_embeddings(ele, azi, dis, view_dependent_prompting=False)
    assert plain.shape == (6, LENGTH, HIDDEN)
    for i in range(3):
        assert torch.equal(plain[i], embed("a cat"))
        assert torch.equal(plain[3 + i], embed(""))


def test_output_fields_for_guidance():
    proc = dummy("a cat", use_perp_neg=True, perp_neg_f_sb=[2.0, 1.0, -0.5])
    out = proc()
    assert isinstance(out, PromptProcessorOutput)
    assert out.use_perp_neg is True
    assert out.perp_neg_f_sb == (2.0, 1.0, -0.5)
    assert out.perp_neg_f_fs == (4.0, 0.5, -2.426)
    assert out.direction2idx == {"side": 0, "front": 1, "back": 2, "overhead": 3}
    assert [d.name for d in out.directions] == ["side", "front", "back", "overhead"]
    assert out.text_embeddings.shape == (1, LENGTH, HIDDEN)
    assert out.uncond_text_embeddings_vd.shape == (4, LENGTH, HIDDEN)
    assert out.prompt == "a cat"
    assert hash_prompt("m", "p") != hash_prompt("m", "q") != hash_prompt("n", "q")


def f(abc, r):
    a, b, c = abc
    return a * math.exp(-b * r) + c


@pytest.mark.parametrize("custom", [False, True])
def test_perp_neg_weights_and_embeddings(custom):
    f_sb, f_fsb, f_fs, f_sf = (1, 0.5, -0.606), (1, 0.5, 0.967), (4, 0.5, -2.426), (4, 0.5, -2.426)
    cfg = {}
    if custom:
        f_sb, f_fsb, f_fs, f_sf = (2, 1, -0.1), (3, 0.2, 0.5), (1.5, 2, -0.3), (0.7, 0.1, 0.2)
        cfg = {
            "perp_neg_f_sb": f_sb,
            "perp_neg_f_fsb": f_fsb,
            "perp_neg_f_fs": f_fs,
            "perp_neg_f_sf": f_sf,
        }
    out = dummy("a cat", use_perp_neg=True, **cfg)()
    side, front, back, over = (
        embed(f"a cat, {n} view") for n in ("side", "front", "back", "overhead")
    )
    uncond = embed("")
    # (azimuth, elevation, expected pos, expected negatives, expected weights)
    expected = [
        (0, 0, front, (front, side), (-f(f_fs, 1), -f(f_sf, 0))),
        (45, 0, 0.5 * front + 0.5 * side, (front, side), (-f(f_fs, 0.5), -f(f_sf, 0.5))),
        (-30, 0, 2 / 3 * front + 1 / 3 * side, (front, side), (-f(f_fs, 2 / 3), -f(f_sf, 1 / 3))),
        (90, 0, side, (side, front), (-f(f_sb, 1), -f(f_fsb, 1))),
        (-135, 0, 0.5 * side + 0.5 * back, (side, front), (-f(f_sb, 0.5), -f(f_fsb, 0.5))),
        (180, 0, back, (side, front), (-f(f_sb, 0), -f(f_fsb, 0))),
        (10, 75, over, (uncond, uncond), (0.0, 0.0)),
    ]
    B = len(expected)
    ele, azi, dis = cams([e[1] for e in expected], [e[0] for e in expected])
    emb, weights = out.get_text_embeddings_perp_neg(ele, azi, dis)
    assert emb.shape == (4 * B, LENGTH, HIDDEN)
    assert weights.shape == (B, 2)
    for i, (_, _, pos, (n0, n1), (w0, w1)) in enumerate(expected):
        torch.testing.assert_close(emb[i], pos)
        torch.testing.assert_close(emb[B + i], uncond)
        torch.testing.assert_close(emb[2 * B + 2 * i], n0)
        torch.testing.assert_close(emb[2 * B + 2 * i + 1], n1)
        assert weights[i, 0].item() == pytest.approx(w0, abs=1e-6)
        assert weights[i, 1].item() == pytest.approx(w1, abs=1e-6)
    if not custom:
        # the default curves vanish where a negative coincides with the positive view
        assert weights[0, 0].item() == pytest.approx(0.0, abs=1e-3)
        assert weights[3, 0].item() == pytest.approx(0.0, abs=1e-3)


def test_perp_neg_requires_view_dependent_prompting():
    out = dummy("a cat")()
    ele, azi, dis = cams([0], [0])
    with pytest.raises(AssertionError, match="view-dependent"):
        out.get_text_embeddings_perp_neg(ele, azi, dis, view_dependent_prompting=False)
