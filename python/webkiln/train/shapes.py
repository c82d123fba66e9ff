"""Synthetic captioned shape images for the offline default image model, and the judge.

`render(spec)` draws one shape (circle, square, triangle) of one colour at one of five
positions on a flat background of another colour, `caption(spec)` describes it
("a red circle at the top left on a blue background"), `sample_batch(rng, n)` draws
random specs. `judge(image, prompt)` is the quality check used on generated images:
it estimates the background from the image border, takes the pixels that differ from
it as the object, and compares the object's dominant colour (nearest palette colour to
their median) and its centroid (nearest of the five anchor positions) with the prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 32

# RGB in 0..255. Shapes use SHAPE_COLOURS; backgrounds any palette colour but the shape's.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "purple": (140, 40, 180),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPE_COLOURS = ("red", "green", "blue", "yellow", "white", "purple")
BACKGROUND_COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
# Anchor (x, y) of each position, as a fraction of the image side.
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}

# Every word a caption can contain (the tokenizer's whole-word vocabulary).
WORDS = sorted(
    {"a", "at", "in", "the", "on", "background"}
    | set(PALETTE)
    | set(SHAPES)
    | {w for p in POSITIONS for w in p.split()}
)


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    position: str
    background: str
    radius: float = 6.0  # half the shape's extent, in pixels at IMAGE_SIZE 32
    dx: float = 0.0  # jitter of the centre, pixels
    dy: float = 0.0


def caption(spec: ShapeSpec) -> str:
    at = "in the center" if spec.position == "center" else f"at the {spec.position}"
    return f"a {spec.colour} {spec.shape} {at} on a {spec.background} background"


_CAPTION_RE = re.compile(
    r"^a (?P<colour>\w+) (?P<shape>\w+) (?:at the (?P<pos>top left|top right|bottom left|bottom right)"
    r"|in the (?P<center>center)) on a (?P<background>\w+) background$"
)


def parse_caption(prompt: str) -> ShapeSpec:
    m = _CAPTION_RE.match(prompt.strip().lower())
    if not m:
        raise ValueError(f"not a shapes caption: {prompt!r}")
    spec = ShapeSpec(
        shape=m["shape"], colour=m["colour"], position=m["pos"] or m["center"], background=m["background"]
    )
    if spec.shape not in SHAPES or spec.colour not in PALETTE or spec.background not in PALETTE:
        raise ValueError(f"unknown word in caption: {prompt!r}")
    return spec


def render(spec: ShapeSpec, size: int = IMAGE_SIZE) -> np.ndarray:
    """The image of `spec`: uint8 array (size, size, 3)."""
    scale = size / 32.0
    ax, ay = POSITIONS[spec.position]
    cx, cy = ax * size + spec.dx * scale, ay * size + spec.dy * scale
    r = spec.radius * scale
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if spec.shape == "circle":
        mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
    elif spec.shape == "square":
        mask = (np.abs(xs - cx) <= r * 0.9) & (np.abs(ys - cy) <= r * 0.9)
    elif spec.shape == "triangle":  # apex up, base at the bottom
        top, bottom = cy - r, cy + r
        t = np.clip((ys - top) / (bottom - top), 0.0, 1.0)
        mask = (ys >= top) & (ys <= bottom) & (np.abs(xs - cx) <= t * r)
    else:
        raise ValueError(spec.shape)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = PALETTE[spec.background]
    img[mask] = PALETTE[spec.colour]
    return img


def random_spec(rng: np.random.Generator) -> ShapeSpec:
    colour = SHAPE_COLOURS[rng.integers(len(SHAPE_COLOURS))]
    backgrounds = [c for c in BACKGROUND_COLOURS if c != colour]
    return ShapeSpec(
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=colour,
        position=list(POSITIONS)[rng.integers(len(POSITIONS))],
        background=backgrounds[rng.integers(len(backgrounds))],
        radius=float(rng.uniform(5.0, 7.0)),
        dx=float(rng.uniform(-1.5, 1.5)),
        dy=float(rng.uniform(-1.5, 1.5)),
    )


def sample_batch(rng: np.random.Generator, n: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[str]]:
    """n random images (uint8, (n, size, size, 3)) and their captions, from `rng`."""
    specs = [random_spec(rng) for _ in range(n)]
    return np.stack([render(s, size) for s in specs]), [caption(s) for s in specs]


# ---------------------------------------------------------------------------------- judge


def _nearest_colour(rgb: np.ndarray) -> str:
    names = list(PALETTE)
    ref = np.array([PALETTE[n] for n in names], np.float32)
    return names[int(np.argmin(((ref - rgb[None].astype(np.float32)) ** 2).sum(1)))]


def analyse(image) -> dict:
    """What the judge sees in an image: background, object colour, object position."""
    img = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if img.dtype != np.uint8:  # floats in 0..1
        img = np.clip(np.asarray(img, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    img = img.astype(np.float32)
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = np.median(border, axis=0)
    dist = np.sqrt(((img - background) ** 2).sum(-1))
    mask = dist > 60.0  # clearly not background (palette colours are >= ~110 apart)
    frac = float(mask.mean())
    out = {"background": _nearest_colour(background), "fraction": frac, "colour": None, "position": None}
    # An object is a blob of at least ~2% of the image and not most of it.
    if frac < 0.02 or frac > 0.6:
        return out
    out["colour"] = _nearest_colour(np.median(img[mask], axis=0))
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    out["centroid"] = (float(cx), float(cy))
    out["position"] = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)
    return out


def judge(image, prompt: str) -> dict:
    """{colour_ok, position_ok, background_ok, seen}: does `image` show what `prompt` asks?"""
    spec = parse_caption(prompt)
    seen = analyse(image)
    return {
        "colour_ok": seen["colour"] == spec.colour,
        "position_ok": seen["position"] == spec.position,
        "background_ok": seen["background"] == spec.background,
        "seen": seen,
    }


# The fixed prompts the quality report samples: every shape colour, shape and position
# appears, on varied backgrounds (a deterministic cycle, not random).
def eval_prompts(n: int = 20) -> list[str]:
    positions = list(POSITIONS)
    prompts = []
    for i in range(n):
        colour = SHAPE_COLOURS[i % len(SHAPE_COLOURS)]
        backgrounds = [c for c in BACKGROUND_COLOURS if c != colour]
        spec = ShapeSpec(
            shape=SHAPES[(i + i // 6) % len(SHAPES)],
            colour=colour,
            position=positions[i % len(positions)],
            background=backgrounds[(i * 3) % len(backgrounds)],
        )
        prompts.append(caption(spec))
    return prompts
