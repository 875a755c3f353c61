"""The pictures of the miniature's harder task ("objects"): a class is a coarse mix of colour
and form, neither of which tells the classes apart alone, drawn over a tinted, cluttered
background with partial occlusion.

Class c (0..NUM_CLASSES-1) is an elongated object (an ellipse) whose
- hue is drawn uniformly from c / NUM_CLASSES +- HUE_SPREAD of the colour wheel: with a spread of
  one class spacing, every hue is shared by two neighbouring classes, so colour alone tells at
  most half of the pictures apart;
- long axis lies horizontal for even classes and vertical for odd ones (two neighbours on the
  colour wheel always differ), up to a random tilt of ANGLE_STD degrees, with an aspect ratio of
  ASPECT_RANGE, so that the rounder, more tilted objects stay ambiguous (the task's ceiling).
Everything else is drawn at random per picture, the same for every class: the object's
saturation, brightness, size and position; a background of a low-saturation tint, a ramp, a
coarse blotch texture and noise; a few small distractor blobs of any hue and form, and in some
pictures a grey occluder over part of the object. Horizontal reflections (the paper's
augmentation) keep every class's form.

Why these cues: in the ~250 steps of a CPU budget a from-scratch AlexNet learns colour-linear
and coarse cues only (an earlier design, 20 classes of shape x fill in random colours, stayed at
chance); colour here is learnt within an epoch (~50%), the orientation more slowly, and the
tilt bounds what it can add (configs/objects.py has the measured curves).

It is a proxy for what separates the paper's ablations on a CPU budget (a net must combine a fast
colour cue with a coarse spatial one, under nuisances, from a few dozen images per class), not
for ImageNet's difficulty: no natural images, no fine shape or texture distinctions.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

VERSION = 6  # bump when the pictures change, so cached archives are regenerated
NUM_CLASSES = 10
HUE_SPREAD = 1.0 / NUM_CLASSES  # half-width of a class's hue interval (one class spacing)
ANGLE_STD = 35.0  # degrees of random tilt of the object's long axis
ASPECT_RANGE = (1.3, 2.8)  # long / short axis of the object


def class_name(class_index: int) -> str:
    """A readable name of class `class_index`: its hue and the lie of its long axis."""
    axis = "horizontal" if class_index % 2 == 0 else "vertical"
    return f"{axis} object of hue {round(360 * class_index / NUM_CLASSES)} deg (objects)"


def _colour(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value)) * 255.0


def _ellipse_mask(size: tuple[int, int], centre, long: float, short: float, angle: float):
    """An ellipse of half-axes `long` (along `angle`, radians) and `short` as a float [H, W] mask
    (antialiased at the edge)."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xx - centre[0], yy - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = (dx * c + dy * s) / long, (-dx * s + dy * c) / short
    distance = np.sqrt(u * u + v * v)
    return np.clip((1.0 - distance) * min(long, short) + 0.5, 0.0, 1.0)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A low-saturation tint, a ramp, a coarse random blotch texture and noise, float [H, W, 3]."""
    base = _colour(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.85))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height)[:, :, None]
    ramp = ramp * rng.uniform(-40, 40, 3)
    coarse = rng.normal(0, 1, size=(max(height // 24, 2), max(width // 24, 2), 3))
    blotches = np.asarray(
        Image.fromarray(((coarse * 0.3 + 0.5).clip(0, 1) * 255).astype(np.uint8)).resize(
            (width, height), Image.BILINEAR
        ),
        np.float32,
    )
    texture = (blotches - 127.5) * rng.uniform(0.1, 0.3)
    noise = rng.normal(0, 10, size=(height, width, 3))
    return base + ramp + texture + noise


def _paste(canvas: np.ndarray, colour, alpha: np.ndarray) -> None:
    alpha = alpha[:, :, None]
    canvas *= 1.0 - alpha
    canvas += alpha * colour


def draw_picture(class_index: int, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One picture of class `class_index` as uint8 [height, width, 3] (see the module doc)."""
    side = min(height, width)
    size = (width, height)
    canvas = _background(rng, height, width)
    for _ in range(int(rng.integers(2, 6))):  # distractors of any hue and form, behind the object
        r = side * rng.uniform(0.04, 0.1)
        at = (rng.uniform(0, width), rng.uniform(0, height))
        colour = _colour(rng.uniform(0, 1), rng.uniform(0.3, 1.0), rng.uniform(0.4, 1.0))
        mask = _ellipse_mask(size, at, r, r / rng.uniform(1.0, 2.5), rng.uniform(0, math.pi))
        _paste(canvas, colour, mask)

    hue = class_index / NUM_CLASSES + rng.uniform(-HUE_SPREAD, HUE_SPREAD)
    colour = _colour(hue, rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    long = side * rng.uniform(0.22, 0.36)
    short = long / rng.uniform(*ASPECT_RANGE)
    angle = math.radians((90.0 if class_index % 2 else 0.0) + rng.normal(0, ANGLE_STD))
    centre = (
        width / 2 + rng.uniform(-0.12, 0.12) * side,
        height / 2 + rng.uniform(-0.12, 0.12) * side,
    )
    shading = 1.0 + rng.normal(0, 0.06, size=(height, width, 1))  # a little surface noise
    alpha = _ellipse_mask(size, centre, long, short, angle)
    _paste(canvas, colour * shading, alpha)

    if rng.uniform() < 0.3:  # a grey occluder over part of the object
        w, h = long * rng.uniform(0.2, 0.4), long * rng.uniform(0.2, 0.4)
        a = rng.uniform(0, 2 * math.pi)
        x, y = centre[0] + math.cos(a) * long * 0.7, centre[1] + math.sin(a) * long * 0.7
        occluder = Image.new("L", size, 0)
        ImageDraw.Draw(occluder).rectangle((x - w, y - h, x + w, y + h), fill=255)
        grey = rng.uniform(60, 200) + rng.normal(0, 15, size=(height, width, 1))
        _paste(canvas, grey, np.asarray(occluder, np.float32) / 255.0)
    return np.clip(canvas, 0, 255).astype(np.uint8)
