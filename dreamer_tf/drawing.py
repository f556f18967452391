"""Small figures drawn with Pillow and NumPy (matplotlib is not a dependency), as uint8 RGB arrays.

image = plot_lines([("reward", {"true": rewards, "model": predicted})], marker=5)   # [H, W, 3]
"""

from __future__ import annotations

from typing import Any

import numpy as np


def plot_lines(
    panels: list[tuple[str, dict[str, Any]]], marker: int | None = None, size: tuple[int, int] = (360, 110)
) -> np.ndarray:
    """Line plots stacked vertically as one uint8 RGB image ``[H, W, 3]``, drawn with Pillow.

    Each panel is ``(title, {label: values over time})``; ``marker`` draws a vertical line before
    that time step (e.g. where open-loop imagination starts). Matplotlib is not needed.
    """
    from PIL import Image, ImageDraw

    colors = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    width, height = size
    left, right, top, bottom = 44, 8, 16, 6
    image = Image.new("RGB", (width, height * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    for row, (title, series) in enumerate(panels):
        y0 = row * height
        values = [np.nan_to_num(np.asarray(v, np.float64).reshape(-1)) for v in series.values()]
        low = min(float(v.min()) for v in values)
        high = max(float(v.max()) for v in values)
        if high - low < 1e-6:
            low, high = low - 0.5, high + 0.5
        length = max(len(v) for v in values)
        span_x, span_y = (width - left - right) / max(length - 1, 1), (height - top - bottom) / (high - low)
        draw.rectangle([left, y0 + top, width - right, y0 + height - bottom], outline=(160, 160, 160))
        draw.text((left, y0 + 2), title, fill="black")
        draw.text((2, y0 + top), f"{high:.3g}", fill="black")
        draw.text((2, y0 + height - bottom - 10), f"{low:.3g}", fill="black")
        if marker is not None and 0 < marker < length:
            x = left + span_x * (marker - 0.5)
            draw.line([(x, y0 + top), (x, y0 + height - bottom)], fill=(128, 128, 128))
        legend_x = width - right - 4
        for index, (label, value) in enumerate(zip(series, values)):
            color = colors[index % len(colors)]
            points = [(left + span_x * t, y0 + top + span_y * (high - v)) for t, v in enumerate(value)]
            draw.line(points if len(points) > 1 else points * 2, fill=color, width=2)
            legend_x -= 8 * len(label) + 8
            draw.text((legend_x, y0 + 2), label, fill=color)
    return np.asarray(image)
