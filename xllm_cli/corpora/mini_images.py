"""Pictures for the mini corpus: N objects of one colour, drawn with Pillow.

Each picture shows exactly what its sentence says (the colour, the object and
the count), on a plain mid-grey background that keeps white and black objects
visible. Objects are simple pictograms; what matters is that each of the ten
objects, eight colours and five counts is unmistakable to a tiny vision
encoder. Drawing happens at twice the size and is scaled down for smooth edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

SUPERSAMPLE = 2


@dataclass(frozen=True)
class Scene:
    """What a picture shows, plus the random layout that makes pictures differ."""

    obj: str  # one of mini_grammar.OBJECTS
    rgb: tuple[int, int, int]
    count: int
    background: tuple[int, int, int]
    boxes: tuple[tuple[float, float, float], ...]  # per object: centre x, centre y (0-1), size (0-1)


def make_scene(obj: str, rgb: tuple[int, int, int], count: int, rng) -> Scene:
    """A random non-overlapping layout: a grid of ``count`` cells, an object per cell with jitter."""
    grey = rng.randint(105, 165)
    background = tuple(max(0, min(255, grey + rng.randint(-12, 12))) for _ in range(3))
    cols = {1: 1, 2: 2, 3: 3, 4: 2, 5: 3}[count]
    rows = math.ceil(count / cols)
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    rng.shuffle(cells)
    boxes = []
    for r, c in cells[:count]:
        w, h = 1.0 / cols, 1.0 / rows
        size = min(w, h) * rng.uniform(0.62, 0.8)
        cx = (c + 0.5) * w + rng.uniform(-0.08, 0.08) * w
        cy = (r + 0.5) * h + rng.uniform(-0.08, 0.08) * h
        boxes.append((cx, cy, size))
    return Scene(obj, rgb, count, background, tuple(boxes))


def _outline(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (210, 210, 210) if sum(rgb) < 150 else (40, 40, 40)


def _draw_object(d: ImageDraw.ImageDraw, obj: str, cx: float, cy: float, s: float,
                 fill: tuple[int, int, int]) -> None:
    """Draw ``obj`` centred at (cx, cy) in a box of side ``s`` pixels."""
    line = _outline(fill)
    w = max(1, int(s / 14))
    x0, y0, x1, y1 = cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2
    if obj == "灯":  # lamp: shade, stem, base
        d.polygon([(cx - s * 0.18, y0), (cx + s * 0.18, y0), (cx + s * 0.4, cy), (cx - s * 0.4, cy)],
                  fill=fill, outline=line, width=w)
        d.rectangle([cx - s * 0.05, cy, cx + s * 0.05, y1 - s * 0.12], fill=line)
        d.rectangle([cx - s * 0.28, y1 - s * 0.12, cx + s * 0.28, y1], fill=fill, outline=line, width=w)
    elif obj == "门":  # door: tall panel and knob
        d.rectangle([cx - s * 0.3, y0, cx + s * 0.3, y1], fill=fill, outline=line, width=w)
        d.rectangle([cx - s * 0.2, y0 + s * 0.1, cx + s * 0.2, cy - s * 0.05], outline=line, width=w)
        d.ellipse([cx + s * 0.12, cy + s * 0.05, cx + s * 0.22, cy + s * 0.15], fill=line)
    elif obj == "杯子":  # cup: tapered body and a handle
        d.ellipse([cx + s * 0.12, cy - s * 0.22, cx + s * 0.48, cy + s * 0.18], outline=line, width=w * 2)
        d.polygon([(x0 + s * 0.05, y0 + s * 0.1), (cx + s * 0.28, y0 + s * 0.1),
                   (cx + s * 0.18, y1), (x0 + s * 0.15, y1)], fill=fill, outline=line, width=w)
    elif obj == "球":  # ball: disc with a seam
        d.ellipse([x0, y0, x1, y1], fill=fill, outline=line, width=w)
        d.arc([x0 + s * 0.25, y0, x1 + s * 0.25, y1], 120, 240, fill=line, width=w)
    elif obj == "花":  # flower: five petals, centre, stem
        d.line([cx, cy, cx, y1], fill=line, width=w * 2)
        r = s * 0.17
        for k in range(5):
            a = 2 * math.pi * k / 5 - math.pi / 2
            px, py = cx + math.cos(a) * s * 0.22, cy - s * 0.1 + math.sin(a) * s * 0.22
            d.ellipse([px - r, py - r, px + r, py + r], fill=fill, outline=line, width=w)
        d.ellipse([cx - r * 0.6, cy - s * 0.1 - r * 0.6, cx + r * 0.6, cy - s * 0.1 + r * 0.6], fill=line)
    elif obj == "车":  # car: body, cabin, two wheels
        d.polygon([(x0 + s * 0.25, cy - s * 0.05), (x0 + s * 0.35, y0 + s * 0.2), (x1 - s * 0.35, y0 + s * 0.2),
                   (x1 - s * 0.2, cy - s * 0.05)], fill=fill, outline=line, width=w)
        d.rectangle([x0, cy - s * 0.05, x1, cy + s * 0.22], fill=fill, outline=line, width=w)
        for wx in (x0 + s * 0.25, x1 - s * 0.25):
            d.ellipse([wx - s * 0.12, cy + s * 0.12, wx + s * 0.12, cy + s * 0.36], fill=line)
    elif obj == "书":  # book: cover, spine, page lines
        d.rectangle([x0 + s * 0.1, y0, x1 - s * 0.1, y1], fill=fill, outline=line, width=w)
        d.rectangle([x0 + s * 0.1, y0, x0 + s * 0.22, y1], fill=line)
        for k in range(3):
            y = y0 + s * (0.25 + 0.15 * k)
            d.line([x0 + s * 0.35, y, x1 - s * 0.22, y], fill=line, width=w)
    elif obj == "伞":  # umbrella: canopy, shaft, hook
        d.pieslice([x0, y0 + s * 0.05, x1, y1 - s * 0.05], 180, 360, fill=fill, outline=line, width=w)
        d.line([cx, cy, cx, y1 - s * 0.1], fill=line, width=w * 2)
        d.arc([cx - s * 0.16, y1 - s * 0.22, cx, y1 - s * 0.02], 0, 180, fill=line, width=w * 2)
    elif obj == "鱼":  # fish: body, tail, eye
        d.polygon([(x1 - s * 0.3, cy), (x1, y0 + s * 0.2), (x1, y1 - s * 0.2)], fill=fill, outline=line, width=w)
        d.ellipse([x0, cy - s * 0.25, x1 - s * 0.2, cy + s * 0.25], fill=fill, outline=line, width=w)
        d.ellipse([x0 + s * 0.15, cy - s * 0.1, x0 + s * 0.25, cy], fill=line)
    elif obj == "星星":  # five-pointed star
        points = []
        for k in range(10):
            r = s * (0.5 if k % 2 == 0 else 0.21)
            a = math.pi * k / 5 - math.pi / 2
            points.append((cx + math.cos(a) * r, cy + math.sin(a) * r))
        d.polygon(points, fill=fill, outline=line, width=w)
    else:
        raise ValueError(f"no drawing for object '{obj}'")


def render(scene: Scene, size: int = 96, shift: tuple[float, float] = (0.0, 0.0)) -> Image.Image:
    """The scene as an RGB image of ``size`` pixels; ``shift`` moves every object (video frames)."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), scene.background)
    d = ImageDraw.Draw(img)
    for cx, cy, s in scene.boxes:
        _draw_object(d, scene.obj, (cx + shift[0]) * big, (cy + shift[1]) * big, s * big, scene.rgb)
    return img.resize((size, size), Image.LANCZOS)
