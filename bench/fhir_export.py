"""Bulk FHIR export speed (goal: at least 10,000 resources a second), beside a plain read of the
same rows in the same run.

    python bench/fhir_export.py                       # the S clinic (generated once)
    python bench/fhir_export.py --size L              # the L clinic (generated once, ~12 min)

Three figures on one instance:

* **floor** — Python's ``sqlite3`` reads every row of the nine record tables the export maps and
  writes each as a JSON array line: no decryption, no FHIR mapping, no access rules, no audit;
* **mamori, one process** — ``mamori.fhir.bulk.export_ndjson`` in this process: every chunk of
  patients admitted (permission, restriction) and audited, each kind read in one statement, every
  row's ciphertext opened, mapped to JP Core FHIR, written as NDJSON;
* **mamori, N processes** — the same, the chunks spread over ``--workers`` processes (what
  ``mamori export fhir`` does; default: the CPU count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backup import RESULTS  # noqa: E402
from chart_open import prepare  # noqa: E402

GOAL = 10_000
TABLES = (
    "patient", "coverage", "encounter", "condition", "medication_request",
    "allergy_intolerance", "observation", "document", "progress_note",
)  # fmt: skip


def floor(db: Path, out: Path) -> tuple[float, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    t0 = time.monotonic()
    rows = 0
    with out.open("w", encoding="utf-8") as fh:
        for table in TABLES:
            for row in con.execute(f"SELECT * FROM {table}"):  # noqa: S608 - fixed names
                fh.write(json.dumps([v.hex() if isinstance(v, bytes) else v for v in row]) + "\n")
                rows += 1
    con.close()
    return time.monotonic() - t0, rows


def mamori_export(home: Path, out: Path, workers: int) -> tuple[float, int]:
    from mamori.fhir.bulk import export_ndjson
    from mamori.instance import open_instance

    inst = open_instance(str(home))
    try:
        t0 = time.monotonic()
        with inst.transaction(write=False) as s:
            actor = dataclasses.replace(inst.actor(s, "admin"), channel="cli")
            counts = export_ndjson(s, actor, out, reauth_minutes=5, home=home, workers=workers)
        seconds = time.monotonic() - t0
    finally:
        inst.close()
    return seconds, sum(v for k, v in counts.items() if k != "restricted")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="S")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instance", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", type=Path, default=RESULTS / "fhir-export-bench")
    args = ap.parse_args()
    home, _login, _password = prepare(args.size, args.seed, args.instance)
    home = home.resolve()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    floor_s, rows = floor(home / "data" / "mamori.db", work / "floor.jsonl")
    one_s, resources = mamori_export(home, work / "one", 1)
    many_s, again = mamori_export(home, work / "many", args.workers)
    assert again == resources
    for f in (work / "one").glob("*.ndjson"):
        assert f.read_bytes() == (work / "many" / f.name).read_bytes(), f.name
    result = {
        "size": args.size,
        "rows": rows,
        "resources": resources,
        "floor_rows_per_s": round(rows / floor_s),
        "one_process_per_s": round(resources / one_s),
        "workers": args.workers,
        "workers_per_s": round(resources / many_s),
        "seconds": {"floor": round(floor_s, 1), "one": round(one_s, 1), "many": round(many_s, 1)},
        "goal_per_s": GOAL,
    }
    print(json.dumps(result, indent=1))
    verdict = "met" if resources / many_s >= GOAL else "NOT met"
    print(
        f"{args.size} clinic: {resources} resources; {args.workers} processes "
        f"{resources / many_s:,.0f}/s (goal ≥ {GOAL:,}/s: {verdict}); one process "
        f"{resources / one_s:,.0f}/s; plain sqlite3 rows → JSON {rows / floor_s:,.0f}/s"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"fhir-export-{args.size}-{stamp}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
