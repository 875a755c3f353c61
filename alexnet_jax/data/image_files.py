"""Image files as model inputs, in NumPy (no TensorFlow): the evaluation's center view.

    x = image_files.load_image("cat.jpg", config)  # (input_size, input_size, 3) float32

Any Pillow mode (RGB, L, CMYK, RGBA, P, 16-bit) becomes RGB; the shorter side is resized to
`config.resize_size` (antialiased bilinear, the pipeline's resize), the center `input_size`
cropped and normalized as the pipeline normalizes. Used by predict, the figures' queries and the
PyTorch loader (torch_models).
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

import numpy as np
from PIL import Image

from alexnet_jax.core.errors import DataError, UserError
from alexnet_jax.data import imagenet_stats


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB view of any Pillow mode, as the input pipeline's decoder (preprocessing.decode_rgb)
    sees it: an alpha channel is dropped (the colours under it kept; PNG, WebP), a GIF's
    transparent pixels are black; 16-bit is rescaled."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: scale to 8 bits
        pixels = np.asarray(image, np.float32)
        scale = 255.0 / max(float(pixels.max()), 255.0) if image.mode == "I" else 1.0 / 257.0
        image = Image.fromarray(np.clip(pixels * scale, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    if image.format == "GIF" and "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert(
            "RGB"
        )
    with warnings.catch_warnings():  # Pillow's advice to convert transparent palettes to RGBA
        warnings.simplefilter("ignore", UserWarning)
        return image.convert("RGB")


def gif_rgb(data: bytes) -> np.ndarray:
    """uint8 [h, w, 3] of a GIF's first frame on its logical screen, as Pillow (and a browser)
    composes it and `_to_rgb` converts it: the input pipeline's decoder for GIFs
    (preprocessing.decode_rgb), since TensorFlow's decodes a first frame smaller than its screen
    at the frame's size with its pixels out of place. Broken data raises ValueError."""
    data = data.item() if isinstance(data, np.ndarray) else data  # tf.numpy_function: 0-d bytes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                return np.asarray(_to_rgb(image), np.uint8)
    except (OSError, Image.DecompressionBombError, SyntaxError) as e:
        raise ValueError(f"not a readable GIF: {e}") from e


def refused_bmp(data: bytes) -> bool:
    """Whether a picture is a BMP of a form that training refuses as undecodable, and so predict
    too (hostile pass 22, #18-#20): TensorFlow's decoder refuses 1, 4 and 16 bits per pixel and
    OS/2's 12-byte header, which Pillow reads; it ignores the compression and the colour masks,
    so it misread compressed files, a table of over 256 colours, and masks other than red
    0xFF0000, green 0xFF00, blue 0xFF (after any header), and read BI_ALPHABITFIELDS, which Pillow
    refuses. Read alike: 8-bit BI_RGB, 24 and 32-bit BI_RGB or BI_BITFIELDS of those masks."""
    data = data.item() if isinstance(data, np.ndarray) else data  # tf.numpy_function: 0-d bytes
    if not data.startswith(b"BM"):
        return False
    fields = struct.unpack_from("<I10xHI12xI4x4I", data[:70].ljust(70, b"\0"), 14)
    header, bits, compression, colours, *masks = fields
    if header not in (40, 52, 56, 64, 108, 124):  # Pillow's, less OS/2's 12
        return True
    if bits == 8:
        return compression != 0 or colours > 256
    alpha = header < 56 or bits == 24 or masks[3] in (0, 0xFF000000)  # (read by Pillow from 56)
    usual = masks[:3] == [0xFF0000, 0xFF00, 0xFF] and alpha
    return bits not in (24, 32) or compression not in (0, 3) or (compression == 3 and not usual)


def center_crop_geometry(height: int, width: int, resize_size: int, crop_size: int):
    """((resized height, width), (top, left)) of torchvision's Resize(resize_size) +
    CenterCrop(crop_size), as `preprocessing.center_crop_plan`: the longer side becomes
    floor(resize_size * long / short), the offsets round((resized - crop_size) / 2)."""
    short = min(height, width)
    resized = (resize_size * height // short, resize_size * width // short)
    return resized, tuple(round((r - crop_size) / 2.0) for r in resized)


def _triangle_weights(in_size: int, out_size: int, scale, translation: float) -> np.ndarray:
    """float32 [out_size, in_size] weights of TensorFlow's ScaleAndTranslate on one axis with
    the antialiased triangle kernel (`preprocessing.resample`), in its float32 arithmetic."""
    inv_scale = np.float32(1.0 / float(scale))
    kernel_scale = max(inv_scale, np.float32(1.0))
    sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * inv_scale
    sample = sample + (-inv_scale * np.float32(translation))
    position = np.arange(in_size, dtype=np.float32)[None] + np.float32(0.5) - sample[:, None]
    weights = np.maximum(np.float32(0.0), 1 - np.abs(position) * (np.float32(1.0) / kernel_scale))
    return weights / weights.sum(axis=1, keepdims=True)


def resize_center_crop(pixels: np.ndarray, resize_size: int, crop_size: int) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [crop_size, crop_size, 3]: the shorter side resized to
    resize_size with antialiased bilinear filtering, then the center crop (the pipeline's
    single eval view, torchvision's Resize + CenterCrop). Only the rows and columns that the
    crop's kernels reach enter the matrix products."""
    x = pixels.astype(np.float32)
    resized, top_left = center_crop_geometry(*x.shape[:2], resize_size, crop_size)
    for axis in (0, 1):  # rows, then columns
        scale = np.float32(resized[axis]) / np.float32(x.shape[axis])
        weights = _triangle_weights(x.shape[axis], crop_size, scale, -top_left[axis])
        used = np.flatnonzero(weights.any(axis=0))
        used = np.arange(used[0], used[-1] + 1)
        x = np.tensordot(weights[:, used], np.take(x, used, axis), axes=(1, axis))
        x = np.moveaxis(x, 0, axis)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def normalize(
    pixels: np.ndarray, normalization: str, mean_image: np.ndarray | None = None
) -> np.ndarray:
    """uint8 RGB -> float32 model input, as `preprocessing.normalize_batch` (no lighting offset).

    "mean": minus the ImageNet mean on the 0-255 scale; "mean_std": also divided by 255 * std;
    "mean_image": minus the center crop of `mean_image` (a run's, rundir.read_mean_image).
    """
    if normalization == "mean_image":
        if mean_image is None:
            raise UserError(
                "This model subtracts its training set's mean image (normalization='mean_image'): "
                "pass mean_image=rundir.read_mean_image(workdir) (predict --workdir does)."
            )
        size = pixels.shape[-2]
        top, left = (mean_image.shape[0] - size) // 2, (mean_image.shape[1] - size) // 2
        crop = mean_image[top : top + size, left : left + size]
        return pixels.astype(np.float32) - crop.astype(np.float32)
    x = pixels.astype(np.float32) - np.float32(255.0) * imagenet_stats.RGB_MEAN
    if normalization == "mean_std":
        x = x * (np.float32(1.0) / (np.float32(255.0) * imagenet_stats.RGB_STD))
    return x


def preprocess_image(
    image: Image.Image, config: Any, mean_image: np.ndarray | None = None
) -> np.ndarray:
    """(input_size, input_size, 3) float32 model input from a PIL image: the eval center view.

    The input pipeline's single-view evaluation (preprocessing.eval_views, normalize_batch) in
    NumPy: shorter side resized to resize_size (antialiased bilinear), center crop input_size,
    then normalized.
    """
    pixels = np.asarray(_to_rgb(image))  # (h, w, 3) uint8
    crop = resize_center_crop(pixels, config.resize_size, config.input_size)
    return normalize(crop, config.normalization, mean_image)


def load_image(path: str, config: Any, mean_image: np.ndarray | None = None) -> np.ndarray:
    """Reads and preprocesses one image file; unreadable files raise DataError naming the path,
    and so do the BMPs that training refuses (`refused_bmp`)."""
    try:
        with open(path, "rb") as file:
            if refused_bmp(file.read(70)):
                raise ValueError(
                    "a BMP form that training skips as undecodable (1, 4 or 16 bits per pixel, "
                    "OS/2, compressed, or unusual colour masks): convert it to PNG"
                )
        with warnings.catch_warnings():  # a photo over Pillow's 89 Mpx: no 2-line warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # Image.open warns
            with Image.open(path) as image:
                image.load()
                return preprocess_image(image, config, mean_image)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"Cannot read image {path}: {e}") from e


def checked_mean_image(path: str, resize_size: int) -> np.ndarray:
    """The data build's mean image at `path` (float32 [R, R, 3], R = resize_size, 0-255), read
    whole; DataError naming it as damaged otherwise: of another shape it was a 109-line
    TensorFlow traceback, of NaN a divergence blamed on the learning rate, outside 0..255 a run
    trained on it without a word (hostile pass 26, #8-#11)."""
    redo = "delete it: the next training or evaluation computes it again from the training split"
    try:
        image = np.load(path)
    except (OSError, ValueError) as e:  # (no NumPy array file: no advice to load it unsafely)
        why = "not a whole NumPy array file" if isinstance(e, ValueError) else str(e)
        what = f"{path} (the data build's mean image)"
        raise DataError(f"{what} cannot be read ({why}): {redo}.") from None
    if image.shape != (resize_size, resize_size, 3) or not np.issubdtype(image.dtype, np.number):
        raise DataError(
            f"{path} (the data build's mean image) is damaged: {image.dtype} of shape "
            f"{image.shape}, not [{resize_size}, {resize_size}, 3] numbers; {redo}."
        )
    if not (np.all(np.isfinite(image)) and image.min() >= 0 and image.max() <= 255):
        raise DataError(
            f"{path} (the data build's mean image) is damaged: its values are not all numbers "
            f"in 0..255; {redo}."
        )
    return image.astype(np.float32)
