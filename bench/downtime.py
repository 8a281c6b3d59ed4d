"""The downtime bundle for a busy day (goal: under 60 s on 2 cores), beside a plain
``age -d`` of the same bytes in the same run.

    python bench/downtime.py                      # S clinic (bench/results/instance-S-1)
    python bench/downtime.py --size L --patients 60

A copy of the synthetic clinic gets ``--patients`` bookings on one day (the patients with the
most visits: chronic care, the longest charts), a standby key, and then
``continuity.service.write_bundle``: every booked patient's chart summary PDF (each an audited
print), the day sheet, the 40 numbered blank forms, tar, age encryption, an atomic write and
the audit event. Then the Debian ``age`` decrypts the same file to /dev/null. Prints both
times, their ratio, the bundle's size and the per-patient cost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from chart_open import RESULTS, prepare  # noqa: E402

GOAL_S = 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="S")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instance", type=Path, default=None)
    ap.add_argument("--patients", type=int, default=60)
    ap.add_argument("--work", type=Path, default=RESULTS / "downtime-bench")
    args = ap.parse_args()
    source, _login, _password = prepare(args.size, args.seed, args.instance)
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    home = work / "instance"
    shutil.copytree(source, home)

    from sqlalchemy import func, select

    from mamori.clinic.calendar import clinic_today
    from mamori.clinical import bookings
    from mamori.clinical.models import Encounter
    from mamori.continuity import service
    from mamori.instance import open_instance

    day = clinic_today() + dt.timedelta(days=1)
    inst = open_instance(str(home))
    with inst.transaction(write=True) as s:
        actor = inst.actor(s, "admin")
        busiest = (
            s.execute(
                select(Encounter.patient_id)
                .where(Encounter.clinic_id == actor.clinic_id)
                .group_by(Encounter.patient_id)
                .order_by(func.count().desc())
                .limit(args.patients)
            )
            .scalars()
            .all()
        )
        for i, pid in enumerate(busiest):
            at = dt.time(9 + (5 * i) // 60, (5 * i) % 60)
            bookings.book(
                s, actor, pid, bookings.BookingIn(date=day, time=at, purpose="定期受診", again=True)
            )
        key = work / "standby.txt"
        service.make_standby_key(s, actor, key, "bench")
    out = work / "usb"
    out.mkdir()
    t0 = time.monotonic()
    with inst.transaction(write=True) as s:
        written = service.write_bundle(s, inst.actor(s, "admin"), [out], day)
        summaries = written.summaries
    bundle_s = time.monotonic() - t0
    inst.close()
    (path,) = out.glob("*.tar.age")
    t0 = time.monotonic()
    subprocess.run(
        ["age", "-d", "-i", str(key), "-o", "/dev/null", str(path)],
        check=True,
        timeout=600,
    )
    age_s = time.monotonic() - t0
    result = {
        "size": args.size,
        "patients_booked": len(busiest),
        "summaries": summaries,
        "bundle_mb": round(path.stat().st_size / 1e6, 1),
        "bundle_s": round(bundle_s, 2),
        "per_patient_ms": round(bundle_s / max(1, len(busiest)) * 1000),
        "age_decrypt_s": round(age_s, 3),
        "bundle_over_age_decrypt": round(bundle_s / age_s, 1),
        "goal_s": GOAL_S,
    }
    print(json.dumps(result, indent=1))
    verdict = "met" if bundle_s < GOAL_S else "NOT met"
    print(
        f"{args.size} clinic, {len(busiest)} booked: bundle {bundle_s:.1f} s "
        f"(goal < {GOAL_S} s: {verdict}); age -d of the same bytes {age_s:.2f} s"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"downtime-{args.size}-{stamp}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
