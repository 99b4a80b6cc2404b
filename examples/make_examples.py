"""Make the bundled example images from EMNIST pool *test* characters, rendered the way users' images look:
dark ink on white paper, larger, off-centre, with a margin; plus a short word and a line (in words/).

    python examples/make_examples.py --data ../shared/data/emnist/gzip

The first test image of each class (fixed seed) is used: no picking of easy ones.
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from emnist_edge.training.data import find_source
from emnist_edge.training.pool import build_pool

HERE = Path(__file__).parent


def paper(glyph: np.ndarray, scale: int, rng, paper_level: float = 235) -> Image.Image:
    """An EMNIST glyph -> dark ink on off-white paper, upscaled with a soft edge."""
    h, w = glyph.shape
    big = Image.fromarray(glyph).resize((w * scale, h * scale), Image.Resampling.BICUBIC)
    big = big.filter(ImageFilter.GaussianBlur(scale / 3))
    ink = np.asarray(big, np.float32) / 255
    return Image.fromarray((paper_level * (1 - ink) + 30 * ink).clip(0, 255).astype(np.uint8))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data")
    args = p.parse_args()
    pool = build_pool(find_source(args.data))
    x, y = pool.subset("test")
    rng = np.random.default_rng(7)
    first = {c: x[np.flatnonzero(y == pool.chars.index(c))[0]] for c in pool.chars}
    for name, ch in [("digit-7", "7"), ("digit-3", "3"), ("letter-A", "A"), ("letter-e", "e"), ("letter-K", "K"),
                     ("letter-t", "t")]:
        glyph = paper(first[ch], 8, rng, 235 + rng.uniform(-10, 10))
        canvas = Image.new("L", (320, 300), int(np.asarray(glyph)[0, 0]))
        canvas.paste(glyph, (int(rng.integers(20, 90)), int(rng.integers(10, 60))))
        canvas.save(HERE / f"{name}.png")
    (HERE / "words").mkdir(exist_ok=True)
    for name, text in [("word-EDGE", "EDGE"), ("line-tab-42", "tab 42")]:
        canvas = Image.new("L", (140 * len(text) + 60, 160), 235)
        xpos = 30
        for c in text:
            if c == " ":
                xpos += 70
                continue
            cols = np.flatnonzero(first[c].max(0) > 60)  # the glyph's ink columns: letters sit a pen-gap apart
            tile = paper(first[c][:, cols[0]:cols[-1] + 1], 4, rng)
            ink = Image.fromarray(np.minimum(np.asarray(canvas.crop((xpos, 20, xpos + tile.width, 20 + tile.height))),
                                             np.asarray(tile)))
            canvas.paste(ink, (xpos, 20))
            xpos += tile.width + 14
        canvas.crop((0, 0, xpos + 30, 160)).save(HERE / "words" / f"{name}.png")
    print("wrote", ", ".join(sorted(str(p.relative_to(HERE)) for p in HERE.rglob("*.png"))))


if __name__ == "__main__":
    main()
