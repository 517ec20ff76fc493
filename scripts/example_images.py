"""Write docs/images/domains.png: two images per domain of the embedded benchmark beside their labels.

Usage: python scripts/example_images.py [--params params.yaml] [--out docs/images/domains.png]
Labels are mapped to train ids and coloured with the Cityscapes palette (black = ignored).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.config import load_config
from pipeline.constants import CITYSCAPES_LUT, SYNTHIA_LUT, colorize
from pipeline.synthetic.samples import render_scene

TILE = (192, 384)  # height, width of each picture in the figure
TITLES = {"gta5": "gta5 (game-like source)", "synthia": "synthia (rendered source)",
          "cityscapes": "cityscapes (camera-like target)"}  # fmt: skip


def tile(array: np.ndarray, nearest: bool = False) -> Image.Image:
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return Image.fromarray(array).resize((TILE[1], TILE[0]), resample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", default="docs/images/domains.png")
    args = parser.parse_args()
    synthetic = load_config(args.params).data.synthetic
    sizes = {"gta5": synthetic.gta5, "synthia": synthetic.synthia, "cityscapes": synthetic.cityscapes}
    title_height, gap = 22, 4
    rows = []
    for domain, size in sizes.items():
        city = synthetic.cityscapes.val_cities[0] if domain == "cityscapes" else ""
        cells = []
        for index in (0, 1):
            sample = render_scene(domain, index, synthetic.seed, size.height, size.width, city=city)
            lut = SYNTHIA_LUT if domain == "synthia" else CITYSCAPES_LUT
            cells += [tile(sample.image), tile(colorize(lut[sample.label]), nearest=True)]
        rows.append((domain, cells))
    width = 4 * TILE[1] + 3 * gap
    figure = Image.new("RGB", (width, len(rows) * (TILE[0] + title_height + gap)), "white")
    draw = ImageDraw.Draw(figure)
    for number, (domain, cells) in enumerate(rows):
        top = number * (TILE[0] + title_height + gap)
        draw.text((4, top + 4), f"{TITLES[domain]}: image | label, image | label", fill="black")
        for column, cell in enumerate(cells):
            figure.paste(cell, (column * (TILE[1] + gap), top + title_height))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
