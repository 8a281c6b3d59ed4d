"""The readable copy in the backup (escrow): the L clinic's daily copy (goal: under 10 minutes on
2 cores) and its weekly full one, beside a plain read of the same rows in the same run.

    python bench/readable.py                   # the L clinic (generated once, ~12 min)
    python bench/readable.py --size S

On one instance, in this process, as ``mamori backup run`` makes them (``continuity.escrow``):

* **floor** — Python's ``sqlite3`` reads every row of the nine record tables and writes each as
  a JSON line (no decryption, no mapping, no access rules, no audit, no PDF);
* **full** — every record as FHIR NDJSON, the chart PDF of every patient seen within three
  years, all sealed (zstd + age) into one object;
* **daily** — the records changed in the last day of the clinic's data and the charts of
  those patients, sealed the same way.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backup import RESULTS  # noqa: E402
from chart_open import prepare  # noqa: E402
from fhir_export import floor  # noqa: E402

GOAL_DAILY_S = 600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="L")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instance", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=RESULTS / "readable-bench")
    ap.add_argument("--skip-full", action="store_true", help="only the daily copy")
    args = ap.parse_args()
    import pyrage
    from sqlalchemy import func, select

    from mamori.clinical.models import Observation
    from mamori.continuity import escrow
    from mamori.instance import open_instance

    home, _login, _password = prepare(args.size, args.seed, args.instance)
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    floor_s, rows = floor(home / "data" / "mamori.db", work / "floor.jsonl")
    recipients = [pyrage.x25519.Identity.generate().to_public()]
    inst = open_instance(str(home))
    result: dict[str, object] = {"size": args.size, "rows": rows, "floor_s": round(floor_s, 1)}
    try:
        with inst.transaction(write=False) as s:
            newest = s.scalar(select(func.max(Observation.updated_at)))
        assert newest is not None
        since = newest - dt.timedelta(days=1)  # the clinic's last day of data
        runs = [("daily", escrow.Due(full=False, since=since))]
        if not args.skip_full:
            runs.append(("full", escrow.Due(full=True, since=None)))
        for name, when in runs:
            t0 = time.monotonic()
            with inst.transaction(write=False) as s:
                actor = escrow.escrow_actor(s, None)
                sealed, meta = escrow.write(
                    s,
                    actor,
                    work / f"{name}.tar.zst.age",
                    recipients,
                    when,
                    dt.datetime.now(dt.UTC),
                )
            seconds = time.monotonic() - t0
            resources = sum(meta["resources"].values())  # type: ignore[union-attr]
            result[name] = {
                "seconds": round(seconds, 1),
                "resources": resources,
                "charts": meta["charts"],
                "patients_changed": meta["patients_changed"],
                "sealed_mb": round(sealed.size / 1e6, 1),
                "steps_s": meta["seconds"],
                "fhir_resources_per_s": round(resources / max(meta["seconds"]["fhir"], 0.01)),  # type: ignore[index]
            }
            print(f"{name}: {json.dumps(result[name])}", flush=True)
    finally:
        inst.close()
    result["floor_rows_per_s"] = round(rows / floor_s)
    result["goal_daily_s"] = GOAL_DAILY_S
    print(json.dumps(result, indent=1))
    daily = result["daily"]
    assert isinstance(daily, dict)
    verdict = "met" if daily["seconds"] < GOAL_DAILY_S else "NOT met"
    print(
        f"{args.size} clinic daily readable copy: {daily['seconds']:.0f} s "
        f"(goal < {GOAL_DAILY_S} s: {verdict}); plain sqlite3 rows → JSON {rows / floor_s:,.0f}/s"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"readable-{args.size}-{stamp}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
