"""Keep N daily and M weekly backups; everything else is pruned.

A backup is kept when it is the newest backup of one of the N most recent UTC
days that have a backup, or of one of the M most recent ISO weeks that have
one. Only good backups fill those slots: a held one (a sudden drop, an empty
store: see ``pipeline.Gate``) never pushes a good one out, so a run of bad
nights cannot prune every good copy. The newest good backup is always kept,
whatever N and M are; of the held ones, the N newest are kept for inspection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetentionPlan:
    keep: list[str]
    delete: list[str]


def _newest_per_bucket(stamps: list[tuple[datetime, str]], bucket_key: str, limit: int) -> set[str]:
    """Newest backup in each of the ``limit`` most recent buckets (days or ISO weeks)."""
    chosen: dict[tuple[int, ...], str] = {}
    for when, backup_id in sorted(stamps, reverse=True):
        if bucket_key == "day":
            key: tuple[int, ...] = (when.year, when.month, when.day)
        else:
            iso = when.isocalendar()
            key = (iso.year, iso.week)
        if key not in chosen:
            if len(chosen) >= limit:
                break
            chosen[key] = backup_id
    return set(chosen.values())


def plan_retention(
    complete: dict[str, datetime],
    incomplete: dict[str, datetime],
    keep_daily: int,
    keep_weekly: int,
    now: datetime,
    incomplete_grace: timedelta = timedelta(hours=6),
    held: set[str] | None = None,
) -> RetentionPlan:
    """Decide which backup ids to keep; pure, so it is easy to test.

    Incomplete backups (no manifest) younger than the grace period may still be
    uploading, so they are kept; older ones are failed runs and are deleted.
    """
    held = held or set()
    stamps = [(when, bid) for bid, when in complete.items() if bid not in held]
    keep = _newest_per_bucket(stamps, "day", max(keep_daily, 0))
    keep |= _newest_per_bucket(stamps, "week", max(keep_weekly, 0))
    if stamps:
        keep.add(max(stamps)[1])
    keep |= set(sorted((bid for bid in complete if bid in held), reverse=True)[: max(keep_daily, 0)])
    keep |= {bid for bid, when in incomplete.items() if now - when < incomplete_grace}
    every = set(complete) | set(incomplete)
    return RetentionPlan(keep=sorted(keep), delete=sorted(every - keep))
