"""Reading image files of any format and colour mode into RGB uint8 arrays, and finding the
files that cannot be read before training starts.

Pillow does the decoding: TensorFlow's decoders reject CMYK JPEGs, WebP and TIFF, and an error
raised inside a tf.data graph no longer knows which file it came from.
"""

import concurrent.futures
import os

import numpy as np
from PIL import Image

from atalp_tf.errors import DataError

# Extensions listed as images; any other (non-hidden) file in a class folder is reported as
# "not an image" rather than silently ignored, so a stray file is never mistaken for data.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


class BadImagesError(DataError):
    """Some files could not be read; ``bad`` lists ``(path, reason)`` pairs."""

    def __init__(self, bad, hint):
        self.bad = list(bad)
        shown = "\n".join(f"  {path}: {reason}" for path, reason in self.bad[:20])
        more = f"\n  ... and {len(self.bad) - 20} more" if len(self.bad) > 20 else ""
        super().__init__(f"{len(self.bad)} file(s) could not be read as images:\n{shown}{more}\n{hint}")


def to_rgb(image):
    """A PIL image of any mode to an RGB one; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: keep the top 8 bits instead of clipping everything to 255.
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.uint8(np.clip(array / peak * 255.0, 0, 255)), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_rgb(path, min_side=None):
    """Decodes ``path`` to a uint8 ``[H, W, 3]`` array.

    Args:
        min_side: JPEGs may be decoded at a reduced scale whose shorter side is still at least
            this many pixels (libjpeg's DCT scaling is much faster than decoding in full).
    """
    with Image.open(path) as image:
        if min_side:
            image.draft("RGB", (min_side, min_side))
        image.load()
        return np.asarray(to_rgb(image), dtype=np.uint8)


def _problem(path):
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return "not an image file (extension not one of %s)" % ", ".join(IMAGE_EXTENSIONS)
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        read_rgb(path, min_side=32)
    except Exception as error:  # noqa: BLE001 -- any decoding failure means "unreadable"
        return f"{type(error).__name__}: {error}"
    return None


def find_unreadable(paths, workers=None):
    """``(path, reason)`` for every file that does not decode, checked in parallel threads.

    Pillow releases the GIL while decoding, so threads use every core; JPEGs are decoded at
    1/8 scale, which still reads all their data and so still finds truncated files.
    """
    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        problems = list(pool.map(_problem, paths, chunksize=64))
    return [(path, reason) for path, reason in zip(paths, problems) if reason]


def read_resized(path, shorter_side):
    """``read_rgb`` with the shorter side resized to ``shorter_side`` (aspect ratio kept)."""
    with Image.open(path) as image:
        image.draft("RGB", (shorter_side, shorter_side))
        image = to_rgb(image)
        width, height = image.size
        scale = shorter_side / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != image.size:
            image = image.resize(size, Image.BILINEAR, reducing_gap=3.0)
        return np.asarray(image, dtype=np.uint8)
