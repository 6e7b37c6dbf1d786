"""The figure of `search_efficiency.py`: median normalized hypervolume and best-accuracy
shortfall against compute, a line per strategy (its sampler a colour, its early stopping a
dash pattern), the interquartile range shaded. Plain SVG, so RESULTS.md shows it anywhere."""

from __future__ import annotations

import numpy as np

GRID_POINTS = 121  # compute fractions the anytime curves are read at (0 .. MAX_FRACTION)
MAX_FRACTION = 1.5


DASHES = {"": "", "ASHA": "5,3", "Hyperband": "2,2", "MO-ASHA": "8,3,2,3", "curve": "1,3"}


def _style(name: str) -> tuple[str, str]:
    """A strategy's sampler and its early stopping's name."""
    sampler, _, kind = name.partition(" + ")
    return sampler, kind


def svg(results: dict) -> str:
    """Two panels: median normalized hypervolume and median best-accuracy shortfall
    against compute, each strategy a line (its early stopping a dash pattern), its IQR shaded."""
    width, pad = 980, 50
    rows = (len(results) + 4) // 5
    height = 360 + 16 * rows
    colors = {"random": "#1f77b4", "grid": "#7f7f7f", "tpe": "#d62728", "nsga2": "#2ca02c"}
    at = np.linspace(0, MAX_FRACTION, GRID_POINTS)
    panels: list[tuple[str, str, float, float]] = [("normalized hypervolume", "hv", 0.0, 1.0),
              ("best accuracy's shortfall per budget (pp, clipped at 10)", "short", 0.0, 10.0)]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>']
    panel_w = (width - 3 * pad) / 2
    for k, (title, key, lo, hi) in enumerate(panels):
        x0, y0, h = pad + k * (panel_w + pad), 30, 360 - 110
        top = hi

        def sx(v: float, x0: float = x0) -> float:
            return x0 + panel_w * v / MAX_FRACTION

        def sy(v: float, y0: float = y0, top: float = top, h: float = h, lo: float = lo) -> float:
            return y0 + h * (1 - (v - lo) / (top - lo or 1))

        parts.append(f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{h}" fill="none" stroke="#999"/>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y0 - 10}" text-anchor="middle" font-size="13">{title}</text>')
        for t in np.linspace(0, MAX_FRACTION, 7):
            parts.append(f'<text x="{sx(t):.1f}" y="{y0 + h + 15}" text-anchor="middle">{t:.2f}</text>')
        for t in np.linspace(lo, top, 6):
            parts.append(f'<text x="{x0 - 5}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.2f}</text>')
        parts.append(f'<text x="{x0 + panel_w / 2}" y="{y0 + h + 32}" text-anchor="middle">'
                     'compute (x training every network once)</text>')
        for name, r in results.items():
            sampler, kind = _style(name)
            q1, med, q3 = np.minimum(np.percentile(r[key], [25, 50, 75], axis=0), top)
            band = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(at, q3))
            band += " " + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(at[::-1], q1[::-1]))
            parts.append(f'<polygon points="{band}" fill="{colors[sampler]}" opacity="0.05"/>')
            line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(at, med))
            dash = f' stroke-dasharray="{DASHES[kind]}"' if DASHES.get(kind) else ""
            parts.append(f'<polyline points="{line}" fill="none" stroke="{colors[sampler]}" stroke-width="1.6"{dash}/>')
    for i, name in enumerate(results):
        sampler, kind = _style(name)
        x, y = pad + 185 * (i % 5), 360 - 30 + 16 * (i // 5)
        dash = f' stroke-dasharray="{DASHES[kind]}"' if DASHES.get(kind) else ""
        parts.append(f'<line x1="{x}" y1="{y}" x2="{x + 22}" y2="{y}" stroke="{colors[sampler]}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{x + 26}" y="{y + 4}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
