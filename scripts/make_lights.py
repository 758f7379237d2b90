"""Write the lighting files of ``pbr-material`` to ``load/lights/``:

- ``mud_road_puresky_1k.hdr``: a procedural clear sky (Radiance .hdr, 256 x 128 lat-long, linear
  radiance), a stand-in under the file name the published Fantasia3D texture config names (the
  Poly Haven map of that name is not shipped): a blue gradient sky, a sun 35 degrees above the
  horizon with a soft halo, and a dim brown ground. The map's top row is +y, as envlight (and
  so the established material) reads lat-long maps.
- ``bsdf_256_256.bin``: the split-sum BRDF table (raw float32, 256 x 256 x 2: rows of
  roughness, columns of n . v, (A, B) per entry), integrated numerically for GGX (see
  ``threestudio.models.lights.split_sum.integrate_brdf_lut``).

    python scripts/make_lights.py [--out load/lights] [--skip-lut]

Deterministic: no random draws. The table takes a few minutes on two CPU cores.
"""

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from threestudio.models.lights.split_sum import (  # noqa: E402
    integrate_brdf_lut,
    latlong_directions,
)
from threestudio.utils.paths import LOAD_DIR  # noqa: E402

SKY_NAME = "mud_road_puresky_1k.hdr"
LUT_NAME = "bsdf_256_256.bin"

ZENITH = np.array([0.22, 0.38, 0.85])
HORIZON = np.array([0.80, 0.86, 0.95])
GROUND = np.array([0.20, 0.16, 0.12])
SUN = np.array([60.0, 55.0, 48.0])  # radiance inside the disc
SUN_ELEVATION = math.radians(35.0)
SUN_AZIMUTH = math.radians(40.0)  # longitude in the map's frame (0 at -z, towards +x)
SUN_RADIUS = math.radians(2.0)
HALO_WIDTH = math.radians(10.0)


def procedural_sky(height: int = 128) -> np.ndarray:
    """[H, 2H, 3] linear RGB radiance."""
    dirs = latlong_directions(height, 2 * height).double().numpy()
    up = dirs[..., 1]
    elevation = np.arcsin(np.clip(up, -1.0, 1.0))
    t = np.clip(elevation / (math.pi / 2), 0.0, 1.0)[..., None]
    sky = HORIZON * (1.0 - t) ** 2.5 + ZENITH * (1.0 - (1.0 - t) ** 2.5)
    # the ground darkens away from the horizon, which it meets over about 3 degrees
    depth = np.clip(-elevation / (math.pi / 2), 0.0, 1.0)[..., None]
    ground = GROUND * (1.0 - 0.5 * depth) + HORIZON * 0.3 * np.exp(-depth * 30.0)
    blend = np.clip(elevation / math.radians(3.0) + 0.5, 0.0, 1.0)[..., None]
    image = ground * (1.0 - blend) + sky * blend
    sun_dir = np.array(
        [
            math.cos(SUN_ELEVATION) * math.sin(SUN_AZIMUTH),
            math.sin(SUN_ELEVATION),
            -math.cos(SUN_ELEVATION) * math.cos(SUN_AZIMUTH),
        ]
    )
    angle = np.arccos(np.clip(dirs @ sun_dir, -1.0, 1.0))[..., None]
    disc = np.clip((SUN_RADIUS - angle) / math.radians(0.5) + 0.5, 0.0, 1.0)
    halo = np.exp(-0.5 * (angle / HALO_WIDTH) ** 2)
    image = image * (1.0 - disc) + SUN * disc + np.array([1.5, 1.3, 1.0]) * halo * blend
    return image.astype(np.float32)


def write_hdr(path: str, image: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(path, np.ascontiguousarray(image[..., ::-1])):  # OpenCV wants BGR
        raise RuntimeError(f"could not write {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(LOAD_DIR, "lights"))
    parser.add_argument("--height", type=int, default=128, help="rows of the sky map")
    parser.add_argument("--skip-lut", action="store_true", help="write only the sky")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    sky_path = os.path.join(args.out, SKY_NAME)
    write_hdr(sky_path, procedural_sky(args.height))
    print(f"wrote {sky_path}")
    if not args.skip_lut:
        lut_path = os.path.join(args.out, LUT_NAME)
        integrate_brdf_lut(256).numpy().astype(np.float32).tofile(lut_path)
        print(f"wrote {lut_path}")


if __name__ == "__main__":
    main()
