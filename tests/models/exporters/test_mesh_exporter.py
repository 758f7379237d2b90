import pytest
import torch
import trimesh

import threestudio
from threestudio.models.exporters.mesh_exporter import fill_texture_holes
from threestudio.models.mesh import Mesh
from threestudio.utils.errors import ConfigError

RADIUS = 0.8


class SphereGeometry:
    def isosurface(self):
        m = trimesh.creation.icosphere(subdivisions=2, radius=RADIUS)
        return Mesh(torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces))

    def export(self, points):
        return {"radius": points.norm(dim=-1, keepdim=True)}


class PositionMaterial:
    def export(self, points, radius):
        assert radius.shape[0] == points.shape[0]
        return {"albedo": points / (2 * RADIUS) + 0.5}


def make_exporter(**cfg):
    cls = threestudio.find("mesh-exporter")
    return cls(cfg, geometry=SphereGeometry(), material=PositionMaterial(), background=None)


def test_obj_mtl_bakes_surface_points_into_the_texture():
    exporter = make_exporter(texture_size=64, xatlas_chart_options={"max_iterations": 1})
    (out,) = exporter()
    assert out.save_name == "model.obj" and out.save_type == "obj"
    params = out.params
    assert params["save_mat"] and params["map_format"] == "jpg"
    kd = params["map_Kd"]
    assert kd.shape == (64, 64, 3)
    mesh = params["mesh"]
    assert mesh.v_tex.min() >= 0 and mesh.v_tex.max() <= 1
    # texels inside the charts hold points of the (faceted) sphere surface
    uv = mesh.v_tex * 2 - 1
    pos4 = torch.cat([uv, torch.zeros_like(uv[:, :1]), torch.ones_like(uv[:, :1])], -1)
    rast, _ = exporter.ctx.rasterize_one(pos4, mesh.t_tex_idx.int(), (64, 64))
    inside = rast[..., 3] > 0
    assert inside.float().mean() > 0.3
    points = (kd[inside] - 0.5) * 2 * RADIUS
    r = points.norm(dim=-1)
    assert r.max() <= RADIUS + 1e-4 and r.min() > 0.9 * RADIUS  # chords sit just inside
    # seams are filled: no texel is left at zero
    assert (kd.norm(dim=-1) > 0).all()


def test_obj_vertex_colours():
    (out,) = make_exporter(fmt="obj", save_uv=False)()
    mesh = out.params["mesh"]
    assert out.params["save_vertex_color"]
    assert torch.allclose(mesh.v_rgb, mesh.v_pos / (2 * RADIUS) + 0.5)


class FeaturelessGeometry(SphereGeometry):
    def export(self, points):
        return {}  # e.g. an implicit-sdf with n_feature_dims 0 (Fantasia3D's geometry stage)


@pytest.mark.parametrize("fmt", ["obj-mtl", "obj"])
def test_a_featureless_geometry_exports_its_mesh_without_textures(fmt):
    cls = threestudio.find("mesh-exporter")
    exporter = cls(
        {"fmt": fmt, "texture_size": 16, "xatlas_chart_options": {"max_iterations": 1}},
        geometry=FeaturelessGeometry(),
        material=PositionMaterial(),  # never asked: it would fail without radius
        background=None,
    )
    (out,) = exporter()
    assert out.params["mesh"].t_pos_idx.shape[0] > 0
    assert out.params["map_Kd"] is None and not out.params["save_vertex_color"]


def test_bad_config_is_a_one_line_error():
    with pytest.raises(ConfigError, match="fmt"):
        make_exporter(fmt="fbx")
    with pytest.raises(ConfigError, match="save_uv"):
        make_exporter(save_uv=False)


def test_fill_texture_holes_extends_neighbours():
    image = torch.zeros(8, 8, 1)
    image[:, :4, 0] = 2.0
    valid = torch.zeros(8, 8, dtype=torch.bool)
    valid[:, :4] = True
    filled = fill_texture_holes(image, valid)
    assert torch.allclose(filled, torch.full_like(filled, 2.0))
    assert torch.equal(filled[valid], image[valid])
