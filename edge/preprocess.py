"""Real images -> EMNIST-style 28x28 input (Pillow + numpy only).

EMNIST was made from NIST's binary 128x128 scans (Cohen et al. 2017): Gaussian blur, crop to the ink's bounding box,
centre in a square keeping the aspect ratio, small border, bicubic down to 28x28, rescale to 0..255. Measured on the
pool test set (`emnist-bench preprocess`), EMNIST glyphs fill 24 of 28 pixels on their long side and strokes are about
2.3 px wide. Users' images need more first: EXIF orientation, transparency, either polarity, uneven lighting, specks,
and strokes far thinner or thicker than NIST's pens. Every step is a function here; `emnist-bench preprocess` measures
what each one does on real and rendered images.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from .runtime import EdgeError

MAX_PIXELS = 50_000_000  # larger images are refused (decompression bombs); a 48 MP phone photo still fits
WORK_SIDE = 1024  # images are reduced so their long side is at most this before any analysis
FRAME = 128  # NIST's scan size: glyphs are rendered here, then reduced to 28x28 as EMNIST was
GLYPH_SIDE = 110  # long side of the glyph in the 128 frame: gives EMNIST's 24-of-28 fill after the blur
STROKE_128 = 10.0  # target stroke width in the 128 frame (EMNIST's 2.3 px at 28x28)
BLUR_128 = 1.0  # Gaussian blur (sigma, px) in the 128 frame before the reduction to 28x28


class ImageError(EdgeError):
    exit_code = 4


class NoCharacter(EdgeError):
    exit_code = 5


@dataclass
class Steps:
    """Which optional steps run (all on by default); `emnist-bench preprocess` switches them off one by one."""

    exif: bool = True
    flatten_alpha: bool = True
    auto_polarity: bool = True
    flatten_lighting: bool = True
    drop_specks: bool = True
    normalise_stroke: bool = True
    emnist_fit: bool = True  # False: the notebook's recipe (resize the whole image to 28x28, invert)


@dataclass
class Glyph:
    pixels: np.ndarray  # (28, 28) uint8, model input
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the original image's pixels
    meta: dict = field(default_factory=dict)


def open_image(src) -> Image.Image:
    """Open a path, bytes or file object; decode fully (truncation shows here), refuse bombs. One-line errors."""
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    name = getattr(src, "name", None) or (src if isinstance(src, str) else "image")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
        try:
            img = Image.open(src)
            if img.format == "JPEG":  # let the decoder scale a big photo down (DCT scaling): far less to decode
                img.draft("L", (WORK_SIDE, WORK_SIDE))
            img.load()
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory") from None
        except PermissionError:
            raise ImageError(f"{name}: permission denied") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{name}: image too large (over {MAX_PIXELS:,} pixels)") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageError(f"{name}: damaged or truncated image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    return img


def to_grey(img: Image.Image, steps: Steps) -> np.ndarray:
    """EXIF-upright, transparency flattened, reduced to WORK_SIDE: float32 grey 0..255."""
    if steps.exif and img.getexif().get(0x0112, 1) != 1:  # transpose (a copy) only when EXIF says so
        img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        alpha = np.asarray(img.getchannel("A"), np.float32) / 255
        grey = np.asarray(img.convert("L"), np.float32)
        if steps.flatten_alpha and alpha.min() < 1:
            # Drawn strokes on a transparent canvas: put them on the background that contrasts with them.
            opaque = alpha > 0.5
            ink_level = grey[opaque].mean() if opaque.any() else 0.0
            bg = 255.0 if ink_level < 128 else 0.0
            grey = grey * alpha + bg * (1 - alpha)
        img = Image.fromarray(grey.clip(0, 255).astype(np.uint8))
    else:
        img = img.convert("L")
    if max(img.size) >= 2 * WORK_SIDE:  # integer box reduction first: much cheaper than a resampling resize
        img = img.reduce(max(img.size) // WORK_SIDE)
    if max(img.size) > WORK_SIDE:
        img = ImageOps.contain(img, (WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    return np.asarray(img, np.float32)


def ink_image(grey: np.ndarray, steps: Steps) -> np.ndarray:
    """Ink bright on black: polarity from the border (paper surrounds the writing), lighting flattened."""
    if steps.auto_polarity:
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        if np.median(border) > 127:
            grey = 255 - grey
    else:
        grey = 255 - grey  # assume dark ink on light paper, as most photos and scans are
    if steps.flatten_lighting:
        # Paper brightness varies slowly across a photo; ink is thin. The darkest level (ink is bright here) in
        # each block of a coarse grid estimates the paper; interpolated and subtracted, it flattens shadows.
        h, w = grey.shape
        block = max(8, min(h, w) // 3)
        gh, gw = -(-h // block), -(-w // block)
        padded = np.pad(grey, ((0, gh * block - h), (0, gw * block - w)), mode="edge")
        paper = padded.reshape(gh, block, gw, block).min(axis=(1, 3))
        paper = np.asarray(Image.fromarray(paper.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))
        grey = np.maximum(grey - paper, 0)
    return grey


def otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256, range=(0, 256))
    p = hist.astype(np.float64)
    w0 = np.cumsum(p)
    w1 = w0[-1] - w0
    m = np.cumsum(p * np.arange(256))
    mu0 = m / np.maximum(w0, 1)
    mu1 = (m[-1] - m) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(np.argmax(between) + 0.5)


def ink_mask(ink: np.ndarray) -> np.ndarray:
    """Binary ink (NIST's scans were binary). Empty when there is no real contrast: a blank page."""
    hi = float(np.percentile(ink, 99.9))
    if hi < 40:  # less than ~15% contrast anywhere: nothing written
        return np.zeros(ink.shape, bool)
    t = max(otsu(ink), 0.25 * hi)
    return ink > t


def components(mask: np.ndarray) -> list[dict]:
    """8-connected components by run-length union-find: [{area, box: (x0, y0, x1, y1), runs}] largest first."""
    parent: list[int] = []

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    runs = []  # (row, start, end, id)
    prev: list[tuple[int, int, int]] = []
    for y in range(mask.shape[0]):
        row = mask[y]
        if not row.any():
            prev = []
            continue
        d = np.diff(np.concatenate(([0], row.view(np.int8), [0])))
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        cur = []
        for s, e in zip(starts.tolist(), ends.tolist()):
            rid = len(parent)
            parent.append(rid)
            for ps, pe, pid in prev:  # 8-connected: the previous row's run touches [s - 1, e]
                if ps <= e and pe >= s:
                    ra, rb = find(rid), find(pid)
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
            cur.append((s, e, rid))
            runs.append((y, s, e, rid))
        prev = cur
    comps: dict[int, dict] = {}
    for y, s, e, rid in runs:
        r = find(rid)
        c = comps.setdefault(r, {"area": 0, "box": [s, y, e, y + 1], "runs": []})
        c["area"] += e - s
        b = c["box"]
        b[0], b[1], b[2], b[3] = min(b[0], s), min(b[1], y), max(b[2], e), max(b[3], y + 1)
        c["runs"].append((y, s, e))
    out = sorted(comps.values(), key=lambda c: -c["area"])
    for c in out:
        c["box"] = tuple(c["box"])
    return out


def keep_glyph(comps: list[dict]) -> list[dict]:
    """Drop specks: tiny components, and small ones far from the writing (dots of i and j stay: they are close)."""
    if not comps:
        return []
    big = comps[0]["area"]
    core = [c for c in comps if c["area"] >= 0.15 * big]
    x0 = min(c["box"][0] for c in core)
    y0 = min(c["box"][1] for c in core)
    x1 = max(c["box"][2] for c in core)
    y1 = max(c["box"][3] for c in core)
    reach = 0.5 * max(x1 - x0, y1 - y0)
    kept = list(core)
    for c in comps:
        if c in core or c["area"] < max(4, 0.01 * big):
            continue
        bx0, by0, bx1, by1 = c["box"]
        dx = max(x0 - bx1, bx0 - x1, 0)
        dy = max(y0 - by1, by0 - y1, 0)
        if max(dx, dy) <= reach:
            kept.append(c)
    return kept


def paint(comps: list[dict], shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for c in comps:
        for y, s, e in c["runs"]:
            m[y, s:e] = True
    return m


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary glyph: 2 * area / perimeter (exact for long strokes)."""
    area = mask.sum()
    perim = np.count_nonzero(mask[1:] != mask[:-1]) + np.count_nonzero(mask[:, 1:] != mask[:, :-1])
    perim += mask[0].sum() + mask[-1].sum() + mask[:, 0].sum() + mask[:, -1].sum()
    return float(2 * area / max(perim, 1))


def fit_frame(mask: np.ndarray, side: int) -> np.ndarray:
    """A cropped binary glyph scaled (aspect kept) so its long side is `side`, centred in the 128 frame."""
    h, w = mask.shape
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    glyph = Image.fromarray(mask.astype(np.uint8) * 255).resize((nw, nh), Image.Resampling.BILINEAR)
    frame = Image.new("L", (FRAME, FRAME), 0)
    frame.paste(glyph, ((FRAME - nw) // 2, (FRAME - nh) // 2))
    return np.asarray(frame) >= 128


def render_emnist(mask: np.ndarray, steps: Steps) -> np.ndarray:
    """A binary glyph (cropped to its ink) -> 28x28 uint8 as EMNIST made its images."""
    binary = fit_frame(mask, GLYPH_SIDE)
    if steps.normalise_stroke and binary.any():
        sw = stroke_width(binary)
        grow = 0  # pixels the filter adds to (or, negative, takes from) the glyph's extent
        if sw < 0.7 * STROKE_128:  # thin pen or a large canvas: thicken towards NIST's pens
            size = int(max(3, min(2 * round((STROKE_128 - sw) / 2) + 1, 15)))
            grow, rank = size - 1, ImageFilter.MaxFilter(size)
        elif sw > 1.6 * STROKE_128:  # marker: thin it, never below the target
            size = int(max(3, min(2 * round((sw - STROKE_128) / 4) + 1, 9)))
            grow, rank = -(size - 1), ImageFilter.MinFilter(size)
        if grow:
            # fit smaller (or larger) first, so the glyph still fills EMNIST's 24 of 28 pixels after the filter
            binary = fit_frame(mask, GLYPH_SIDE - grow)
            binary = np.asarray(Image.fromarray(binary.astype(np.uint8) * 255).filter(rank)) >= 128
    frame = Image.fromarray(binary.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(BLUR_128))
    small = np.asarray(frame.resize((28, 28), Image.Resampling.BICUBIC), np.float32)
    top = small.max()
    return (small * (255.0 / top)).clip(0, 255).astype(np.uint8) if top > 0 else small.astype(np.uint8)


def notebook_recipe(grey: np.ndarray) -> np.ndarray:
    """The seed notebook's recipe, kept as the baseline: resize the whole image to 28x28 and invert."""
    img = Image.fromarray(grey.clip(0, 255).astype(np.uint8)).resize((28, 28), Image.Resampling.BILINEAR)
    return 255 - np.asarray(img)


def ink_components(grey: np.ndarray, steps: Steps) -> tuple[list[dict], tuple[int, int]]:
    """Working-size grey image -> its ink components (largest first) and the mask shape; NoCharacter if blank."""
    mask = ink_mask(ink_image(grey, steps))
    comps = components(mask)
    if not comps:
        raise NoCharacter("no character found (blank image)")
    return comps, mask.shape


def prepare(src, steps: Steps | None = None) -> Glyph:
    """One image holding one character -> Glyph (28x28 model input). Raises ImageError / NoCharacter."""
    steps = steps or Steps()
    img = src if isinstance(src, Image.Image) else open_image(src)
    full = img.size
    grey = to_grey(img, steps)
    if not steps.emnist_fit:
        return Glyph(notebook_recipe(grey), (0, 0) + full)
    comps, shape = ink_components(grey, steps)
    kept = keep_glyph(comps) if steps.drop_specks else comps
    return glyph_from_mask(paint(kept, shape), full, steps)


def glyph_from_mask(mask: np.ndarray, full_size: tuple[int, int], steps: Steps) -> Glyph:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    fx, fy = full_size[0] / mask.shape[1], full_size[1] / mask.shape[0]
    box = (int(x0 * fx), int(y0 * fy), int(np.ceil(x1 * fx)), int(np.ceil(y1 * fy)))
    return Glyph(render_emnist(mask[y0:y1, x0:x1], steps), box)


def segment_line(src, steps: Steps | None = None, space_factor: float = 0.6) -> list[Glyph | None]:
    """A word or line -> glyphs left to right, None where a space goes.

    Components whose horizontal extents overlap are one character (the dot of i/j, a broken stroke, the bar of
    a t drawn apart); a gap wider than space_factor x the median character height is a space."""
    steps = steps or Steps()
    img = src if isinstance(src, Image.Image) else open_image(src)
    full = img.size
    comps, shape = ink_components(to_grey(img, steps), steps)
    big = comps[0]["area"]
    comps = [c for c in comps if c["area"] >= max(4, 0.02 * big)] if steps.drop_specks else comps
    comps.sort(key=lambda c: c["box"][0])
    groups: list[list[dict]] = []
    for c in comps:
        if groups:
            gx0 = min(g["box"][0] for g in groups[-1])
            gx1 = max(g["box"][2] for g in groups[-1])
            x0, x1 = c["box"][0], c["box"][2]
            overlap = min(gx1, x1) - max(gx0, x0)
            if overlap > 0.5 * min(x1 - x0, gx1 - gx0) or x1 <= gx1:
                groups[-1].append(c)
                continue
        groups.append([c])
    heights = [max(c["box"][3] for c in g) - min(c["box"][1] for c in g) for g in groups]
    line_h = float(np.median(heights)) if heights else 1.0
    out: list[Glyph | None] = []
    prev_x1 = None
    for g in groups:
        x0 = min(c["box"][0] for c in g)
        if prev_x1 is not None and x0 - prev_x1 > space_factor * line_h:
            out.append(None)
        out.append(glyph_from_mask(paint(g, shape), full, steps))
        prev_x1 = max(c["box"][2] for c in g)
    return out
