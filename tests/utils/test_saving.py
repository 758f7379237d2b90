import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from threestudio.utils.saving import SaverMixin


@pytest.fixture
def saver(tmp_path):
    s = SaverMixin()
    s.set_save_dir(str(tmp_path))
    return s


def test_rgb_image_roundtrip(saver, tmp_path):
    img = torch.zeros(4, 6, 3)
    img[..., 0] = 1.0
    img[1, 2] = torch.tensor([0.0, 0.5, 1.0])
    path = saver.save_rgb_image("a/b.png", img)
    out = np.asarray(Image.open(path))
    assert out.shape == (4, 6, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 2]) == (0, 127, 255)
    chw = saver.save_rgb_image("chw.png", img.permute(2, 0, 1), data_format="CHW")
    assert np.array_equal(np.asarray(Image.open(chw)), out)


def test_grayscale_colormap_and_range(saver):
    ramp = torch.linspace(0, 1, 10)[None, :].repeat(3, 1)
    gray = np.asarray(
        Image.open(saver.save_grayscale_image("g.png", ramp, data_range=(0, 1), cmap=None))
    )
    assert (
        gray[0, 0, 0] == 0
        and gray[0, -1, 0] == 255
        and np.all(np.diff(gray[0, :, 0].astype(int)) > 0)
    )
    jet = np.asarray(
        Image.open(saver.save_grayscale_image("j.png", ramp, data_range=(0, 1), cmap="jet"))
    )
    assert jet[0, 0, 2] > jet[0, 0, 0]  # jet starts blue
    assert jet[0, -1, 0] > jet[0, -1, 2]  # and ends red


def test_image_grid_with_labels(saver):
    rgb = torch.ones(32, 32, 3) * 0.5
    items = [
        {"type": "rgb", "img": rgb, "kwargs": {"data_format": "HWC"}, "name": "rgb"},
        {
            "type": "grayscale",
            "img": torch.zeros(16, 16),
            "kwargs": {"cmap": None, "data_range": (0, 1)},
        },
        {"type": "uv", "img": torch.rand(32, 32, 2)},
    ]
    out = np.asarray(Image.open(saver.save_image_grid("grid.png", items)))
    assert out.shape == (32, 96, 3)  # tiles resized to the tallest
    tile = out[:, :32]
    # the label is drawn in white on a dark box at the top-left, the rest is the image's grey
    assert (tile[:12, :20] > 200).any() and (tile[:12, :20] == 0).any()
    assert np.all(tile[20:, :] == 127)
    rows = np.asarray(
        Image.open(saver.save_image_grid("rows.png", [[items[0]], [items[0], items[2]]]))
    )
    assert rows.shape == (64, 64, 3)


def test_video_and_gif(saver, tmp_path):
    for i in range(5):
        frame = torch.full((16, 18, 3), i / 4.0)
        saver.save_rgb_image(f"frames/{i}.png", frame)
    mp4 = saver.save_img_sequence("vid", "frames", r"(\d+)\.png", save_format="mp4", fps=5)
    frames = imageio.mimread(mp4)
    assert len(frames) == 5 and frames[0].shape[:2] == (16, 18)
    assert frames[0].mean() < frames[-1].mean()
    gif = saver.save_img_sequence("vid", "frames", r"(\d+)\.png", save_format="gif", fps=5)
    assert len(imageio.mimread(gif)) == 5


def test_obj_with_material_textures_loads_in_trimesh(saver, tmp_path):
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    uv = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]])
    kd = torch.zeros(8, 8, 3)
    kd[..., 1] = 1.0
    paths = saver.save_obj_arrays(
        "mesh/model.obj",
        v,
        f,
        v_nrm=torch.nn.functional.normalize(v + 0.1, dim=-1),
        v_tex=uv,
        t_tex_idx=f,
        save_mat=True,
        map_Kd=kd,
        map_Pr=torch.full((8, 8, 1), 0.5),
        map_format="png",
    )
    assert any(p.endswith("texture_kd.png") for p in paths)
    mtl = open(str(tmp_path / "mesh" / "model.mtl")).read()
    assert "map_Kd texture_kd.png" in mtl and "map_Pr texture_roughness.png" in mtl
    mesh = trimesh.load(str(tmp_path / "mesh" / "model.obj"), process=False, force="mesh")
    assert mesh.faces.shape == (4, 3) and mesh.vertices.shape[0] >= 4
    assert mesh.visual.uv is not None
    assert np.all((mesh.visual.uv >= 0) & (mesh.visual.uv <= 1))
    tex = np.asarray(mesh.visual.material.image.convert("RGB"))
    assert tuple(tex[0, 0]) == (0, 255, 0)


def test_obj_vertex_colours_and_glb(saver, tmp_path):
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    f = torch.tensor([[0, 1, 2]])
    rgb = torch.tensor([[1.0, 0.0, 0.0]] * 3)
    saver.save_obj_arrays("vc.obj", v, f, v_rgb=rgb)
    text = open(str(tmp_path / "vc.obj")).read()
    assert "v 1.000000 0.000000 0.000000 1.0000 0.0000 0.0000" in text
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    saver.save_glb_arrays("m.glb", v, f, v_tex=uv, t_tex_idx=f, map_Kd=torch.ones(4, 4, 3) * 0.5)
    scene = trimesh.load(str(tmp_path / "m.glb"))
    mesh = next(iter(scene.geometry.values())) if hasattr(scene, "geometry") else scene
    assert mesh.faces.shape == (1, 3)
    assert np.allclose(sorted(mesh.vertices[:, 0]), [0, 0, 1])
    saver.save_mesh("m.ply", v, f, v_rgb=rgb)
    ply = trimesh.load(str(tmp_path / "m.ply"), process=False)
    assert tuple(ply.visual.vertex_colors[0][:3]) == (255, 0, 0)


def test_json_npz(saver, tmp_path):
    saver.save_json("r.json", {"score": torch.tensor(0.5), "n": 3})
    import json

    assert json.load(open(tmp_path / "r.json")) == {"score": 0.5, "n": 3}
    saver.save_npz("a.npz", {"x": torch.arange(3)})
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]


def test_save_obj_from_a_mesh_object(saver, tmp_path):
    from threestudio.models.mesh import Mesh

    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    mesh = Mesh(v, f)
    mesh.set_vertex_color(torch.tensor([[0.0, 0.0, 1.0]] * 4))
    saver.save_obj("plain.obj", mesh, save_normal=True, save_vertex_color=True)
    text = (tmp_path / "plain.obj").read_text()
    assert text.count("\nvn ") == 4 and "0.0000 0.0000 1.0000" in text
    saver.save_obj("uv.obj", mesh, save_mat=True, save_uv=True, map_Kd=torch.ones(4, 4, 3))
    loaded = trimesh.load(str(tmp_path / "uv.obj"), process=False, force="mesh")
    assert loaded.visual.uv is not None and loaded.faces.shape == (4, 3)
    saver.save_glb("uv.glb", mesh, save_uv=True, map_Kd=torch.ones(4, 4, 3))
    assert (tmp_path / "uv.glb").stat().st_size > 0


def test_images_are_written_whole_and_a_rewrite_replaces_them(saver, tmp_path):
    # under DDP a padded evaluation view is written by two ranks to the same name: the file is
    # renamed into place whole, so it is one complete image, and no temporary file stays behind
    first = np.zeros((4, 4, 3), dtype=np.uint8)
    second = np.full((4, 4, 3), 200, dtype=np.uint8)
    saver.save_image("it3-test/0.png", first)
    path = saver.save_image("it3-test/0.png", second)
    assert sorted(p.name for p in (tmp_path / "it3-test").iterdir()) == ["0.png"]
    assert np.array_equal(np.asarray(Image.open(path)), second)
    jpg = saver.save_image("view.jpg", second)
    assert Image.open(jpg).format == "JPEG"
    with pytest.raises(ValueError, match="extension"):
        saver.save_image("view.unknown", second)
