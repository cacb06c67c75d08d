"""A line chart of a numeric property's history as inline SVG coordinates, computed on the server (no script)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIDTH, HEIGHT, PAD = 640, 200, 30


@dataclass(frozen=True)
class Chart:
    points: str  # the polyline's "x,y x,y ..."
    minimum: float
    maximum: float
    first: str
    last: str
    count: int
    width: int = WIDTH
    height: int = HEIGHT
    pad: int = PAD


def line_chart(points: list[dict[str, Any]]) -> Chart | None:
    """`points` as the history route gives them ({"timestamp", "value"}, oldest first); None without two numbers."""
    numeric = [(p["timestamp"], float(p["value"])) for p in points
               if isinstance(p.get("value"), (int, float)) and not isinstance(p.get("value"), bool)]
    if len(numeric) < 2:
        return None
    values = [value for _, value in numeric]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (WIDTH - 2 * PAD) / (len(numeric) - 1)
    coords = " ".join(
        f"{PAD + i * step:.1f},{HEIGHT - PAD - (value - low) / span * (HEIGHT - 2 * PAD):.1f}"
        for i, (_, value) in enumerate(numeric)
    )
    return Chart(coords, low, high, numeric[0][0], numeric[-1][0], len(numeric))
