"""A procedurally drawn video-to-shop dataset in the MovingFashion layout, for demos, smoke tests and CI.

Every product is a garment-like silhouette (6 shape families) in a colour scheme drawn from a SMALL set (so many
products share colours and colour alone cannot identify them), with a pattern (solid, stripes, dots, checks,
diagonal) and a small logo glyph. Each product gets ``videos_per_product`` training videos and one extra, different
test video (own seed: motion, background, distractors, occluder, lighting); the shop image is the product centred on
white. ``source`` 0 ("hard") products get more clutter, distractors, occlusion and motion than ``source`` 1.

Because train and test share products, a small model can learn them: the test gallery is the test products' images.
Everything is seeded: the same arguments give byte-identical JSON and identical decoded frames.

``difficulty="hard"`` makes every video hard and harder still: the background scrolls on its own and carries
moving blobs, the lighting swings (gain and a colour cast that drift over the clip), two larger occluders cross
the screen, the product is smaller and moves more. A model that learns what a clip looks like rather than what
the product looks like does poorly on the test clips (new clips of the training products).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# A small palette (RGB) and few schemes (body colour, pattern colour): many products share a scheme.
PALETTE = np.array(
    [
        [200, 40, 40],  # red
        [30, 60, 150],  # navy
        [235, 200, 60],  # mustard
        [40, 130, 70],  # green
        [240, 240, 235],  # off-white
        [30, 30, 35],  # black
        [230, 130, 170],  # pink
        [150, 100, 60],  # brown
    ],
    dtype=np.float32,
) / 255.0
SCHEMES: tuple[tuple[int, int], ...] = ((0, 4), (1, 4), (5, 2), (3, 4), (6, 1), (7, 2))
LOGO_COLOURS: tuple[int, ...] = (4, 5, 2, 0)
SHAPES: tuple[str, ...] = ("tshirt", "jacket", "dress", "trousers", "skirt", "bag")
PATTERNS: tuple[str, ...] = ("solid", "hstripes", "vstripes", "dots", "checks", "diagonal")
LOGOS: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "ring")

_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "tshirt": [(0.30, 0.12), (0.42, 0.08), (0.58, 0.08), (0.70, 0.12), (0.92, 0.30), (0.82, 0.42), (0.72, 0.36),
               (0.72, 0.92), (0.28, 0.92), (0.28, 0.36), (0.18, 0.42), (0.08, 0.30)],
    "jacket": [(0.30, 0.08), (0.70, 0.08), (0.90, 0.20), (0.96, 0.80), (0.84, 0.82), (0.76, 0.36), (0.76, 0.94),
               (0.24, 0.94), (0.24, 0.36), (0.16, 0.82), (0.04, 0.80), (0.10, 0.20)],
    "dress": [(0.38, 0.06), (0.62, 0.06), (0.66, 0.36), (0.88, 0.94), (0.12, 0.94), (0.34, 0.36)],
    "trousers": [(0.24, 0.06), (0.76, 0.06), (0.82, 0.94), (0.58, 0.94), (0.50, 0.40), (0.42, 0.94), (0.18, 0.94)],
    "skirt": [(0.32, 0.18), (0.68, 0.18), (0.90, 0.86), (0.10, 0.86)],
    "bag": [(0.16, 0.38), (0.84, 0.38), (0.84, 0.90), (0.16, 0.90)],
}  # fmt: skip
# Where the logo sits on each shape (unit coordinates).
_LOGO_ANCHORS: dict[str, tuple[float, float]] = {
    "tshirt": (0.5, 0.40), "jacket": (0.5, 0.45), "dress": (0.5, 0.60),
    "trousers": (0.5, 0.20), "skirt": (0.5, 0.50), "bag": (0.5, 0.64),
}  # fmt: skip

SPRITE = 128  # sprite canvas side in pixels


@dataclass(frozen=True)
class ProductSpec:
    """The identity of one synthetic product."""

    shape: str
    scheme: int
    pattern: str
    frequency: int
    logo: str
    logo_colour: int
    logo_dx: float
    source: int


@dataclass
class Sprite:
    rgb: np.ndarray  # (P, P, 3) float32 in [0, 1]
    alpha: np.ndarray  # (P, P) bool


# ---------------------------------------------------------------------------------------------------------- products
def _product_specs(num_products: int, hard_fraction: float, rng: np.random.Generator) -> list[ProductSpec]:
    """Distinct (shape, scheme, pattern, logo) combinations; frequency and logo offset add variety."""
    combos = len(SHAPES) * len(SCHEMES) * len(PATTERNS) * len(LOGOS)
    if num_products > combos:
        raise ValueError(f"num_products={num_products}: at most {combos} distinct synthetic products")
    specs = []
    for code in rng.permutation(combos)[:num_products].tolist():
        code, shape = divmod(code, len(SHAPES))
        code, scheme = divmod(code, len(SCHEMES))
        logo, pattern = divmod(code, len(PATTERNS))
        body, accent = SCHEMES[scheme]
        logo_colours = [c for c in LOGO_COLOURS if c not in (body, accent)]
        specs.append(
            ProductSpec(
                shape=SHAPES[shape],
                scheme=scheme,
                pattern=PATTERNS[pattern],
                frequency=int(rng.integers(3, 6)),
                logo=LOGOS[logo],
                logo_colour=logo_colours[int(rng.integers(len(logo_colours)))],
                logo_dx=float(rng.choice([-0.1, 0.0, 0.1])),
                source=int(rng.random() >= hard_fraction),
            )
        )
    return specs


def _pattern_mask(pattern: str, frequency: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    f = float(frequency)
    if pattern == "solid":
        return np.zeros_like(u, dtype=bool)
    if pattern == "hstripes":
        return (v * f * 1.5) % 1.0 < 0.5
    if pattern == "vstripes":
        return (u * f * 1.5) % 1.0 < 0.5
    if pattern == "diagonal":
        return ((u + v) * f) % 1.0 < 0.5
    if pattern == "dots":
        return ((u * f * 1.5) % 1.0 - 0.5) ** 2 + ((v * f * 1.5) % 1.0 - 0.5) ** 2 < 0.07
    if pattern == "checks":
        return (np.floor(u * f * 1.2) + np.floor(v * f * 1.2)) % 2 == 1
    raise AssertionError(f"unknown pattern {pattern}")


def _glyph(draw: ImageDraw.ImageDraw, logo: str, cx: float, cy: float, r: float) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if logo == "circle":
        draw.ellipse(box, fill=255)
    elif logo == "square":
        draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=255)
    elif logo == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=255)
    elif logo == "cross":
        w = 0.35 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=255)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=255)
    elif logo == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=255)
    elif logo == "ring":
        draw.ellipse(box, outline=255, width=max(2, int(0.4 * r)))
    else:
        raise AssertionError(f"unknown logo {logo}")


def render_product(spec: ProductSpec, size: int = SPRITE) -> Sprite:
    """Draw a product on a transparent ``size`` x ``size`` canvas."""
    mask_img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask_img)
    draw.polygon([(x * size, y * size) for x, y in _POLYGONS[spec.shape]], fill=255)
    if spec.shape == "bag":  # handle
        draw.ellipse((0.32 * size, 0.12 * size, 0.68 * size, 0.60 * size), outline=255, width=max(2, size // 16))
    alpha = np.asarray(mask_img) > 127

    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(grid, grid)
    body, accent = SCHEMES[spec.scheme]
    rgb = np.where(_pattern_mask(spec.pattern, spec.frequency, u, v)[..., None], PALETTE[accent], PALETTE[body])

    logo_img = Image.new("L", (size, size), 0)
    ax, ay = _LOGO_ANCHORS[spec.shape]
    _glyph(ImageDraw.Draw(logo_img), spec.logo, (ax + spec.logo_dx) * size, ay * size, 0.09 * size)
    logo = (np.asarray(logo_img) > 127) & alpha
    rgb = np.where(logo[..., None], PALETTE[spec.logo_colour], rgb)

    # Soft top-lit shading and a dark outline make the silhouette readable on any background.
    rgb = rgb * (1.05 - 0.2 * v)[..., None]
    inner = alpha.copy()
    inner[1:] &= alpha[:-1]
    inner[:-1] &= alpha[1:]
    inner[:, 1:] &= alpha[:, :-1]
    inner[:, :-1] &= alpha[:, 1:]
    rgb = np.where((alpha & ~inner)[..., None], rgb * 0.45, rgb)
    return Sprite(rgb=np.clip(rgb, 0.0, 1.0).astype(np.float32), alpha=alpha)


def render_shop_image(sprite: Sprite, size: int) -> np.ndarray:
    """The clean shop image: the product centred on white, uint8 (size, size, 3)."""
    p = sprite.alpha.shape[0]
    canvas = np.ones((p, p, 3), dtype=np.float32)
    canvas = np.where(sprite.alpha[..., None], sprite.rgb, canvas)
    # 10% white margin, then antialiased downscale.
    padded = np.ones((int(p * 1.2), int(p * 1.2), 3), dtype=np.float32)
    off = (padded.shape[0] - p) // 2
    padded[off : off + p, off : off + p] = canvas
    img = Image.fromarray((padded * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(img)


# ------------------------------------------------------------------------------------------------------------ scenes
def _background(world: int, hard: bool, rng: np.random.Generator) -> np.ndarray:
    """A cluttered world canvas (world, world, 3) float32: gradient, random blocks and blobs, texture noise."""
    base = rng.uniform(0.35, 0.85, size=3).astype(np.float32)
    ramp = np.linspace(-0.15, 0.15, world, dtype=np.float32)
    column = np.clip(base + ramp[:, None] * rng.uniform(-1, 1, size=3).astype(np.float32), 0, 1)  # (world, 3)
    canvas = np.repeat(column[:, None], world, axis=1)
    img = Image.fromarray((canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(10, 18) if hard else rng.integers(3, 7))):
        x0, y0 = rng.uniform(0, world, size=2)
        w, h = rng.uniform(0.05, 0.3 if hard else 0.2, size=2) * world
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = (x0, y0, x0 + w, y0 + h)
        draw.ellipse(box, fill=colour) if rng.random() < 0.5 else draw.rectangle(box, fill=colour)
    canvas = np.asarray(img, dtype=np.float32) / 255.0
    canvas += rng.normal(0, 0.05 if hard else 0.02, size=(world, world, 1)).astype(np.float32)
    return canvas


def _paste(canvas: np.ndarray, sprite: Sprite, cx: float, cy: float, side: int) -> None:
    """Paste a sprite scaled to ``side`` pixels centred at (cx, cy) into ``canvas`` (in place, clipped)."""
    idx = (np.arange(side) * sprite.alpha.shape[0] // side).astype(np.int64)
    rgb, alpha = sprite.rgb[idx][:, idx], sprite.alpha[idx][:, idx]
    x0, y0 = int(cx - side / 2), int(cy - side / 2)
    h, w = canvas.shape[:2]
    ys, xs = slice(max(y0, 0), min(y0 + side, h)), slice(max(x0, 0), min(x0 + side, w))
    sy, sx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
    if ys.stop <= ys.start or xs.stop <= xs.start:
        return
    canvas[ys, xs] = np.where(alpha[sy, sx][..., None], rgb[sy, sx], canvas[ys, xs])


def render_video(
    sprite: Sprite,
    distractors: list[Sprite],
    hard: bool,
    num_frames: int,
    size: int,
    rng: np.random.Generator,
    extreme: bool = False,
) -> np.ndarray:
    """Frames (num_frames, size, size, 3) uint8 of the product moving through a cluttered scene.

    Rendered at 2x and box-downsampled. World -> screen is a moving, zooming camera; the product also drifts,
    scales and rotates in the world; an occluder crosses the screen; global lighting and tint change over time.
    ``extreme`` (``difficulty="hard"``) adds a background that scrolls on its own with moving blobs, stronger
    lighting changes, a second occluder and a smaller, faster product.
    """
    res = 2 * size  # supersampled render size
    world = 3 * res
    canvas = _background(world, hard, rng)
    for other in distractors:  # static in the world, so the camera motion moves them too
        side = int(res * rng.uniform(0.3, 0.5))
        _paste(canvas, other, *rng.uniform(0.2 * world, 0.8 * world, size=2), side)

    motion = (2.5 if extreme else 2.0) if hard else 1.0
    t = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)
    centre = world / 2 + rng.uniform(-0.1, 0.1, size=2) * res
    drift = rng.uniform(-0.25, 0.25, size=2) * res * motion
    wobble, phase = rng.uniform(0.02, 0.06) * res * motion, rng.uniform(0, 2 * math.pi)
    cam_pan = rng.uniform(-0.2, 0.2, size=2) * res * motion
    zoom = np.linspace(*rng.uniform(0.8, 1.25, size=2), num_frames)  # camera zoom in/out
    obj_scale = res * rng.uniform(*((0.45, 0.65) if extreme else (0.55, 0.75)))
    obj_scale = obj_scale * (1 + 0.1 * motion * np.sin(2 * math.pi * t + phase))
    angle = rng.uniform(-0.15, 0.15) * motion * np.sin(2 * math.pi * t * rng.uniform(0.5, 1.5))
    gain = 1 + rng.uniform(0.1, 0.3 if hard else 0.15) * np.sin(2 * math.pi * t + rng.uniform(0, 2 * math.pi))
    tint = rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
    # Occluder: an ellipse (a hand, a bag strap) crossing the screen; larger for hard videos.
    occ_colour = rng.uniform(0.2, 0.9, size=3).astype(np.float32)
    occ_radius = res * (rng.uniform(0.12, 0.2) if hard else rng.uniform(0.06, 0.12))
    occ_start, occ_end = rng.uniform(-0.2, 1.2, size=(2, 2)) * res
    scene = _extreme_scene(num_frames, res, rng) if extreme else None

    p = sprite.alpha.shape[0]
    grid = np.arange(res, dtype=np.float32) - res / 2 + 0.5
    sx, sy = np.meshgrid(grid, grid)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    for i in range(num_frames):
        # Python floats keep the per-pixel math in float32 (numpy 2 would promote on float64 scalars).
        cam = (centre + cam_pan * t[i]).tolist()
        inv_zoom, scale, ti = 1.0 / float(zoom[i]), float(obj_scale[i]), float(t[i])
        wx, wy = sx * inv_zoom + cam[0], sy * inv_zoom + cam[1]  # screen -> world
        bx, by = (wx, wy) if scene is None else (wx + scene["scroll"][i, 0], wy + scene["scroll"][i, 1])
        frame = canvas[np.clip(by, 0, world - 1).astype(np.int64), np.clip(bx, 0, world - 1).astype(np.int64)]
        if scene is not None:  # blobs moving across the background, behind the product
            for colour, radius, start, end in scene["blobs"]:
                c = (start + (end - start) * ti - res / 2).tolist()
                frame = np.where((((sx - c[0]) ** 2 + (sy - c[1]) ** 2) < radius**2)[..., None], colour, frame)
        obj = (centre + drift * ti + wobble * math.sin(2 * math.pi * ti * 2 + phase)).tolist()
        cos, sin = math.cos(angle[i]), math.sin(angle[i])
        dx, dy = wx - obj[0], wy - obj[1]
        px = ((cos * dx + sin * dy) / scale + 0.5) * p  # world -> sprite pixels
        py = ((-sin * dx + cos * dy) / scale + 0.5) * p
        inside = (px >= 0) & (px < p) & (py >= 0) & (py < p)
        pxi, pyi = np.clip(px, 0, p - 1).astype(np.int64), np.clip(py, 0, p - 1).astype(np.int64)
        on = inside & sprite.alpha[pyi, pxi]
        frame = np.where(on[..., None], sprite.rgb[pyi, pxi], frame)
        occ = (occ_start + (occ_end - occ_start) * ti - res / 2).tolist()
        occluded = ((sx - occ[0]) / 1.6) ** 2 + (sy - occ[1]) ** 2 < occ_radius**2
        frame = np.where(occluded[..., None], occ_colour, frame)
        if scene is not None:
            c = (scene["occ2"][2] + (scene["occ2"][3] - scene["occ2"][2]) * ti - res / 2).tolist()
            covered = (sx - c[0]) ** 2 + ((sy - c[1]) / 1.8) ** 2 < scene["occ2"][1] ** 2
            frame = np.where(covered[..., None], scene["occ2"][0], frame)
            frame = frame * scene["gain"][i] + scene["cast"][i]
        frame = frame * float(gain[i]) + tint
        frame = (frame[0::2, 0::2] + frame[1::2, 0::2] + frame[0::2, 1::2] + frame[1::2, 1::2]) * 0.25
        frames[i] = np.clip(frame * 255 + 0.5, 0, 255).astype(np.uint8)
    return frames


def _extreme_scene(num_frames: int, res: int, rng: np.random.Generator) -> dict:
    """The extra, seeded randomness of ``difficulty="hard"`` videos (see `render_video`)."""
    t = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)[:, None]
    blobs = [
        (rng.uniform(0, 1, size=3).astype(np.float32), float(res * rng.uniform(0.08, 0.2)),
         rng.uniform(-0.3, 1.3, size=2) * res, rng.uniform(-0.3, 1.3, size=2) * res)
        for _ in range(int(rng.integers(3, 6)))
    ]  # fmt: skip
    occ2 = (rng.uniform(0.1, 0.9, size=3).astype(np.float32), float(res * rng.uniform(0.12, 0.2)),
            rng.uniform(-0.2, 1.2, size=2) * res, rng.uniform(-0.2, 1.2, size=2) * res)  # fmt: skip
    flicker = rng.uniform(0.0, 0.12, size=(num_frames, 1)).astype(np.float32)
    swing = rng.uniform(0.25, 0.45) * np.sin(2 * np.pi * (t * rng.uniform(0.5, 1.5) + rng.uniform(0, 1)))
    cast_a, cast_b = rng.uniform(-0.15, 0.15, size=(2, 3)).astype(np.float32)
    return {
        "scroll": (rng.uniform(-0.6, 0.6, size=2) * res * t).astype(np.float32),  # background's own motion
        "blobs": blobs,
        "occ2": occ2,
        "gain": (1.0 + swing - flicker).astype(np.float32).reshape(-1).tolist(),
        "cast": (cast_a + (cast_b - cast_a) * t).astype(np.float32),  # (num_frames, 3) colour cast drifting
    }


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) RGB -> the (H * 3 / 2, W) planar yuv420p layout, BT.601 limited range (what decoders assume
    for an untagged stream). Done in numpy so the encoded pixels depend on this code, not on the swscale build."""
    rgb = frame.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16.0 + 0.256788 * r + 0.504129 * g + 0.097906 * b
    cb = 128.0 - 0.148223 * r - 0.290993 * g + 0.439216 * b
    cr = 128.0 + 0.439216 * r - 0.367788 * g - 0.071427 * b
    height, width = y.shape

    def half(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)).reshape(height // 4, width)

    planes = np.concatenate([y, half(cb), half(cr)], axis=0)
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def write_mp4(path: str | os.PathLike[str], frames: np.ndarray, fps: int = 10, crf: int = 18) -> None:
    """Encode uint8 (N, H, W, 3) frames as H.264/yuv420p with PyAV; byte-identical output for identical input."""
    import av

    height, width = frames.shape[1:3]
    if height % 4 or width % 2:
        raise ValueError(f"write_mp4 needs a width divisible by 2 and a height by 4, got {width}x{height}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # x264's SIMD paths made ~1 in 3 encodes of the same frames differ (measured, even single-threaded);
        # asm=0 makes the bytes reproducible (and CPU-independent) for a few ms per tiny video.
        options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "g": "8", "x264-params": "asm=0"}
        stream.options = options
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(array), format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ----------------------------------------------------------------------------------------------------------- writer
def _video_name(seed: int, product_id: str, k: int) -> str:
    return hashlib.md5(f"rice-synthetic:{seed}:{product_id}:{k}".encode()).hexdigest() + ".mp4"


def write_synthetic_dataset(
    out: str | os.PathLike[str],
    num_products: int = 96,
    videos_per_product: int = 2,
    num_test_products: int | None = None,
    frames: int = 16,
    size: int = 64,
    fps: int = 8,
    seed: int = 0,
    image_size: int | None = None,
    hard_fraction: float = 0.3,
    difficulty: str = "normal",
) -> Path:
    """Write a synthetic dataset in the MovingFashion layout under ``out`` and return ``out``.

    Args:
        out: the dataset root (created; existing files with the same names are overwritten).
        num_products: products (each with a distinct shape/scheme/pattern/logo combination).
        videos_per_product: training videos per product (train.json).
        num_test_products: the first this-many products also get one extra, different video in test.json
            (``None`` = all). The test gallery is their shop images.
        frames: frames per video.
        size: video frame side in pixels (a multiple of 4).
        fps: frame rate written into the mp4.
        seed: everything derives from it.
        image_size: shop image side; ``None`` = 2 * size.
        hard_fraction: share of products with ``source`` 0 (hard).
        difficulty: "normal", or "hard": every product hard, moving backgrounds, lighting swings, two occluders
            (``hard_fraction`` is then 1).
    """
    if difficulty not in ("normal", "hard"):
        raise ValueError(f"difficulty {difficulty!r} is unknown; choose 'normal' or 'hard'")
    extreme = difficulty == "hard"
    hard_fraction = 1.0 if extreme else hard_fraction
    if num_products < 1 or videos_per_product < 1 or frames < 1:
        raise ValueError("num_products, videos_per_product and frames must all be >= 1")
    if size < 16 or size % 4:
        raise ValueError(f"size={size} must be a multiple of 4, >= 16")
    num_test = num_products if num_test_products is None else num_test_products
    if not 0 <= num_test <= num_products:
        raise ValueError(f"num_test_products={num_test_products} must lie in [0, num_products={num_products}]")
    root = Path(out)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "imgs").mkdir(parents=True, exist_ok=True)

    specs = _product_specs(num_products, hard_fraction, np.random.default_rng([seed, 0]))
    sprites = [render_product(spec) for spec in specs]
    product_ids = [f"{100000 + i}" for i in range(num_products)]
    splits: dict[str, dict[str, dict[str, object]]] = {"train": {}, "test": {}}
    for i, (product_id, spec, sprite) in enumerate(zip(product_ids, specs, sprites)):
        img_path = f"imgs/{product_id}_in_pp.jpg"
        Image.fromarray(render_shop_image(sprite, image_size or 2 * size)).save(root / img_path, quality=92)
        num_videos = videos_per_product + (1 if i < num_test else 0)
        paths = []
        for k in range(num_videos):
            rng = np.random.default_rng([seed, 1, i, k])
            others = [j for j in rng.permutation(num_products).tolist() if j != i]
            count = int(rng.integers(2, 4)) if spec.source == 0 else int(rng.integers(0, 2))
            video = render_video(
                sprite, [sprites[j] for j in others[:count]], spec.source == 0, frames, size, rng, extreme
            )
            rel = f"videos/{_video_name(seed, product_id, k)}"
            write_mp4(root / rel, video, fps=fps)
            paths.append(rel)
        record = {"img_path": img_path, "source": spec.source}
        splits["train"][product_id] = {**record, "video_paths": paths[:videos_per_product]}
        if i < num_test:
            splits["test"][product_id] = {**record, "video_paths": paths[videos_per_product:]}
    for split, content in splits.items():
        (root / f"{split}.json").write_text(json.dumps(content, indent=1) + "\n")
    meta = {
        "generator": "rice.data.synthetic.write_synthetic_dataset",
        "num_products": num_products, "videos_per_product": videos_per_product, "num_test_products": num_test,
        "frames": frames, "size": size, "fps": fps, "seed": seed, "image_size": image_size or 2 * size,
        "hard_fraction": hard_fraction, "difficulty": difficulty,
    }  # fmt: skip
    (root / "synthetic.json").write_text(json.dumps(meta, indent=1) + "\n")
    return root
