"""Qualitative panels: image | ground truth | prediction(s), one row per image, Cityscapes colours.

Layout (pixels; W×H is the first image's size, every cell is resized to it):

    header   column titles, `header_height(font_size)` tall
    rows     n × H, `GAP` between rows and between columns
    legend   optional: class swatches and names, wrapped to the panel width

so the panel is `columns·W + (columns − 1)·GAP` wide. Labels are resized with nearest neighbour (a
label never gets interpolated ids), images bilinearly; ignore (255) is black, as `colorize` draws it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.atomic import atomic_path
from pipeline.constants import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_PALETTE, colorize

GAP = 4  # pixels between cells, and around the header text and legend entries
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
IGNORE_COLOUR = (0, 0, 0)  # what `colorize` paints ignore pixels


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def header_height(font_size: int) -> int:
    """Height of the column-title band above the first row."""
    return font_size + 2 * GAP


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    return image


def _label_cell(label: np.ndarray, size: tuple[int, int], what: str) -> Image.Image:
    """Colour a train-id map [h, w] and resize it (nearest) to `size` = (W, H)."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{what}: expected a train-id map [H, W], got shape {label.shape}")
    bad = (label != IGNORE_INDEX) & ((label < 0) | (label >= NUM_CLASSES))
    if bad.any():
        raise ValueError(
            f"{what}: ids {np.unique(label[bad])[:10].tolist()} are neither a train id "
            f"[0, {NUM_CLASSES}) nor ignore ({IGNORE_INDEX})"
        )
    cell = Image.fromarray(label.astype(np.uint8))
    if cell.size != size:
        cell = cell.resize(size, Image.Resampling.NEAREST)
    return Image.fromarray(colorize(np.asarray(cell)))


def _legend_entries(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, swatch: int
) -> list[tuple[tuple[int, int, int], str, int]]:
    """(colour, name, entry width in pixels) of every class and of ignore; `swatch` is the square's side."""
    entries = [*zip(TRAIN_ID_PALETTE, CLASS_NAMES, strict=True), (IGNORE_COLOUR, "ignore")]
    return [
        (colour, name, swatch + GAP + int(np.ceil(font.getlength(name))) + 3 * GAP)
        for colour, name in entries
    ]


def _legend_lines(entries: list, width: int) -> list[list]:
    lines: list[list] = [[]]
    used = 0
    for entry in entries:
        if lines[-1] and used + entry[2] > width:
            lines.append([])
            used = 0
        lines[-1].append(entry)
        used += entry[2]
    return lines


def qualitative_panel(
    images: Sequence[np.ndarray],
    ground_truths: Sequence[np.ndarray] | None,
    predictions: Mapping[str, Sequence[np.ndarray]] | Sequence[np.ndarray],
    *,
    row_titles: Sequence[str] | None = None,
    image_title: str = "image",
    ground_truth_title: str = "ground truth",
    legend: bool = True,
    font_size: int = 14,
) -> Image.Image:
    """A grid with one row per image: image | ground truth | one column per model's prediction.

    images: uint8 [H, W, 3] each; ground_truths: train ids [h, w] each (255 = ignore), or None for no
    ground-truth column (images without labels); predictions:
    model name → train-id maps (a column titled by the name each), or one list (titled "prediction").
    `row_titles` (e.g. image ids) are drawn over the top-left corner of each row's image.
    Returns an RGB image; see the module docstring for its size.
    """
    if isinstance(predictions, Mapping):
        columns = {str(name): list(maps) for name, maps in predictions.items()}
    else:
        columns = {"prediction": list(predictions)}
    rows = len(images)
    if rows == 0:
        raise ValueError("qualitative_panel: no images")
    truth_column = {} if ground_truths is None else {ground_truth_title: ground_truths}
    for title, maps in {**truth_column, **columns}.items():
        if len(maps) != rows:
            raise ValueError(f"qualitative_panel: {rows} images but {len(maps)} maps in column {title!r}")
    if row_titles is not None and len(row_titles) != rows:
        raise ValueError(f"qualitative_panel: {rows} images but {len(row_titles)} row titles")

    first = _check_image(images[0], 0)
    height, width = first.shape[:2]
    titles = [image_title, *truth_column, *columns]
    font = _font(font_size)
    panel_width = len(titles) * width + (len(titles) - 1) * GAP
    top = header_height(font_size)
    grid_height = rows * height + (rows - 1) * GAP

    legend_lines = _legend_lines(_legend_entries(font, font_size), panel_width) if legend else []
    line_height = font_size + GAP
    legend_height = GAP + len(legend_lines) * line_height if legend else 0

    panel = Image.new("RGB", (panel_width, top + grid_height + legend_height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for column, title in enumerate(titles):
        x = column * (width + GAP)
        text_width = font.getlength(title)
        draw.text((x + max(0.0, (width - text_width) / 2), GAP), title, fill=TEXT_COLOUR, font=font)

    for row in range(rows):
        y = top + row * (height + GAP)
        image = Image.fromarray(_check_image(images[row], row))
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        cells = [image]
        if ground_truths is not None:
            cells.append(_label_cell(ground_truths[row], (width, height), f"ground truth {row}"))
        cells += [
            _label_cell(maps[row], (width, height), f"{name} prediction {row}")
            for name, maps in columns.items()
        ]
        for column, cell in enumerate(cells):
            panel.paste(cell, (column * (width + GAP), y))
        if row_titles is not None:
            box = draw.textbbox((GAP, y + GAP), row_titles[row], font=font)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
            draw.text((GAP, y + GAP), row_titles[row], fill=(255, 255, 255), font=font)

    y = top + grid_height + GAP
    for line in legend_lines:
        x = 0
        for colour, name, entry_width in line:
            draw.rectangle((x, y, x + font_size - 1, y + font_size - 1), fill=colour, outline=(128, 128, 128))
            draw.text((x + font_size + GAP, y), name, fill=TEXT_COLOUR, font=font)
            x += entry_width
        y += line_height
    return panel


def save_panel(panel: Image.Image, path: Path | str) -> Path:
    """Write a panel as PNG, atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        panel.save(temporary, format="PNG")
    return path
