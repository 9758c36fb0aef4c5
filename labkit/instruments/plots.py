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


def over_time(frame: pd.DataFrame, value: str, group: str, *, series: str | None = None, time: str = "t_s",
              bound: tuple[str, float] | None = None, ylabel: str = "", ax: Axes | None = None) -> Axes:
    """`value` against `time` (s), one colour per `group`, one line per value of `series` within it (repeats);
    `bound` = (label, y) adds a dashed horizontal line. Used for zombies and log size over time (notebook 10)."""
    ax = _axes(ax)
    for index, (name, rows) in enumerate(frame.groupby(group, sort=False)):
        color = f"C{index}"
        parts = rows.groupby(series, sort=False) if series else [(None, rows)]
        for number, (_, part) in enumerate(parts):
            ax.plot(part[time], part[value], color=color, alpha=0.8, label=str(name) if number == 0 else None)
    if bound is not None:
        ax.axhline(bound[1], color="black", linestyle="--", linewidth=1, label=bound[0])
    ax.set_xlabel("time (s)")
    ax.set_ylabel(ylabel or value)
    ax.legend()
    return ax


def intervals(table: pd.DataFrame, value: str, low: str, high: str, *, reference: float | None = None,
              log_scale: bool = False, xlabel: str = "", ax: Axes | None = None) -> Axes:
    """One horizontal bar per row of `table` (its index as labels) at `value`, with the interval [`low`, `high`]
    as error bars and a vertical line at `reference` (e.g. 1 for a ratio); used for slowdowns (notebook 11)."""
    ax = _axes(ax)
    ax.barh(table.index, table[value], color="#8fb3d9")
    ax.errorbar(table[value], table.index, fmt="none", ecolor="black", capsize=4,
                xerr=[table[value] - table[low], table[high] - table[value]])
    if reference is not None:
        ax.axvline(reference, color="grey", linewidth=1)
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or value)
    return ax


def overlaid_bars(table: pd.DataFrame, columns: dict[str, str], *, log_scale: bool = False, xlabel: str = "",
                  ax: Axes | None = None) -> Axes:
    """Horizontal bars per row of `table` (its index as labels), one bar per column of `columns` (column → legend
    label), each drawn over the one before it, narrower and darker: e.g. a size unpacked and compressed (05)."""
    ax = _axes(ax)
    shades = ("#8fb3d9", "#2b5d8a", "#173450")
    for position, (column, label) in enumerate(columns.items()):
        ax.barh(table.index, table[column], color=shades[position % len(shades)], height=0.8 / (1 + position),
                label=label)
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.legend()
    return ax


def fit_with_residuals(points: pd.DataFrame, x: str, y: str, *, predicted: str, residual: str,
                       labels: pd.DataFrame | None = None, fit_label: str = "", xlabel: str = "",
                       ylabel: str = "", residual_label: str = "residual") -> tuple[Axes, Axes]:
    """`points` (`y` against `x`) with their fitted line (`predicted`) above, the `residual` below on the same x
    axis; `labels` (its index written at its `x`, `y`) names points, e.g. one per base (notebook 05). Returns the
    two axes (fit, residuals)."""
    _, (ax, below) = plt.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.scatter(points[x], points[y], s=18)
    for name, row in (labels if labels is not None else pd.DataFrame()).iterrows():
        ax.annotate(str(name), (row[x], row[y]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    line = points.sort_values(x)
    ax.plot(line[x], line[predicted], color="black", linewidth=1, label=fit_label or predicted)
    ax.set_ylabel(ylabel or y)
    ax.legend()
    below.axhline(0, color="grey", linewidth=1)
    below.scatter(points[x], points[residual], s=12)
    below.set_xlabel(xlabel or x)
    below.set_ylabel(residual_label)
    return ax, below


# ---------------------------------------------------------------- notebook 07: cgroup limits over time

_MIB = 2**20
_MARK_STYLES: tuple[dict[str, Any], ...] = (
    {"color": "tab:orange", "linestyle": "--"}, {"color": "tab:red"}, {"color": "tab:purple"})


def memory_climb(samples: pd.DataFrame, steps: pd.DataFrame, limit_bytes: float, *, marks: dict[str, float],
                 title: str, ax: Axes | None = None) -> Axes:
    """Memory charged over time (`samples`: t_s, memory_bytes) against `limit_bytes`, the program's own report of
    what it had touched (`steps`: t_s, allocated_mib) as a step line, and vertical `marks` {label: t_s}
    (NaN marks are left out)."""
    ax = _axes(ax)
    ax.plot(samples["t_s"], samples["memory_bytes"] / _MIB, label="charged to the container (sampled)")
    ax.step(steps["t_s"], steps["allocated_mib"], where="post", linestyle=":",
            label="touched by the program (its own report)")
    ax.axhline(limit_bytes / _MIB, color="black", linewidth=1, label=f"limit {limit_bytes / _MIB:.0f} MiB")
    for (label, t_s), style in zip(marks.items(), _MARK_STYLES, strict=False):
        if not pd.isna(t_s):
            ax.axvline(t_s, label=label, **style)
    ax.set_xlabel("time since sampling started (s)")
    ax.set_ylabel("MiB")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    return ax


def memory_pressure(samples: pd.DataFrame, limit_bytes: float, *, title: str, ax: Axes | None = None) -> Axes:
    """Memory charged (`samples`: t_s, memory_bytes) against `limit_bytes`, and on a second axis the share of
    each sampling interval some / all of the group's tasks stalled on memory (PSI: the growth of
    pressure_some_s and pressure_full_s over the interval)."""
    ax = _axes(ax)
    ax.plot(samples["t_s"], samples["memory_bytes"] / _MIB, color="C0", label="charged (MiB)")
    ax.axhline(limit_bytes / _MIB, color="black", linewidth=1, label=f"limit {limit_bytes / _MIB:.0f} MiB")
    ax.set_xlabel("time since sampling started (s)")
    ax.set_ylabel("MiB")
    stalls = ax.twinx()
    elapsed = samples["t_s"].diff()
    for column, label, color in (("pressure_some_s", "some tasks stalled", "C1"),
                                 ("pressure_full_s", "all tasks stalled", "C3")):
        stalls.plot(samples["t_s"], 100 * samples[column].diff() / elapsed, color=color, linewidth=1, label=label)
    stalls.set_ylabel("% of the interval stalled on memory (PSI)")
    stalls.set_ylim(0, 105)
    lines = ax.get_legend_handles_labels()[0] + stalls.get_legend_handles_labels()[0]
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="upper left", fontsize="small")
    ax.set_title(title)
    return ax


def memory_split(samples: pd.DataFrame, limit_bytes: float, *, pass_ends_s: Sequence[float], title: str,
                 ax: Axes | None = None) -> Axes:
    """Anonymous memory and page cache stacked over time (`samples`: t_s, anon_bytes, file_bytes) against
    `limit_bytes`, a dotted line where each pass through a file ended (`pass_ends_s`, s)."""
    ax = _axes(ax)
    ax.stackplot(samples["t_s"], samples["anon_bytes"] / _MIB, samples["file_bytes"] / _MIB,
                 labels=["anonymous", "page cache"], alpha=0.8)
    ax.axhline(limit_bytes / _MIB, color="black", linewidth=1, label="limit")
    for t_s in pass_ends_s:
        ax.axvline(t_s, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("time since sampling started (s)  (dotted: a pass through the file ended)")
    ax.set_ylabel("MiB")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize="small")
    return ax


def cpu_per_interval(samples: pd.DataFrame, *, axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """Per ``condition`` of `samples` (condition, cpus, t_s, cpu_s, nr_throttled): CPU used per sampling interval
    (cores) with its quota ``cpus`` dotted (none where NaN) on the first axes, throttled periods so far on the
    second."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 4))
    for condition, frame in samples.groupby("condition", sort=False):
        rate = frame["cpu_s"].diff() / frame["t_s"].diff()
        line, = axes[0].plot(frame["t_s"], rate, label=str(condition))
        if not pd.isna(frame["cpus"].iloc[0]):
            axes[0].axhline(frame["cpus"].iloc[0], color=line.get_color(), linestyle=":", linewidth=1)
        axes[1].plot(frame["t_s"], frame["nr_throttled"], color=line.get_color(), label=str(condition))
    axes[0].set_ylabel("CPU used (cores)")
    axes[0].set_title("CPU used per sampling interval (dotted: the quota)")
    axes[1].set_ylabel("throttled periods so far")
    axes[1].set_title("CFS periods in which the quota ran out")
    for ax in axes:
        ax.set_xlabel("time since the container started (s)")
        ax.legend(fontsize="small")
    return axes


def cumulative_work(work: pd.DataFrame, group: str, *, shaded: tuple[float, float], title: str,
                    ax: Axes | None = None) -> Axes:
    """Cumulative work over time (`work`: t_s, work_units) per value of `group`, the window `shaded` (s)
    marked "both running"."""
    ax = _axes(ax)
    for name, frame in work.groupby(group, sort=False):
        ax.plot(frame["t_s"], frame["work_units"], label=str(name))
    ax.axvspan(*shaded, color="grey", alpha=0.15, label="both running")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("work units done")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def written_over_time(writes: pd.DataFrame, *, limit_mib_per_s: float, title: str, ax: Axes | None = None) -> Axes:
    """MiB written over time per ``condition`` of `writes` (condition, t_s, event, mib: ``wrote`` rows, then a
    ``synced`` row where the fsync returned, marked), with the line a writer held to `limit_mib_per_s` would
    follow (dotted)."""
    ax = _axes(ax)
    end = float(writes["t_s"].max())
    for condition, frame in writes.groupby("condition", sort=False):
        line, = ax.plot(frame["t_s"], frame["mib"], marker=".", label=str(condition))
        synced = frame[frame["event"] == "synced"]
        ax.scatter(synced["t_s"], synced["mib"], marker="s", color=line.get_color())
    ax.plot([0, end], [0, limit_mib_per_s * end], color="black", linestyle=":", linewidth=1,
            label=f"{limit_mib_per_s:g} MiB/s")
    ax.set_ylim(0, float(writes["mib"].max()) * 1.1)
    ax.set_xlabel("time since the writer started (s)  (square: its fsync returned)")
    ax.set_ylabel("MiB written")
    ax.set_title(title)
    ax.legend(fontsize="small")
    return ax


def steps_against_target(table: pd.DataFrame, value: str, *, target: float, target_label: str, ylabel: str,
                         low: str | None = None, high: str | None = None, ax: Axes | None = None) -> Axes:
    """One vertical bar per row of `table` (its index, in order: the steps of a waterfall) at `value`, with the
    interval [`low`, `high`] as error bars when given, and a dashed line at `target` (e.g. the chapter's 200 MB);
    used for notebook 14's image sizes and rebuild times per fix."""
    ax = _axes(ax)
    labels = [str(label) for label in table.index]
    colors = ["#2b5d8a" if v < target else "#c96b4b" for v in table[value]]
    ax.bar(labels, table[value], color=colors)
    if low is not None and high is not None:
        ax.errorbar(labels, table[value], fmt="none", ecolor="black", capsize=4,
                    yerr=[table[value] - table[low], table[high] - table[value]])
    ax.axhline(target, color="black", linestyle="--", linewidth=1, label=target_label)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=30)
    ax.legend(fontsize="small")
    return ax


def event_lanes(events: pd.DataFrame, lane: str, event: str, *, time: str = "t_s", markers: dict[str, str],
                xlabel: str = "", ax: Axes | None = None) -> Axes:
    """One horizontal lane per value of `lane` (in order of first appearance, top down), each `event` drawn at
    its `time` (s) with its marker from `markers` (event → matplotlib marker), a line from the lane's first event
    to its last; used for notebook 12's bring-up timelines (service × variant: created, started, healthy)."""
    ax = _axes(ax)
    lanes = list(dict.fromkeys(events[lane]))
    for position, name in enumerate(lanes):
        rows = events[events[lane] == name]
        ax.plot([rows[time].min(), rows[time].max()], [position, position], color="#bbbbbb", zorder=1)
    for index, (name, marker) in enumerate(markers.items()):
        rows = events[events[event] == name]
        ax.scatter(rows[time], [lanes.index(value) for value in rows[lane]], marker=marker, color=f"C{index}",
                   label=name, zorder=2)
    ax.set_yticks(range(len(lanes)), lanes)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.legend(fontsize="small")
    return ax
