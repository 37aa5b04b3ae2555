"""Product pictures generated as SVG from the product's name and category, so the shop needs no image host."""

from __future__ import annotations

import hashlib
import textwrap
from xml.sax.saxutils import escape

# A calm palette; a category keeps its colour across restarts because the pick hashes its slug.
_PALETTE = (
    "#8c5a3c",
    "#5b8c5a",
    "#3c6e8c",
    "#8c3c5e",
    "#6a4c93",
    "#c9822b",
    "#2b8c83",
    "#93704c",
    "#4c5d93",
    "#a33c3c",
)
_SHAPES = ("circle", "square", "diamond", "triangle", "hexagon")
WIDTH, HEIGHT = 400, 300


def _pick(key: str, choices: tuple[str, ...]) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return choices[digest[0] % len(choices)]


def category_colour(slug: str) -> str:
    return _pick(slug, _PALETTE)


def _shape(kind: str, colour: str) -> str:
    cx, cy = WIDTH // 2, 115
    if kind == "circle":
        return f'<circle cx="{cx}" cy="{cy}" r="60" fill="{colour}" fill-opacity="0.85"/>'
    if kind == "square":
        corner = f'x="{cx - 55}" y="{cy - 55}"'
        return f'<rect {corner} width="110" height="110" rx="14" fill="{colour}" fill-opacity="0.85"/>'
    points = {
        "diamond": [(cx, cy - 65), (cx + 65, cy), (cx, cy + 65), (cx - 65, cy)],
        "triangle": [(cx, cy - 65), (cx + 70, cy + 55), (cx - 70, cy + 55)],
        "hexagon": [
            (cx - 60, cy),
            (cx - 30, cy - 55),
            (cx + 30, cy - 55),
            (cx + 60, cy),
            (cx + 30, cy + 55),
            (cx - 30, cy + 55),
        ],
    }[kind]
    path = " ".join(f"{x},{y}" for x, y in points)
    return f'<polygon points="{path}" fill="{colour}" fill-opacity="0.85"/>'


def product_svg(name: str, category_slug: str, category_name: str) -> str:
    """An SVG card: category colour as background tint, a shape picked from the name, the name wrapped."""
    colour = category_colour(category_slug)
    lines = textwrap.wrap(name, width=26)[:2] or [""]
    text = "".join(
        f'<text x="{WIDTH // 2}" y="{222 + 26 * i}" text-anchor="middle" font-size="20" font-weight="600" '
        f'fill="#222">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    label = escape(f"{name} ({category_name})", {'"': "&quot;"})
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="{colour}" fill-opacity="0.15"/>'
        f"{_shape(_pick(name, _SHAPES), colour)}"
        f'<g font-family="system-ui, -apple-system, Segoe UI, sans-serif">{text}'
        f'<text x="{WIDTH // 2}" y="{HEIGHT - 14}" text-anchor="middle" font-size="13" fill="{colour}">'
        f"{escape(category_name.upper())}</text></g></svg>"
    )
