"""Detection benchmark: a synthetic clinic's 26 weeks through mamori's own services, insider
incidents S1–S12 injected from week 9, and mamori's detector run as ``mamori serve`` runs it
(the immediate tier every 5 simulated minutes while events arrive, the nightly pass at
02:00). Scored against
the ground truth the generator keeps apart (``bench/detection_sim.py``).

    python bench/detection.py                         # profile M, 3 seeds
    python bench/detection.py --profile S --seeds 5
    python bench/detection.py --variant noisy|rare|contaminated
    python bench/detection.py --weeks 12              # shorter (burn-in stays 8 weeks)

Per scenario and overall, mean and 95 % interval over seeds: incident recall, false alarms
per week per 10 staff, case precision, precision@5 of the weekly digest, time to detect,
share of legitimate reads explained, review items per working day. The last line is the
overall recall, false alarms per week per 10 staff and the share explained. A JSON report
goes to ``bench/results/detection-<profile>-<variant>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sqlalchemy import event, func, select  # noqa: E402

from detection_sim import IMMEDIATE, PROFILES, SCENARIOS, VARIANTS, Clinic, Incident  # noqa: E402
from mamori.clinic import service as clinic_service  # noqa: E402
from mamori.clinic.calendar import JST  # noqa: E402
from mamori.detection import service  # noqa: E402
from mamori.detection.models import DetectionAccess, DetectionCase, DetectionRun  # noqa: E402
from mamori.instance import create_instance  # noqa: E402

BURN_IN = 8
BLATANT = ("S1", "S2", "S5", "S6", "S7", "S12")
SUBTLE = ("S3", "S4", "S8", "S9", "S10", "S11")
TIER_ORDER = {"immediate": 2, "daily": 1, "weekly": 0}


def one_run(profile: str, seed: int, weeks: int, variant: str) -> dict[str, Any]:
    work = Path(
        tempfile.mkdtemp(
            prefix="mamori-detect-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        )
    )
    try:
        created = create_instance(
            work / "instance", clinic_name="合成クリニック", institution_code="1310123455",
            is_synthetic=True,
        )  # fmt: skip
        inst = created.instance
        # a benchmark's scratch database in memory-backed files: no fsync per commit
        event.listen(
            inst.db.engine, "connect", lambda conn, _r: conn.execute("PRAGMA synchronous=OFF")
        )
        inst.db.engine.dispose()
        with inst.transaction(write=False) as s:
            clinic_id = clinic_service.the_clinic(s).id
        detected_at: dict[uuid.UUID, dt.datetime] = {}
        pass_seconds: list[float] = []

        def passes(tier: str, now: dt.datetime) -> None:
            sim.clock.now = now
            t0 = time.perf_counter()
            with inst.db.session(write=True) as s:
                service.run(s, clinic_id, tier=tier, channel="bench")
                s.commit()
                for cid in s.scalars(select(DetectionCase.id)):
                    detected_at.setdefault(cid, now)
            if tier == "nightly":
                pass_seconds.append(time.perf_counter() - t0)

        sim = Clinic(
            inst, PROFILES[profile], seed=seed, weeks=weeks, variant=VARIANTS[variant],
            on_night=lambda _day, at: passes("nightly", at),
            on_tick=lambda at: passes("immediate", at),
        )  # fmt: skip
        t0 = time.perf_counter()
        sim.run()
        elapsed = time.perf_counter() - t0
        with inst.db.session(write=False) as s:
            cases = list(s.scalars(select(DetectionCase)))
            everything = list(s.scalars(select(DetectionAccess)))
            ledger = [r for r in everything if not r.weak]
            runs = list(s.scalars(select(DetectionRun).where(DetectionRun.tier == "nightly")))
            events = int(s.scalar(select(func.max(DetectionRun.through_seq))) or 0)
        return score(sim, cases, ledger, runs, detected_at, weeks, everything) | {
            "seed": seed,
            "events": events,
            "simulate_s": round(elapsed, 1),
            "nightly_pass_s_median": round(statistics.median(pass_seconds), 3)
            if pass_seconds
            else 0,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _matches(case: DetectionCase, inc: Incident) -> bool:
    if str(case.user_id) != inc.user or not inc.first_seq:
        return False
    if case.patient_id is not None and str(case.patient_id) in inc.patients:
        return True
    if case.patient_id is None:
        return case.first_seq <= inc.last_seq and case.last_seq >= inc.first_seq
    return False


def score(
    sim: Clinic,
    cases: list[DetectionCase],
    ledger: list[DetectionAccess],
    runs: list[DetectionRun],
    detected_at: dict[uuid.UUID, dt.datetime],
    weeks: int,
    everything: list[DetectionAccess] | None = None,
) -> dict[str, Any]:
    scored_from = sim.start + dt.timedelta(days=7 * BURN_IN)
    start_at = dt.datetime.combine(scored_from, dt.time(), dt.UTC)
    incidents = [i for i in sim.incidents if i.first_seq]
    by_id: dict[str, list[Incident]] = defaultdict(list)
    for inc in incidents:
        by_id[inc.id].append(inc)
    # recall and time to detect, per incident (S3: any of its crowd)
    per_type: dict[str, list[int]] = defaultdict(list)
    ttd: dict[str, list[float]] = defaultdict(list)
    in_time: dict[str, list[int]] = defaultdict(list)
    true_cases: set[uuid.UUID] = set()
    missed: list[dict[str, Any]] = []  # what a missed incident looked like to the detector
    unexplained: dict[tuple[str, str], list[DetectionAccess]] = defaultdict(list)
    for r in everything or ledger:
        unexplained[(str(r.user_id), str(r.patient_id))].append(r)
    for _inc_id, parts in by_id.items():
        scenario = parts[0].scenario
        first = min(dt.datetime.fromisoformat(p.first_at) for p in parts)
        hits = [c for c in cases for p in parts if _matches(c, p)]
        true_cases |= {c.id for c in hits}
        if first < start_at and not sim.variant.contaminated:
            continue
        per_type[scenario].append(int(bool(hits)))
        if not hits:
            rows = [
                r for p in parts for pid in p.patients for r in unexplained.get((p.user, pid), [])
            ]
            missed.append(
                {
                    "scenario": scenario,
                    "role": sim_role(sim, uuid.UUID(parts[0].user)),
                    "first": first.isoformat(),
                    "days": len({d for p in parts for d in p.days}),
                    "patients": len({pid for p in parts for pid in p.patients}),
                    "unexplained": sum(not r.weak for r in rows),
                    "weak": sum(r.weak for r in rows),
                    "dormant": sum(r.dormant for r in rows),
                }
            )
        if hits:
            when = min(detected_at.get(c.id, first) for c in hits)
            hours = max(0.0, (when - first).total_seconds() / 3600)
            ttd[scenario].append(hours)
            limit = 0.25 if scenario in IMMEDIATE else 24.0
            if scenario == "S4":  # stalking: found by its third occurrence (A3)
                days = sorted({d for p in parts for d in p.days})
                third = dt.datetime.combine(
                    dt.date.fromisoformat(days[min(2, len(days) - 1)]), dt.time(23, 59), JST
                )
                limit = max(limit, (third - first).total_seconds() / 3600 + 24)
            in_time[scenario].append(int(hours <= limit))
        else:
            in_time[scenario].append(0)
    scored = [c for c in cases if detected_at.get(c.id, c.last_at) >= start_at]
    false = [c for c in scored if c.id not in true_cases]
    scored_weeks = max(1, weeks - BURN_IN)
    staff = sim.profile.staff
    # the weekly digest: its top five by tier and score
    weekly: dict[int, list[DetectionCase]] = defaultdict(list)
    for c in scored:
        weekly[(detected_at.get(c.id, c.last_at).date() - sim.start).days // 7].append(c)
    p_at_5 = [
        sum(c.id in true_cases for c in top) / len(top)
        for top in (
            sorted(v, key=lambda c: (-TIER_ORDER[c.tier], -c.score))[:5] for v in weekly.values()
        )
        if top
    ]
    working_days = sum(
        1 for d in range(7 * scored_weeks) if _open(scored_from + dt.timedelta(days=d))
    )
    incident_pairs = {(p.user, pid) for inc in incidents for p in [inc] for pid in inc.patients}
    legit_unexplained = sum(
        r.opens for r in ledger if (str(r.user_id), str(r.patient_id)) not in incident_pairs
    )
    total_reads = sum(r.accesses for r in runs)
    legit_reads = max(1, total_reads - sim.incident_reads)
    return {
        "recall": {k: statistics.mean(v) for k, v in per_type.items()},
        "incidents": {k: len(v) for k, v in per_type.items()},
        "in_time": {k: statistics.mean(v) for k, v in in_time.items()},
        "ttd_hours_median": {k: statistics.median(v) for k, v in ttd.items()},
        "overall_recall": statistics.mean([x for v in per_type.values() for x in v] or [0]),
        "blatant_recall": statistics.mean([x for k in BLATANT for x in per_type.get(k, [])] or [0]),
        "subtle_recall": statistics.mean([x for k in SUBTLE for x in per_type.get(k, [])] or [0]),
        "false_alarms_per_week_per_10": len(false) / scored_weeks / (staff / 10),
        "case_precision": (len(scored) - len(false)) / len(scored) if scored else 1.0,
        "precision_at_5": statistics.mean(p_at_5) if p_at_5 else 1.0,
        "review_items_per_working_day": len(scored) / max(1, working_days),
        "share_explained": 1 - legit_unexplained / legit_reads,
        "cases": len(scored),
        "false_cases_by_rules": _by_rules(false),
        "false_examples": [
            {
                "rules": c.rules,
                "role": sim_role(sim, c.user_id),
                "facts": c.facts,
                "at": detected_at.get(c.id, c.last_at).isoformat(),
            }
            for c in false[:6]
        ],
        "reads": total_reads,
        "missed": missed,
    }


def sim_role(sim: Clinic, user: uuid.UUID) -> str:
    return next((p.kind for p in sim.people if p.user_id == user), "?")


def _open(day: dt.date) -> bool:
    import jpholiday

    return day.weekday() != 6 and not jpholiday.is_holiday(day)


def _by_rules(cases: list[DetectionCase]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for c in cases:
        out["+".join(sorted(c.rules))] += 1
    return dict(sorted(out.items(), key=lambda x: -x[1])[:8])


def ci95(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], 0.0) if values else (0.0, 0.0)
    m = statistics.mean(values)
    return m, 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", choices=sorted(PROFILES), default="M")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=1)
    ap.add_argument("--weeks", type=int, default=26)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="standard")
    args = ap.parse_args()
    runs = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r = one_run(args.profile, seed, args.weeks, args.variant)
        runs.append(r)
        print(
            f"seed {seed}: {r['events']} events, simulated in {r['simulate_s']} s, nightly pass "
            f"{r['nightly_pass_s_median']} s; recall {r['overall_recall']:.2f}, false alarms "
            f"{r['false_alarms_per_week_per_10']:.2f}/week/10 staff, explained "
            f"{r['share_explained']:.3f}; false cases by rules {r['false_cases_by_rules']}",
            flush=True,
        )
    print(
        f"\nprofile {args.profile}, variant {args.variant}, {args.seeds} seeds, {args.weeks} weeks"
    )
    print(f"{'scenario':<10}{'incidents':>10}{'recall':>16}{'in time':>10}{'TTD h (median)':>16}")
    for sc in SCENARIOS:
        vals = [r["recall"][sc] for r in runs if sc in r["recall"]]
        if not vals:
            continue
        n = sum(r["incidents"].get(sc, 0) for r in runs)
        m, h = ci95(vals)
        it = statistics.mean(r["in_time"][sc] for r in runs if sc in r["in_time"])
        ttd = [r["ttd_hours_median"][sc] for r in runs if sc in r["ttd_hours_median"]]
        print(
            f"{sc:<10}{n:>10}{m:>10.2f} ±{h:.2f}{it:>10.2f}"
            f"{(statistics.median(ttd) if ttd else float('nan')):>16.1f}"
        )
    report: dict[str, Any] = {"profile": args.profile, "variant": args.variant, "runs": runs}
    for key in (
        "overall_recall", "blatant_recall", "subtle_recall", "false_alarms_per_week_per_10",
        "case_precision", "precision_at_5", "review_items_per_working_day", "share_explained",
    ):  # fmt: skip
        m, h = ci95([r[key] for r in runs])
        report[key] = {"mean": m, "ci95": h}
        print(f"{key:<32}{m:>8.3f} ±{h:.3f}")
    out = HERE / "results" / f"detection-{args.profile}-{args.variant}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str))
    o, f, e = (
        report[k]["mean"]
        for k in ("overall_recall", "false_alarms_per_week_per_10", "share_explained")
    )
    print(f"overall recall {o:.3f}, false alarms {f:.2f} per week per 10 staff, explained {e:.3f}")


if __name__ == "__main__":
    main()
