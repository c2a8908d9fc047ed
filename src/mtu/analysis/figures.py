"""The analyses' figures (PNG, matplotlib) and how an analysis folder is written: a JSON of the numbers beside the
figures drawn from exactly those numbers.

matplotlib is an optional extra (`pip install "mtu-diffusion[analysis]"`), imported only here and only when a figure
is drawn; the computations (`deviation`, `router`, `cost`) never need it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import MissingExtraError  # noqa: F401  (re-exported by mtu.analysis)

INSTALL_HINT = 'pip install "mtu-diffusion[analysis]"'
DPI = 100  # small PNGs: a figure is a few inches wide, so each file stays well under 200 kB


def require_matplotlib():
    """matplotlib's pyplot on the non-interactive Agg backend, or `MissingExtraError` naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(f"the analysis figures need matplotlib, which is not installed: {INSTALL_HINT}"
                                ) from None
    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot

    return pyplot


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    require_matplotlib().close(figure)
    return path


def _annotate(axes, values, fmt: str, limit: int = 400) -> None:
    """Writes each cell's value into a heatmap (only when there are few cells enough to read)."""
    rows, cols = len(values), len(values[0]) if values else 0
    if rows * cols > limit:
        return
    for row in range(rows):
        for col in range(cols):
            if values[row][col] is not None:
                axes.text(col, row, format(values[row][col], fmt), ha="center", va="center", fontsize=7)


def heatmap(path: Path, values: list[list[float | None]], *, rows: list[str], cols: list[str], title: str,
            xlabel: str, ylabel: str, colorbar: str, fmt: str = ".2f", vmin=None, vmax=None, cmap="viridis") -> Path:
    """One heatmap (rows x cols; None cells blank) with a colour bar, saved to `path`."""
    pyplot = require_matplotlib()
    import numpy as np

    grid = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    figure, axes = pyplot.subplots(layout="constrained", figsize=(min(max(4.5, 2.5 + 0.45 * len(cols)), 14),
                                                                  max(3.0, 1.2 + 0.35 * len(rows))))
    image = axes.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    axes.set_xticks(range(len(cols)), cols, fontsize=7, rotation=90 if len(cols) > 20 else 0)
    axes.set_yticks(range(len(rows)), rows, fontsize=7)
    axes.set(xlabel=xlabel, ylabel=ylabel)
    axes.set_title(title, fontsize=10)
    _annotate(axes, values, fmt)
    figure.colorbar(image, ax=axes, label=colorbar)
    return _save(figure, path)


def heatmap_panels(path: Path, panels: dict[str, list[list[float]]], *, rows: list[str], cols: list[str],
                   xlabel: str, ylabel: str, colorbar: str, vmin: float, vmax: float) -> Path:
    """One heatmap per panel (e.g. per task), side by side, sharing the colour scale."""
    pyplot = require_matplotlib()
    count = len(panels)
    figure, axes = pyplot.subplots(1, count, layout="constrained", squeeze=False,
                                   figsize=(1.6 + count * (0.5 + 0.45 * len(cols)), 1.6 + 0.25 * len(rows)))
    image = None
    for axis, (name, values) in zip(axes[0], panels.items()):
        image = axis.imshow(values, aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
        axis.set_xticks(range(len(cols)), cols, fontsize=7)
        axis.set_yticks(range(len(rows)), rows if axis is axes[0][0] else [""] * len(rows), fontsize=7)
        axis.set(title=name, xlabel=xlabel)
        _annotate(axis, values, ".2f", limit=120)
    axes[0][0].set_ylabel(ylabel)
    figure.colorbar(image, ax=list(axes[0]), label=colorbar)
    return _save(figure, path)


def line_panels(path: Path, panels: dict[str, dict[str, list[float]]], *, xlabel: str, ylabel: str) -> Path:
    """One line plot per panel (e.g. per fine-tune), a line per series, x = 1..len(series)."""
    pyplot = require_matplotlib()
    count = len(panels)
    figure, axes = pyplot.subplots(1, count, layout="constrained", figsize=(0.5 + 3.2 * count, 2.8), squeeze=False,
                                   sharey=True)
    for axis, (name, series) in zip(axes[0], panels.items()):
        for label, values in series.items():
            axis.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        axis.set(title=name, xlabel=xlabel)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=7)
    return _save(figure, path)


def bar_panels(path: Path, labels: list[str], panels: dict[str, list[float | None]]) -> Path:
    """One horizontal bar chart per panel (e.g. parameters, FLOPs), a bar per label."""
    pyplot = require_matplotlib()
    count = len(panels)
    figure, axes = pyplot.subplots(1, count, layout="constrained", squeeze=False,
                                   figsize=(1.5 + 3.0 * count, 0.8 + 0.28 * len(labels)),
                                   sharey=True)
    positions = list(range(len(labels)))
    for axis, (name, values) in zip(axes[0], panels.items()):
        axis.barh(positions, [0 if v is None else v for v in values], color="tab:blue")
        axis.set_title(name, fontsize=9)
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(positions, labels, fontsize=7)
    axes[0][0].invert_yaxis()
    return _save(figure, path)


def write_analysis(folder: Path, json_name: str, record: dict,
                   figures: dict[str, Callable[[Path], object]]) -> list[str]:
    """Writes `record` as `json_name` and each figure (file name -> function drawing it to a path) into `folder`
    (a staging folder: `mtu.outputs` moves it into place). Non-finite numbers are refused, never written as NaN.
    Returns the file names written."""
    text = json.dumps(record, indent=1, allow_nan=False)
    (folder / json_name).write_text(text + "\n")
    for name, draw in figures.items():
        draw(folder / name)
    return [json_name, *figures]
