"""Section 2: pull time against compressed size, a straight-line fit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from labkit.errors import BadParameter
from labkit.instruments import diskquiet
from labkit.labs.choosing_a_base_image.bases import BaseTable
from labkit.labs.choosing_a_base_image.declaration import MB


@dataclass(frozen=True)
class PullFit:
    """A least-squares line through every cold pull: wall_s = intercept_s + slope_s_per_mb × compressed MB, and a
    second through the same pulls against the image's file count: wall_s = files_intercept_s + files_slope_s ×
    files. The verdict follows the better of the two (:attr:`better_model`, the higher R²).

    `points`: base, repeat, compressed_mb, files, wall_s, predicted_s, residual_s (one per pull; the bytes
    line's). `checked_cold`: how many of them were checked cold before they began (image and layers gone)."""

    intercept_s: float
    slope_s_per_mb: float
    r_squared: float
    points: pd.DataFrame
    left_out: tuple[str, ...] = ()  # bases whose pulls were not cold
    files_intercept_s: float = math.nan
    files_slope_s: float = math.nan  # s per file
    files_r_squared: float = math.nan
    checked_cold: int = 0
    interleaved: bool = True  # False: a recording whose pulls of each base ran back to back
    settles: pd.DataFrame | None = None  # per cold pull: settle_s, quiet (BaseTable.settles)

    @cached_property
    def per_round(self) -> pd.DataFrame:
        """Per round of pulls (every base once): n, the bytes line's slope_ms_per_mb and r_squared through that
        round's pulls alone, and relative (the median over its pulls of each pull over its base's median pull): a
        round above 1 pulled slower than the bases' typical pulls, so a drift over the run shows here."""
        medians = self.points.groupby("base")["wall_s"].transform("median")
        rows = []
        for repeat, group in self.points.assign(relative=self.points["wall_s"] / medians).groupby("repeat"):
            slope, _, _, r_squared = _line(group["compressed_mb"].to_numpy(dtype=float),
                                           group["wall_s"].to_numpy(dtype=float))
            rows.append({"repeat": repeat, "n": len(group), "slope_ms_per_mb": slope * 1e3, "r_squared": r_squared,
                         "relative": float(group["relative"].median())})
        return pd.DataFrame(rows).set_index("repeat")

    @property
    def better_model(self) -> str:
        """'files' when the file-count line explains more of the pull times (higher R²), else 'bytes'."""
        return "files" if self.files_r_squared > self.r_squared else "bytes"

    @property
    def files_rank_correlation(self) -> float:
        """Spearman's rank correlation of file count and median pull time over the bases (NaN below 3)."""
        return self._rank_correlation(self.per_base["files"], self.per_base["wall_s"])

    @property
    def faster_when_smaller(self) -> bool:
        """The better model's line rises with its measure, and the bases' median pulls follow that measure's order
        (rank correlation ≥ 0.8)."""
        if self.better_model == "files":
            return self.files_slope_s > 0 and self.files_rank_correlation >= 0.8
        return self.slope_s_per_mb > 0 and self.rank_correlation >= 0.8

    @property
    def throughput_mb_s(self) -> float:
        """MB of compressed layers per second beyond the fixed cost (the inverse of the slope)."""
        return 1 / self.slope_s_per_mb if self.slope_s_per_mb > 0 else math.inf

    @property
    def line(self) -> str:
        """The fitted line in words, e.g. ``0.41 s + 12.3 ms/MB``."""
        return f"{self.intercept_s:.2f} s + {self.slope_s_per_mb * 1e3:.1f} ms/MB"

    @cached_property
    def per_base(self) -> pd.DataFrame:
        """Per base, smallest first: compressed_mb, files, median wall_s, predicted_s, median residual_s, and
        fixed_share (:attr:`fixed_cost_s` over its median pull time)."""
        table = self.points.groupby("base").agg(compressed_mb=("compressed_mb", "first"), files=("files", "first"),
                                                wall_s=("wall_s", "median"), predicted_s=("predicted_s", "first"),
                                                residual_s=("residual_s", "median")).sort_values("compressed_mb")
        table["fixed_share"] = float(table["wall_s"].iloc[0]) / table["wall_s"]
        return table

    @property
    def smallest(self) -> str:
        return str(self.per_base.index[0])

    @property
    def fixed_cost_s(self) -> float:
        """The median pull of the smallest image (s): an upper bound of what every pull costs whatever its size,
        measured rather than extrapolated (the line's intercept is an extrapolation, and can even be negative)."""
        return float(self.per_base["wall_s"].iloc[0])

    @staticmethod
    def _rank_correlation(a: pd.Series, b: pd.Series) -> float:
        """Spearman's rho, rounded to 12 places: computed as a Pearson correlation of ranks it comes out as
        0.7999999999999998 for one swap among four (exactly 1 − 6·2/(4·15) = 0.8), which a ≥ 0.8 criterion must
        not refuse."""
        return round(float(a.rank().corr(b.rank())), 12) if len(a) >= 3 else math.nan

    @property
    def rank_correlation(self) -> float:
        """Spearman's rank correlation of compressed size and median pull time over the bases (NaN below 3)."""
        return self._rank_correlation(self.per_base["compressed_mb"], self.per_base["wall_s"])

    @property
    def residual_files_correlation(self) -> float:
        """Spearman's rank correlation of each base's residual and its file count: positive when images with more
        files pull slower than their compressed size predicts."""
        return self._rank_correlation(self.per_base["residual_s"], self.per_base["files"])

    def conclusion(self) -> str:
        t = self.per_base
        above, below = t["residual_s"].idxmax(), t["residual_s"].idxmin()
        files = (f"The residuals follow the file count (rank correlation {self.residual_files_correlation:.2f}): "
                 f"**{above}** ({int(t.loc[above, 'files'])} files) pulled {t.loc[above, 'residual_s']:+.2f} s off the "
                 f"line and **{below}** ({int(t.loc[below, 'files'])} files) {t.loc[below, 'residual_s']:+.2f} s — "
                 "every file is unpacked and written, so bytes are not the whole cost."
                 if self.residual_files_correlation >= 0.5 else
                 f"The residuals do not follow the file count (rank correlation "
                 f"{self.residual_files_correlation:.2f}).")
        models = (f" Against the file count instead: pull time ≈ {self.files_intercept_s:.2f} s + "
                  f"{self.files_slope_s * 1e6:.0f} µs per file (R² = {self.files_r_squared:.2f}): the "
                  f"**{'file count' if self.better_model == 'files' else 'compressed size'}** explains more of "
                  "the pull times, and the verdict follows it.")
        return (f"**What we measured** ({len(self.points)} cold pulls of {len(t)} bases): pull time ≈ "
                f"**{self.intercept_s:.2f} s + {self.slope_s_per_mb * 1e3:.1f} ms per compressed MB** "
                f"(R² = {self.r_squared:.2f}; about {self.throughput_mb_s:.0f} MB/s of compressed layers fetched, "
                f"decompressed and written). Rank correlation of size and pull time: {self.rank_correlation:.2f}. "
                f"The smallest image, **{self.smallest}** ({t['compressed_mb'].iloc[0]:.2f} MB), pulled in "
                f"{self.fixed_cost_s:.2f} s: that bounds the fixed cost of a pull (registry round trips for the "
                f"manifest, config and each layer, and the engine's bookkeeping), "
                f"{t['fixed_share'].iloc[1]:.0%} of the next smallest image's pull. On a loopback registry it is "
                f"small; across a real network each round trip adds latency to it, and bandwidth to the slope. "
                f"{files}{models}{self._rounds()}"
                + (f" Left out: {', '.join(self.left_out)}, whose pulls found layers already in the engine (seen "
                   "before the pull began, or reported \"Already exists\" by it: another image or a build cache "
                   "still held them), so they were not cold." if self.left_out else ""))


    def _rounds(self) -> str:
        """The pulls round by round, when there was more than one round."""
        r = self.per_round
        checked = (f" {self.checked_cold} of {len(self.points)} pulls were checked cold as they began: the image "
                   "and every one of its layers gone from the engine." if self.checked_cold else
                   " No pull was checked cold before it began (a recording older than that check, or an engine "
                   "whose layer store cannot be read here): that they were "
                   "rests on the CLI reporting no layer \"Already exists\".")
        s = self.settles
        if s is not None and s["settle_s"].notna().any():
            checked += (f" After each removal the pull waited for the disk to go quiet (a sync, then nothing "
                        f"written, discarded or in flight for {diskquiet.QUIET_S:g} s): {s['settle_s'].median():.1f} "
                        f"s (median); quiet within the limit before {int(s['quiet'].eq(True).sum())} of {len(s)} "
                        "pulls.")
        if len(r) < 2:
            return checked
        how = ("Round by round (each base once per round, the order rotated)" if self.interleaved else
               "Repeat by repeat (this recording pulled each base's repeats back to back, not interleaved)")
        return (f" {how}: slope "
                f"{' / '.join(f'{v:.0f}' for v in r['slope_ms_per_mb'])} ms/MB, and the round's pulls at "
                f"{' / '.join(f'{v:.2f}' for v in r['relative'])}× their base's median — "
                + ("no drift over the run beyond 10 %" if (r["relative"] - 1).abs().max() <= 0.1 else
                   "the pulls drifted over the run, and interleaving spread that drift over every base"
                   if self.interleaved else "the later repeats pulled slower")
                + "." + checked)


def fit_pulls(table: BaseTable) -> PullFit:
    """Fit pull time against compressed size over the cold pulls in `table` (two sizes at least); a pull that
    found a layer already in the engine (:attr:`BaseTable.warm_pulls`) is left out."""
    pulls = table.cold_pulls
    if pulls["compressed_bytes"].nunique() < 2:
        raise BadParameter("a fit needs cold pulls of at least two images of different sizes.",
                           "Measure two bases or more (bases=[...]) whose layers nothing else in the engine holds.")
    x = pulls["compressed_bytes"].to_numpy(dtype=float) / MB
    y = pulls["wall_s"].to_numpy(dtype=float)
    slope, intercept, predicted, r_squared = _line(x, y)
    files = table.bases.set_index("base")["files"].loc[pulls["base"]].to_numpy(dtype=float)
    files_slope, files_intercept, _, files_r_squared = _line(files, y)
    points = pd.DataFrame({"base": pulls["base"].to_numpy(), "repeat": pulls["repeat"].to_numpy(),
                           "compressed_mb": x, "files": files, "wall_s": y, "predicted_s": predicted,
                           "residual_s": y - predicted})
    return PullFit(intercept, slope, r_squared, points, tuple(table.warm_pulls), files_intercept, files_slope,
                   files_r_squared, table.checked_cold, bool(pulls["position"].notna().all()), table.settles)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray, float]:
    """Least squares y = intercept + slope × x: slope, intercept, the predicted values and R² (NaN when y does not
    vary; slope NaN and R² 0 when x does not)."""
    if np.ptp(x) == 0:
        return math.nan, float(y.mean()), np.full_like(y, y.mean()), 0.0
    slope, intercept = np.polyfit(x, y, 1)
    predicted = intercept + slope * x
    total = float(((y - y.mean()) ** 2).sum())
    r_squared = 1 - float(((y - predicted) ** 2).sum()) / total if total > 0 else math.nan
    return float(slope), float(intercept), predicted, r_squared
