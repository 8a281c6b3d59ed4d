"""Which generations a target keeps (grandfather-father-son), how long an immutable copy is
retained, and pruning the rest."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mamori.backup import fmt
from mamori.backup.config import TargetSpec
from mamori.backup.targets import Target
from mamori.settings import Settings


def retain_until(spec: TargetSpec, settings: Settings, now: dt.datetime) -> dt.datetime | None:
    """Object Lock retention: as long as a daily generation is kept; monthly fulls get their
    lock extended by the policy (docs/backup.md) — never shortened."""
    if spec.kind != "s3" or not spec.lock_mode:
        return None
    return now + dt.timedelta(days=settings.backup.keep_daily + 1)


def keep_set(gens: list[Any], settings: Settings, now: dt.datetime) -> set[int]:
    """Grandfather-father-son over the valid generations of one medium: the newest full of
    each of the last ``keep_daily`` days, ``keep_weekly`` ISO weeks and ``keep_monthly``
    months; the deltas of kept fulls from the last ``keep_daily`` days; always the newest."""
    policy = settings.backup
    fulls = sorted((g for g in gens if g.kind == "full"), key=lambda g: g.created, reverse=True)
    keep: set[int] = set()
    for bucket, count in (
        (lambda d: d.date(), policy.keep_daily),
        (lambda d: d.isocalendar()[:2], policy.keep_weekly),
        (lambda d: (d.year, d.month), policy.keep_monthly),
    ):
        seen: list[Any] = []
        for g in fulls:
            b = bucket(dt.datetime.fromisoformat(g.created))
            if b not in seen:
                seen.append(b)
                if len(seen) > count:
                    break
                keep.add(g.generation)
    kept_hashes = {g.hash for g in gens if g.generation in keep}
    horizon = now - dt.timedelta(days=policy.keep_daily)
    for g in gens:
        based = (g.manifest.get("base") or {}).get("manifest")
        if g.kind == "delta" and based in kept_hashes and g.created >= horizon.isoformat():
            keep.add(g.generation)
    if gens:
        keep.add(max(gens, key=lambda g: g.link).generation)
    return keep


def prune(target: Target, settings: Settings, gens: list[Any], now: dt.datetime) -> list[int]:
    """Remove the objects of generations outside the policy on targets that cannot enforce
    retention themselves. The signed manifest stays (with a signed "pruned" mark), so the
    medium's chain remains checkable end to end."""
    signer = fmt.signing_key(settings.audit_signing_key)
    keep = keep_set([g for g in gens if g.ok and not g.pruned], settings, now)
    removed = []
    for g in gens:
        if not g.ok or g.pruned or g.generation in keep:
            continue
        gen_dir = f"generations/{g.generation:010d}"
        target.put_bytes(f"{gen_dir}/pruned.sig", fmt.prune_mark(g.hash, signer), None)
        for obj in g.manifest.get("objects", []):
            if obj["name"] != "documents.json.zst":  # tiny; documents themselves stay forever
                target.delete(f"{gen_dir}/{obj['name']}")
        removed.append(g.generation)
    return removed
