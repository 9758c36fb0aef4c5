"""Section 1 of notebook 12: the stack's bring-up, from the engine's events — each service's created, started
and healthy instants, with the db's condition `service_healthy` (the chapter's) against `service_started`, and
the healthcheck interval's share of the wait (the chapter's 5 s against a short one)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from labkit.core.results import rows_where
from labkit.core.session import LabSession
from labkit.instruments import measure
from labkit.labs.compose_and_the_single_box_path.declaration import (
    CHAPTER_INTERVAL_S,
    HEALTHY,
    LAB,
    STARTED,
)
from labkit.labs.compose_and_the_single_box_path.stack import (
    check_port,
    check_seconds,
    events,
    first,
    leftovers,
    log_instant,
    project_folder,
    stack,
)

HEALTHY_EVENT = "health_status: healthy"
TIMELINE_EVENTS = {"create": "created", "start": "started", HEALTHY_EVENT: "healthy"}
DB_READY_LINE = "ready to accept connections"  # PostgreSQL's log line once it takes connections
CONNECT_FAILED = "connect failed"  # the app's line for each failed attempt to reach the db


@dataclass(frozen=True)
class Variant:
    """One way of bringing the stack up: the db's `condition` in the app's depends_on, the db's healthcheck every
    `interval_s` s (the app's and the cache's every short interval in each variant, so only the db's differs)."""

    condition: str
    interval_s: float

    @property
    def name(self) -> str:
        return f"{self.condition}, db checked every {self.interval_s:g} s"


@dataclass(frozen=True)
class BringupResult:
    """`runs`: one row per bring-up (variant, condition, interval_s (the db's checks), repeat, up_s, db_ready_s,
    db_healthy_s, app_started_s, app_healthy_s, connect_failures; instants in s after `up` began); `timeline`:
    variant, repeat, service, event (created / started / healthy), t_s."""

    runs: pd.DataFrame
    timeline: pd.DataFrame

    def median(self, condition: str, interval_s: float, column: str) -> float:
        rows = rows_where(self.runs, condition=condition, interval_s=interval_s)
        return float(rows[column].median()) if len(rows) else float("nan")

    @property
    def short_interval_s(self) -> float:
        return float(self.runs["interval_s"].min())

    @property
    def app_after_db(self) -> bool:
        """In every service_healthy run, the app was started only after the db was healthy."""
        healthy = self.runs[self.runs["condition"] == HEALTHY]
        return bool(len(healthy)) and bool((healthy["app_started_s"] > healthy["db_healthy_s"]).all())

    @property
    def all_healthy(self) -> bool:
        """Every bring-up ended with the app healthy (so the db and the cache it needs were up)."""
        return bool(len(self.runs)) and bool(self.runs["app_healthy_s"].notna().all())

    @property
    def left_after_down(self) -> int:
        """Containers, networks and volumes of the projects still there after their `down -v`, summed."""
        return int(self.runs["left_after_down"].sum())

    @property
    def failures_without_health(self) -> int:
        """The app's failed connections at start, summed over the service_started runs."""
        return int(self.runs[self.runs["condition"] == STARTED]["connect_failures"].sum())

    @property
    def failures_with_health(self) -> int:
        return int(self.runs[self.runs["condition"] == HEALTHY]["connect_failures"].sum())

    def interval_share(self, interval_s: float) -> float:
        """How much of the time to a healthy db (median) is the wait for the check after PostgreSQL was ready:
        (healthy − ready) / healthy, for service_healthy runs checking every `interval_s`."""
        healthy = self.median(HEALTHY, interval_s, "db_healthy_s")
        ready = self.median(HEALTHY, interval_s, "db_ready_s")
        return (healthy - ready) / healthy if healthy > 0 else float("nan")

    @property
    def lanes(self) -> pd.DataFrame:
        """The first repeat's timeline with one lane per variant and service (for the plot)."""
        first_repeat = self.timeline[self.timeline["repeat"] == self.timeline["repeat"].min()]
        return first_repeat.assign(lane=first_repeat["variant"] + " · " + first_repeat["service"])

    def started_before_ready(self, condition: str) -> int:
        """In how many bring-ups with `condition` the engine started the app before PostgreSQL logged that it takes
        connections."""
        rows = self.runs[self.runs["condition"] == condition]
        return int((rows["app_started_s"] < rows["db_ready_s"]).sum())

    def runs_of(self, condition: str) -> int:
        return int((self.runs["condition"] == condition).sum())

    def soonest_healthy_after_start_s(self, interval_s: float) -> float:
        """The shortest time (s) from the db container's start to its healthy event over the service_healthy
        bring-ups checking every `interval_s`; NaN without such a bring-up in the timeline."""
        db = rows_where(self.timeline, variant=Variant(HEALTHY, interval_s).name, service="db")
        at = db.pivot_table(index="repeat", columns="event", values="t_s", aggfunc="min")
        if not {"started", "healthy"} <= set(at.columns):
            return float("nan")
        return float((at["healthy"] - at["started"]).min())

    @property
    def summary(self) -> pd.DataFrame:
        """Medians per variant (s)."""
        columns = ["up_s", "db_ready_s", "db_healthy_s", "app_started_s", "app_healthy_s", "connect_failures",
                   "left_after_down"]
        return self.runs.groupby("variant", sort=False)[columns].median()

    def conclusion(self) -> str:
        short, chapter = self.short_interval_s, float(CHAPTER_INTERVAL_S)
        retried = self.failures_without_health
        parts = [
            f"With the chapter's `service_healthy` and checks every {short:g} s, PostgreSQL logged that it takes "
            f"connections **{self.median(HEALTHY, short, 'db_ready_s'):.2f} s** after `up` began, the engine "
            f"reported it healthy at **{self.median(HEALTHY, short, 'db_healthy_s'):.2f} s**, the app was started "
            f"at **{self.median(HEALTHY, short, 'app_started_s'):.2f} s** (after the db was healthy in every run: "
            f"**{self.app_after_db}**) and the whole stack was healthy at "
            f"**{self.median(HEALTHY, short, 'app_healthy_s'):.2f} s**; the app's failed connections at start: "
            f"**{self.failures_with_health}**.",
            f"With `service_started` the app started at **{self.median(STARTED, short, 'app_started_s'):.2f} s** "
            f"(median), before PostgreSQL was ready in **{self.started_before_ready(STARTED)}** of "
            f"{self.runs_of(STARTED)} runs, and failed to connect **{retried}** times in all"
            + (" (it retries every 0.1 s; an app that does not retry would have exited)." if retried else "."),
        ]
        if chapter in set(self.runs["interval_s"]):
            soonest = self.soonest_healthy_after_start_s(chapter)
            first_check = "" if pd.isna(soonest) else (
                f" The db was never healthy sooner than **{soonest:.2f} s** after its container started: "
                + ("no check passed before one interval had gone by." if soonest >= chapter else
                   "a check passed before one interval had gone by."))
            parts.append(
                f"With the db checked every {chapter:g} s, as in the chapter, it was healthy at "
                f"**{self.median(HEALTHY, chapter, 'db_healthy_s'):.2f} s** and the stack (the app still checked "
                f"every {short:g} s) at **{self.median(HEALTHY, chapter, 'app_healthy_s'):.2f} s**: waiting for the "
                f"check was "
                f"**{self.interval_share(chapter):.0%}** of the time to a healthy db, against "
                f"**{self.interval_share(short):.0%}** with {short:g} s.{first_check}")
        return " ".join(parts)


def variants(short_interval_s: float) -> list[Variant]:
    return [Variant(HEALTHY, short_interval_s), Variant(STARTED, short_interval_s),
            Variant(HEALTHY, float(CHAPTER_INTERVAL_S))]


def _bring_up(lab: LabSession, variant: Variant, repeat: int, port: int,
              short_interval_s: float) -> tuple[dict[str, object], pd.DataFrame]:
    with lab.scope() as scope, project_folder(scope) as folder, \
            stack(lab, scope, folder, "bringup", port, short_interval_s, variant.interval_s,
                  DB_CONDITION=variant.condition) as up:
        since_ns = time.time_ns()
        up_s = up.up()
        seen = events(lab.engine, up.project.name, since_ns)
        db = up.container(lab.engine, "db")
        row = {"variant": variant.name, "condition": variant.condition, "interval_s": variant.interval_s,
               "repeat": repeat, "up_s": up_s, "db_ready_s": log_instant(db, DB_READY_LINE, since_ns),
               "db_healthy_s": first(seen, "db", HEALTHY_EVENT), "app_started_s": first(seen, "app", "start"),
               "app_healthy_s": first(seen, "app", HEALTHY_EVENT),
               "connect_failures": up.logs("app").count(CONNECT_FAILED)}
        up.project.down()
        row["left_after_down"] = leftovers(lab.engine, up.project.name)
    shown = seen[seen["event"].isin(list(TIMELINE_EVENTS))].assign(
        variant=variant.name, repeat=repeat, event=lambda f: f["event"].map(TIMELINE_EVENTS))
    return row, shown[list(LAB.tables["timeline"])]


def _bringups(lab: LabSession, port: int, repeats: int, short_interval_s: float) -> dict[str, pd.DataFrame]:
    rows, timelines = [], []
    order = variants(short_interval_s)
    # Interleaved: each repeat starts one variant later, so drift on the machine does not favour one.
    for repeat, variant in ((r, order[(r + i) % len(order)]) for r in range(repeats) for i in range(len(order))):
        row, timeline = _bring_up(lab, variant, repeat, port, short_interval_s)
        rows.append(row)
        timelines.append(timeline)
    return {"bringup": pd.DataFrame(rows, columns=LAB.tables["bringup"]),
            "timeline": pd.concat(timelines, ignore_index=True) if timelines else
            pd.DataFrame(columns=LAB.tables["timeline"])}


def run_bringup(lab: LabSession, port: int, repeats: int, short_interval_s: float) -> BringupResult:
    """Bring the stack up `repeats` times per variant (interleaved): the db's condition service_healthy and
    service_started with healthchecks every `short_interval_s` s, and service_healthy with the db's check every
    5 s as in the chapter (the app's and the cache's still every `short_interval_s`)."""
    check_port(port, live=False)
    measure.validate_repeats(repeats, names=("repeats", "warmup"))
    check_seconds("short_interval_s", short_interval_s, 0.5, 30)
    if lab.live:
        check_port(port)
    tables = lab.record("bringup", ("bringup", "timeline"), lambda: _bringups(lab, port, repeats, short_interval_s),
                        port=port, repeats=repeats, short_interval_s=short_interval_s)
    return BringupResult(tables["bringup"], tables["timeline"])

