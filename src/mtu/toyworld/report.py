"""The demo's report folder: image grids, the router heatmap (the paper's Fig. 5), loss curves and an HTML page.

Everything is drawn with PIL and inline SVG/HTML, so a report needs no plotting library.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from PIL import Image, ImageDraw

from ..tasks.base import task_plugin
from ..upcycling.tasks import available_tasks



def task_colour(task: str) -> str:
    """The task's colour in plots (its `Task.colour`); gray for a name no registered task has."""
    return task_plugin(task).colour if task in available_tasks() else "#333"


def image_rows(rows: list[list[Image.Image | None]], path, scale: int = 3, gap: int = 2) -> Path:
    """Writes a grid, one list of images per row (None leaves a blank cell), each image upscaled `scale` x."""
    side = max(image.size[0] for row in rows for image in row if image is not None) * scale
    columns = max(len(row) for row in rows)
    grid = Image.new("RGB", (columns * (side + gap) - gap, len(rows) * (side + gap) - gap), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            if image is not None:
                grid.paste(image.convert("RGB").resize((side, side), Image.NEAREST), (c * (side + gap), r * (side + gap)))
    grid.save(path)
    return Path(path)


def _heat(deviation: float) -> tuple[int, int, int]:
    """Diverging colour of a deviation in [-1, 1]: blue above uniform, red below, white at uniform."""
    value = min(max(deviation, -1.0), 1.0)
    if value >= 0:
        return (round(255 - 215 * value), round(255 - 165 * value), 255)
    return (255, round(255 + 185 * value), round(255 + 185 * value))


def _spread(weights: dict[str, dict[str, list[float]]]) -> tuple[float, float]:
    """(uniform weight 1/N, largest |weight - 1/N|) over every task, block and expert (the colour scale)."""
    values = [value for layers in weights.values() for row in layers.values() for value in row]
    uniform = 1.0 / len(next(iter(next(iter(weights.values())).values())))
    return uniform, max(max(abs(value - uniform) for value in values), 1e-12)


def heatmap_png(weights: dict[str, dict[str, list[float]]], path, cell: int = 14) -> Path:
    """One panel per task: rows are upcycled blocks (input to output), columns experts; blue = more weight than
    uniform (1/N), red = less, full colour at the largest deviation of any cell (see `heatmap_html`)."""
    tasks = list(weights)
    layers = list(weights[tasks[0]])
    experts = len(weights[tasks[0]][layers[0]])
    uniform, spread = _spread(weights)
    gap = cell
    width = len(tasks) * (experts * cell + gap) - gap
    image = Image.new("RGB", (width, len(layers) * cell + 16), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for t, task in enumerate(tasks):
        left = t * (experts * cell + gap)
        draw.text((left, 2), task, fill=(0, 0, 0))
        for row, layer in enumerate(layers):
            for expert, value in enumerate(weights[task][layer]):
                x, y = left + expert * cell, 16 + row * cell
                draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_heat((value - uniform) / spread))
    image.save(path)
    return Path(path)


def heatmap_html(weights: dict[str, dict[str, list[float]]]) -> str:
    """The heatmap as an HTML table: a row per block, for each task its experts' weights as shaded cells."""
    tasks = list(weights)
    layers = list(weights[tasks[0]])
    experts = len(weights[tasks[0]][layers[0]])
    uniform, spread = _spread(weights)
    head = "".join(f'<th colspan="{experts}">{html.escape(task)}</th>' for task in tasks)
    sub = "".join(f"<th>e{e}</th>" for _ in tasks for e in range(experts))
    body = []
    for layer in layers:
        cells = "".join(f'<td style="background:rgb{_heat((value - uniform) / spread)}">{value:.3f}</td>'
                        for task in tasks for value in weights[task][layer])
        body.append(f"<tr><th class='layer'>{html.escape(layer)}</th>{cells}</tr>")
    legend = (f"<p>Blue: more than the uniform weight {uniform:.3f}; red: less; full colour = "
              f"{spread:.4f} away from uniform (the largest deviation here).</p>")
    return f"{legend}<table class='heat'><tr><th></th>{head}</tr><tr><th>block</th>{sub}</tr>{''.join(body)}</table>"


def loss_svg(history: list[dict], tasks: list[str], width: int = 640, height: int = 240) -> str:
    """Per-task training loss against step (log scale), as inline SVG."""
    series = {task: [(h["step"], h[f"loss/{task}"]) for h in history if f"loss/{task}" in h] for task in tasks}
    points = [p for values in series.values() for p in values if p[1] > 0]
    if not points:
        return "<p>(no loss values logged)</p>"
    steps = [p[0] for p in points]
    logs = [math.log10(p[1]) for p in points]
    low, high = min(logs), max(logs)
    high = high if high > low else low + 1
    first, last = min(steps), max(steps)
    last = last if last > first else first + 1
    pad = 40

    def xy(step, loss):
        x = pad + (width - 2 * pad) * (step - first) / (last - first)
        y = height - pad - (height - 2 * pad) * (math.log10(loss) - low) / (high - low)
        return f"{x:.1f},{y:.1f}"

    lines = []
    for i, (task, values) in enumerate(series.items()):
        coords = " ".join(xy(s, v) for s, v in values if v > 0)
        colour = task_colour(task)
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        lines.append(f'<text x="{width - pad + 4}" y="{pad + 14 * i}" fill="{colour}" font-size="11">'
                     f'{html.escape(task)}</text>')
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#000"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#000"/>'
            f'<text x="{pad}" y="{height - pad + 16}" font-size="11">step {first}</text>'
            f'<text x="{width - pad - 50}" y="{height - pad + 16}" font-size="11">step {last}</text>'
            f'<text x="2" y="{pad}" font-size="11">{10 ** high:.3g}</text>'
            f'<text x="2" y="{height - pad}" font-size="11">{10 ** low:.3g}</text>')
    return f'<svg width="{width + 40}" height="{height}" xmlns="http://www.w3.org/2000/svg">{axes}{"".join(lines)}</svg>'


def recorded_figure(entry: dict | None) -> str:
    """`0.652 [0.59-0.71] n=256`: a recorded figure ({"field", "value", "low", "high", "count"}), its 95% interval
    and its example count; "-" for none."""
    if entry is None:
        return "-"
    value, bounds = (2, 1) if "psnr" in entry["field"] else (3, 2)
    return (f"{entry['value']:.{value}f} [{entry['low']:.{bounds}f}-{entry['high']:.{bounds}f}] "
            f"n={entry['count']}")


def metrics_table_html(rows: list[dict]) -> str:
    """The demo's table; a "shipped model" column where the rows carry the shipped model's recorded figures."""
    shipped = any(row.get("shipped") for row in rows)
    header = ("<tr><th>task</th><th>metric</th><th>MTU (N=4)</th>"
              + ("<th>shipped model (recorded, 95% interval)</th>" if shipped else "")
              + "<th>trivial baseline</th><th>baseline</th><th>beats baseline</th>"
              "<th>other scores (MTU / baseline)</th></tr>")
    body = []
    for row in rows:
        others = "; ".join(f"{k} {v:.3g} / {row['baseline_scores'].get(k, float('nan')):.3g}"
                           for k, v in row["scores"].items() if k != row["metric"])
        verdict = "yes" if row["beats_baseline"] else "<b style='color:#c00'>no</b>"
        recorded = f"<td>{recorded_figure(row.get('shipped'))}</td>" if shipped else ""
        body.append(f"<tr><td>{row['task']}</td><td>{row['metric']}</td><td>{row['value']:.3f}</td>{recorded}"
                    f"<td>{row['baseline_value']:.3f}</td><td>{html.escape(row['baseline'])}</td><td>{verdict}</td>"
                    f"<td>{html.escape(others)}</td></tr>")
    return f"<table class='metrics'>{header}{''.join(body)}</table>"


def guidance_html(guidance: dict, given: str = "chosen before this run") -> str:
    """The guidance pairs tried per task on the validation split, the chosen one in bold; for a task whose pair was
    chosen before (none tried in this run), that pair and `given` (HTML: where it comes from)."""
    parts = []
    for task, value in guidance.items():
        if not value["tried"]:
            chosen = value["chosen"]
            parts.append(f"<p>{html.escape(task)}: guidance text {chosen['guidance_scale']}, image "
                         f"{chosen['image_guidance_scale']}, {given}</p>")
            continue
        metrics = [k for k in value["tried"][0] if k not in ("guidance_scale", "image_guidance_scale")]
        header = "<tr><th>text</th><th>image</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in metrics) + "</tr>"
        body = []
        for row in value["tried"]:
            chosen = all(row[k] == v for k, v in value["chosen"].items())
            cells = [row["guidance_scale"], row["image_guidance_scale"]] + [f"{row[k]:.3f}" for k in metrics]
            body.append("<tr>" + "".join(f"<td>{'<b>' if chosen else ''}{c}{'</b>' if chosen else ''}</td>"
                                         for c in cells) + "</tr>")
        parts.append(f"<p>{html.escape(task)}: guidance chosen on {len(value['tried'])} (text, image) pairs over "
                     f"validation examples (training-split scenes; the held-out ones are only used for the table "
                     f"above)</p><table>{header}{''.join(body)}</table>")
    return "".join(parts)


def write_html(path, title: str, sections: list[tuple[str, str]]) -> Path:
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
             "font-size:12px}table.heat td{width:2.6em;text-align:center}th.layer{text-align:left;"
             "font-weight:normal;font-family:monospace}img{image-rendering:pixelated}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<h2>{html.escape(heading)}</h2>{content}" for heading, content in sections]
    parts.append("</body></html>")
    Path(path).write_text("".join(parts), encoding="utf-8")
    return Path(path)
