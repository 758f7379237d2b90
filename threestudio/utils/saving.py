"""SaverMixin: writes images, image grids, videos, arrays and meshes under a system's save dir.

Image inputs are tensors or arrays, ``data_format`` "HWC" (default) or "CHW", ``data_range``
(0, 1) by default. Grid items are dicts: ``{"type": "rgb"|"grayscale"|"uv", "img": ..., "kwargs":
{...}}``, optionally with ``"name"`` (a text label drawn on the tile).
"""

import json
import os
import re
import shutil

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image, ImageDraw

from threestudio.utils.atomic import atomic_path
from threestudio.utils.distributed import global_rank
from threestudio.utils.misc import barrier
from threestudio.utils.typing import Any, Dict, List, Optional


def _to_numpy(data) -> Any:
    if isinstance(data, torch.Tensor):
        return data.detach().float().cpu().numpy()
    if isinstance(data, (list, tuple)):
        return [_to_numpy(d) for d in data]
    if isinstance(data, dict):
        return {k: _to_numpy(v) for k, v in data.items()}
    return data


def _format_rows(row_format: str, values: np.ndarray) -> str:
    """``row_format`` applied to every row of ``values``, rows joined by newlines, in one
    ``str.format`` call over the whole array (as trimesh's ``util.array_to_string`` writes its
    OBJ text) rather than a Python loop per row."""
    values = np.asarray(values)
    return "\n".join([row_format] * len(values)).format(*values.reshape(-1))


def _build_trimesh(v_pos, t_pos_idx, v_rgb=None, **kwargs):
    """A ``trimesh.Trimesh`` as given (no merging or reordering), with 8-bit vertex colours."""
    import trimesh

    if v_rgb is not None:
        kwargs["vertex_colors"] = (np.clip(_to_numpy(v_rgb), 0, 1) * 255).astype(np.uint8)
    return trimesh.Trimesh(vertices=v_pos, faces=t_pos_idx, process=False, **kwargs)

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


class SaverMixin:
    _save_dir: Optional[str] = None

    DEFAULT_RGB_KWARGS = {"data_format": "HWC", "data_range": (0, 1)}
    DEFAULT_UV_KWARGS = {"data_format": "HWC", "data_range": (0, 1), "cmap": "checkerboard"}
    DEFAULT_GRAYSCALE_KWARGS = {"data_range": None, "cmap": "jet"}
    DEFAULT_GRID_KWARGS = {"align": "max"}

    def set_save_dir(self, save_dir: str) -> None:
        self._save_dir = save_dir

    def get_save_dir(self) -> str:
        if self._save_dir is None:
            raise ValueError("save dir is not set: call set_save_dir() first")
        return self._save_dir

    def get_save_path(self, filename: str) -> str:
        path = os.path.join(self.get_save_dir(), filename)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    # ---------- image conversion ----------

    def get_rgb_image_(self, img, data_format, data_range, rgba: bool = False) -> np.ndarray:
        img = _to_numpy(img)
        assert data_format in ("CHW", "HWC"), f"data_format must be CHW or HWC, got {data_format}"
        if data_format == "CHW":
            img = img.transpose(1, 2, 0)
        if img.dtype != np.uint8:
            img = img.clip(min=data_range[0], max=data_range[1])
            img = ((img - data_range[0]) / (data_range[1] - data_range[0]) * 255.0).astype(np.uint8)
        nc = 4 if rgba else 3
        imgs = [img[..., start : start + nc] for start in range(0, img.shape[-1], nc)]
        imgs = [
            np.concatenate(
                [i, np.zeros((i.shape[0], i.shape[1], nc - i.shape[2]), dtype=i.dtype)], -1
            )
            if i.shape[-1] < nc
            else i
            for i in imgs
        ]
        return np.concatenate(imgs, axis=1)

    def get_uv_image_(self, img, data_format, data_range, cmap) -> np.ndarray:
        img = _to_numpy(img)
        if data_format == "CHW":
            img = img.transpose(1, 2, 0)
        img = img.clip(min=data_range[0], max=data_range[1])
        img = (img - data_range[0]) / (data_range[1] - data_range[0])
        if cmap == "checkerboard":
            n_grid = 64
            mask = (img * n_grid).astype(int)
            mask = (mask[..., 0] + mask[..., 1]) % 2 == 0
            out = np.ones((img.shape[0], img.shape[1], 3), dtype=np.uint8) * 255
            out[mask] = np.array([255, 0, 255], dtype=np.uint8)
            return out
        if cmap == "color":
            out = np.zeros((img.shape[0], img.shape[1], 3), dtype=np.uint8)
            out[..., 0] = (img[..., 0] * 255).astype(np.uint8)
            out[..., 1] = (img[..., 1] * 255).astype(np.uint8)
            return out
        raise ValueError(f"unknown uv cmap '{cmap}' (use 'checkerboard' or 'color')")

    def get_grayscale_image_(self, img, data_range, cmap) -> np.ndarray:
        img = _to_numpy(img)
        if img.ndim == 3:
            img = img[..., 0]
        if data_range is None:
            lo, hi = float(img.min()), float(img.max())
        else:
            lo, hi = data_range
        img = (img.clip(lo, hi) - lo) / max(hi - lo, 1e-12)
        if cmap in (None, "gray", "grey"):
            out = (img * 255.0).astype(np.uint8)
            return np.repeat(out[..., None], 3, axis=2)
        from matplotlib import colormaps

        try:
            cm = colormaps[cmap]
        except KeyError:
            raise ValueError(f"unknown colormap '{cmap}'") from None
        return (cm(img)[..., :3] * 255.0).astype(np.uint8)

    def _image_of(self, item: Dict[str, Any]) -> np.ndarray:
        kind = item["type"]
        if kind == "rgb":
            img = self.get_rgb_image_(
                item["img"], **{**self.DEFAULT_RGB_KWARGS, **item.get("kwargs", {})}
            )
        elif kind == "uv":
            img = self.get_uv_image_(
                item["img"], **{**self.DEFAULT_UV_KWARGS, **item.get("kwargs", {})}
            )
        elif kind == "grayscale":
            img = self.get_grayscale_image_(
                item["img"], **{**self.DEFAULT_GRAYSCALE_KWARGS, **item.get("kwargs", {})}
            )
        else:
            raise ValueError(f"unknown grid item type '{kind}' (use rgb, grayscale or uv)")
        if item.get("name"):
            img = self._draw_label(img, str(item["name"]))
        return img

    @staticmethod
    def _draw_label(img: np.ndarray, text: str) -> np.ndarray:
        pil = Image.fromarray(img[..., :3] if img.shape[-1] > 3 else img)
        draw = ImageDraw.Draw(pil)
        # a dark box behind the text keeps it readable on any content
        box = draw.textbbox((2, 1), text)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
        draw.text((2, 1), text, fill=(255, 255, 255))
        return np.asarray(pil)

    def get_image_grid_(self, imgs: List, align) -> np.ndarray:
        if isinstance(imgs[0], list):
            rows = [self.get_image_grid_(row, align) for row in imgs]
            width = max(r.shape[1] for r in rows)
            rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
            return np.concatenate(rows, axis=0)
        cols = [self._image_of(item) for item in imgs]
        if align == "max":
            h = max(c.shape[0] for c in cols)
        elif align == "min":
            h = min(c.shape[0] for c in cols)
        elif isinstance(align, int):
            h = align
        else:
            raise ValueError(f"unknown align '{align}'")
        resized = []
        for c in cols:
            if c.shape[0] != h:
                w = int(round(c.shape[1] * h / c.shape[0]))
                c = np.asarray(Image.fromarray(c).resize((w, h), Image.NEAREST))
            resized.append(c)
        return np.concatenate(resized, axis=1)

    # ---------- images ----------

    def _write_image(self, filename: str, img: np.ndarray) -> str:
        # written whole, then renamed: under DDP two ranks may write the same view (Lightning pads
        # the evaluation views to an equal count per rank), and a reader never sees half a file
        path = self.get_save_path(filename)
        with atomic_path(path) as tmp:
            Image.fromarray(img).save(tmp)
        return path

    def save_image_grid(
        self, filename: str, imgs, align=DEFAULT_GRID_KWARGS["align"], **kwargs
    ) -> str:
        return self._write_image(filename, self.get_image_grid_(imgs, align=align))

    def save_image(self, filename: str, img) -> str:
        img = _to_numpy(img)
        assert img.dtype == np.uint8 or img.dtype == np.uint16
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        return self._write_image(filename, img)

    def save_rgb_image(
        self, filename, img, data_format="HWC", data_range=(0, 1), rgba=False, **kw
    ) -> str:
        return self._write_image(
            filename, self.get_rgb_image_(img, data_format, data_range, rgba=rgba)
        )

    def save_uv_image(
        self, filename, img, data_format="HWC", data_range=(0, 1), cmap="checkerboard"
    ) -> str:
        return self._write_image(filename, self.get_uv_image_(img, data_format, data_range, cmap))

    def save_grayscale_image(self, filename, img, data_range=None, cmap="jet") -> str:
        return self._write_image(filename, self.get_grayscale_image_(img, data_range, cmap))

    # ---------- sequences ----------

    def save_img_sequence(
        self,
        filename: str,
        img_dir: str,
        matcher: str,
        save_format: str = "mp4",
        fps: int = 30,
        name: Optional[str] = None,
        step: Optional[int] = None,
        delete_images: bool = False,
    ) -> str:
        """Write the images in ``img_dir`` whose names match ``matcher`` (with one integer group
        giving the frame order) as ``filename.{mp4,gif}``."""
        assert save_format in ("gif", "mp4"), f"save_format must be gif or mp4, got {save_format}"
        if not filename.endswith(save_format):
            filename += f".{save_format}"
        save_path = self.get_save_path(filename)
        # under DDP every rank calls this (from the test-epoch-end hook) once its share of the
        # frames is written; global rank 0 alone writes the video, from all of them
        barrier()
        if global_rank() != 0:
            return save_path
        pattern = re.compile(matcher)
        img_dir = os.path.join(self.get_save_dir(), img_dir)
        frames = []
        for f in os.listdir(img_dir):
            m = pattern.search(f)
            if m:
                frames.append((int(m.group(1)), f))
        frames.sort()
        imgs = [np.asarray(Image.open(os.path.join(img_dir, f)).convert("RGB")) for _, f in frames]
        if not imgs:
            raise ValueError(f"no images matching '{matcher}' in {img_dir}")
        self.write_video(save_path, imgs, fps=fps)
        if delete_images:
            shutil.rmtree(img_dir)
        return save_path

    def write_video(self, save_path: str, imgs: List[np.ndarray], fps: int = 30) -> str:
        with atomic_path(save_path) as tmp:
            self._write_frames(tmp, imgs, fps)
        return save_path

    @staticmethod
    def _write_frames(save_path: str, imgs: List[np.ndarray], fps: int) -> None:
        if save_path.endswith(".gif"):
            imageio.mimsave(save_path, imgs, duration=1000.0 / fps, loop=0)
        else:
            # libx264 needs even frame sizes
            h, w = imgs[0].shape[:2]
            imgs = [im[: h - h % 2, : w - w % 2] for im in imgs]
            writer = imageio.get_writer(
                save_path, fps=fps, codec="libx264", quality=8, macro_block_size=1
            )
            for im in imgs:
                writer.append_data(im)
            writer.close()

    # ---------- arrays and files ----------

    def save_npy(self, filename: str, data) -> str:
        path = self.get_save_path(filename)
        if not path.endswith(".npy"):
            path += ".npy"
        with atomic_path(path) as tmp:
            np.save(tmp, _to_numpy(data))
        return path

    def save_npz(self, filename: str, data: Dict[str, Any]) -> str:
        path = self.get_save_path(filename)
        if not path.endswith(".npz"):
            path += ".npz"
        with atomic_path(path) as tmp:
            np.savez(tmp, **_to_numpy(data))
        return path

    def save_json(self, filename: str, payload) -> str:
        path = self.get_save_path(filename)
        _atomic_write_bytes(path, json.dumps(_to_numpy(payload), indent=2, default=float).encode())
        return path

    def save_file(self, filename: str, src_path: str) -> str:
        path = self.get_save_path(filename)
        with atomic_path(path) as tmp:
            shutil.copyfile(src_path, tmp)
        return path

    def save_state_dict(self, filename: str, state_dict) -> str:
        path = self.get_save_path(filename)
        with atomic_path(path) as tmp:
            torch.save(state_dict, tmp)
        return path

    # ---------- meshes ----------

    def save_mesh(
        self, filename: str, v_pos, t_pos_idx, v_tex=None, t_tex_idx=None, v_rgb=None
    ) -> str:
        """Any format trimesh writes (``.glb``, ``.ply``, ``.obj`` ...), chosen by the extension."""
        v_pos, t_pos_idx = _to_numpy(v_pos), _to_numpy(t_pos_idx).astype(np.int64)
        return self._save_trimesh(filename, _build_trimesh(v_pos, t_pos_idx, v_rgb))

    def _save_trimesh(self, filename: str, mesh) -> str:
        path = self.get_save_path(filename)
        with atomic_path(path) as tmp:
            mesh.export(tmp)
        return path

    def save_glb_arrays(
        self,
        filename: str,
        v_pos,
        t_pos_idx,
        v_tex=None,
        t_tex_idx=None,
        map_Kd=None,
        v_rgb=None,
    ) -> str:
        """A binary glTF with a base-colour texture (when UVs and ``map_Kd`` are given)."""
        import trimesh

        if not filename.endswith(".glb"):
            filename += ".glb"
        v_pos, t_pos_idx = _to_numpy(v_pos), _to_numpy(t_pos_idx).astype(np.int64)
        if v_tex is None or map_Kd is None:
            return self._save_trimesh(filename, _build_trimesh(v_pos, t_pos_idx, v_rgb))
        v_tex, t_tex_idx = _to_numpy(v_tex), _to_numpy(t_tex_idx).astype(np.int64)
        # glTF stores one UV per vertex: split vertices where position/UV indices differ
        corners = np.stack([t_pos_idx.reshape(-1), t_tex_idx.reshape(-1)], 1)
        uniq, inverse = np.unique(corners, axis=0, return_inverse=True)
        texture = Image.fromarray(self.get_rgb_image_(map_Kd, "HWC", (0, 1)))
        material = trimesh.visual.material.PBRMaterial(baseColorTexture=texture)
        visual = trimesh.visual.TextureVisuals(uv=v_tex[uniq[:, 1]], material=material)
        mesh = _build_trimesh(v_pos[uniq[:, 0]], inverse.reshape(-1, 3), visual=visual)
        return self._save_trimesh(filename, mesh)

    def save_obj_arrays(
        self,
        filename: str,
        v_pos,
        t_pos_idx,
        v_nrm=None,
        v_tex=None,
        t_tex_idx=None,
        v_rgb=None,
        save_mat: bool = False,
        matname: Optional[str] = None,
        map_Kd=None,
        map_Ks=None,
        map_Bump=None,
        map_Pm=None,
        map_Pr=None,
        map_format: str = "jpg",
    ) -> List[str]:
        """Wavefront OBJ with optional normals, UVs, vertex colours (``v x y z r g b``) and an MTL
        with textures: ``map_Kd`` (albedo), ``map_Ks``, ``map_Bump``, metallic ``map_Pm``,
        roughness ``map_Pr``. Returns the paths written."""
        if not filename.endswith(".obj"):
            filename += ".obj"
        v_pos, t_pos_idx = _to_numpy(v_pos), _to_numpy(t_pos_idx).astype(np.int64)
        v_nrm = _to_numpy(v_nrm) if v_nrm is not None else None
        v_tex = _to_numpy(v_tex) if v_tex is not None else None
        t_tex_idx = _to_numpy(t_tex_idx).astype(np.int64) if t_tex_idx is not None else None
        v_rgb = _to_numpy(v_rgb) if v_rgb is not None else None
        if v_tex is not None and t_tex_idx is None:
            t_tex_idx = t_pos_idx

        lines = ["# written by threestudio"]
        stem = os.path.splitext(os.path.basename(filename))[0]
        written = []
        if save_mat:
            matname = matname or "default"
            lines.append(f"mtllib {stem}.mtl")
        if v_rgb is not None:
            rows = np.concatenate([v_pos[:, :3], np.clip(v_rgb[:, :3], 0, 1)], axis=1)
            lines.append(_format_rows("v {:.6f} {:.6f} {:.6f} {:.4f} {:.4f} {:.4f}", rows))
        else:
            lines.append(_format_rows("v {:.6f} {:.6f} {:.6f}", v_pos[:, :3]))
        if v_nrm is not None:
            lines.append(_format_rows("vn {:.6f} {:.6f} {:.6f}", v_nrm[:, :3]))
        if v_tex is not None:
            lines.append(_format_rows("vt {:.6f} {:.6f}", v_tex[:, :2]))
        if save_mat:
            lines.append(f"usemtl {matname}")
        # each corner is v, v/vt, v//vn or v/vt/vn (1-based; normals share the position index)
        corner_indices = [t_pos_idx + 1]
        corner_format = "{}"
        if v_tex is not None:
            corner_indices.append(t_tex_idx + 1)
            corner_format += "/{}"
        if v_nrm is not None:
            corner_indices.append(t_pos_idx + 1)
            corner_format += "/{}" if v_tex is not None else "//{}"
        faces = np.stack(corner_indices, axis=-1).reshape(len(t_pos_idx), 3 * len(corner_indices))
        lines.append(_format_rows("f " + " ".join([corner_format] * 3), faces))
        lines = [line for line in lines if line]  # an empty block writes no line
        obj_path = self.get_save_path(filename)
        _atomic_write_bytes(obj_path, ("\n".join(lines) + "\n").encode())
        written.append(obj_path)

        if save_mat:
            mtl_dir = os.path.dirname(filename)
            mtl = [f"newmtl {matname}", "Ka 0.0 0.0 0.0", "Kd 1.0 1.0 1.0", "Ks 0.0 0.0 0.0"]
            textures = {
                "map_Kd": (map_Kd, "texture_kd"),
                "map_Ks": (map_Ks, "texture_ks"),
                "map_Bump": (map_Bump, "texture_nrm"),
                "map_Pm": (map_Pm, "texture_metallic"),
                "map_Pr": (map_Pr, "texture_roughness"),
            }
            for key, (tex, name) in textures.items():
                if tex is None:
                    continue
                tex_file = f"{name}.{map_format}"
                tex_np = _to_numpy(tex)
                if tex_np.ndim == 3 and tex_np.shape[-1] == 1:
                    img = self.get_grayscale_image_(tex_np, (0, 1), None)
                else:
                    img = self.get_rgb_image_(tex_np, "HWC", (0, 1))
                written.append(self._write_image(os.path.join(mtl_dir, tex_file), img))
                mtl.append(f"{key} {tex_file}")
            mtl_path = self.get_save_path(os.path.join(mtl_dir, f"{stem}.mtl"))
            _atomic_write_bytes(mtl_path, ("\n".join(mtl) + "\n").encode())
            written.append(mtl_path)
        return written

    # ---------- meshes: the established API (a Mesh and flags) ----------

    def save_obj(
        self,
        filename: str,
        mesh,
        save_mat: bool = False,
        save_normal: bool = False,
        save_uv: bool = False,
        save_vertex_color: bool = False,
        map_Kd=None,
        map_Ks=None,
        map_Bump=None,
        map_Pm=None,
        map_Pr=None,
        map_format: str = "jpg",
    ) -> List[str]:
        """Write ``mesh`` (a ``threestudio.models.mesh.Mesh``) as OBJ, with normals, UVs, vertex
        colours and an MTL with the given texture maps as asked."""
        return self.save_obj_arrays(
            filename,
            mesh.v_pos,
            mesh.t_pos_idx,
            v_nrm=mesh.v_nrm if save_normal else None,
            v_tex=mesh.v_tex if save_uv else None,
            t_tex_idx=mesh.t_tex_idx if save_uv else None,
            v_rgb=mesh.v_rgb if save_vertex_color else None,
            save_mat=save_mat,
            map_Kd=map_Kd,
            map_Ks=map_Ks,
            map_Bump=map_Bump,
            map_Pm=map_Pm,
            map_Pr=map_Pr,
            map_format=map_format,
        )

    def save_glb(
        self,
        filename: str,
        mesh,
        save_uv: bool = True,
        save_vertex_color: bool = False,
        map_Kd=None,
        **kwargs,
    ) -> str:
        """Write ``mesh`` as binary glTF with its base-colour texture (or vertex colours)."""
        textured = save_uv and map_Kd is not None
        return self.save_glb_arrays(
            filename,
            mesh.v_pos,
            mesh.t_pos_idx,
            v_tex=mesh.v_tex if textured else None,
            t_tex_idx=mesh.t_tex_idx if textured else None,
            map_Kd=map_Kd,
            v_rgb=mesh.v_rgb if save_vertex_color else None,
        )
