"""The house style and a few plot helpers; nothing happens at import.

Call :func:`use_style` once in a notebook. Helpers draw on `ax` (a new figure when None) and return it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

HOUSE_STYLE: Any = {
    "figure.figsize": (8.0, 4.0),
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "legend.frameon": False,
    "font.size": 10,
    "savefig.bbox": "tight",
}


def use_style() -> None:
    """Apply the house style to matplotlib's global settings (explicitly, never at import)."""
    plt.rcParams.update(HOUSE_STYLE)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    _, new_ax = plt.subplots()
    return new_ax


def distributions(frame: pd.DataFrame, group: str, value: str, *, order: Sequence[str] | None = None,
                  log_scale: bool = False, unit: str = "", ax: Axes | None = None) -> Axes:
    """One strip of points per group with its median marked; used for start-up times (notebook 01)."""
    ax = _axes(ax)
    groups = list(order) if order is not None else list(dict.fromkeys(frame[group]))
    rng = np.random.default_rng(0)  # fixed jitter: the same data draws the same picture
    for position, name in enumerate(groups):
        values = frame.loc[frame[group] == name, value].to_numpy(dtype=float)
        jitter = rng.uniform(-0.15, 0.15, values.size)
        ax.scatter(np.full(values.size, position) + jitter, values, s=14, alpha=0.6)
        if values.size:
            ax.hlines(np.median(values), position - 0.3, position + 0.3, colors="black", linewidth=2)
    ax.set_xticks(range(len(groups)), groups)
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel(f"{value} ({unit})" if unit else value)
    return ax


def heatmap(table: pd.DataFrame, *, colors: dict[str, str], ax: Axes | None = None) -> Axes:
    """A categorical table (rows × columns of labels) drawn as coloured cells with the label written in."""
    ax = _axes(ax)
    labels = list(colors)
    codes = table.apply(lambda column: column.map(labels.index)).to_numpy(dtype=float)
    from matplotlib.colors import ListedColormap

    ax.imshow(codes, cmap=ListedColormap([colors[label] for label in labels]), vmin=0, vmax=len(labels) - 1,
              aspect="auto")
    for (row, col), text in np.ndenumerate(table.to_numpy()):
        ax.text(col, row, str(text), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(table.shape[1]), table.columns)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.grid(False)
    return ax
