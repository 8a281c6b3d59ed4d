"""RTO of a complete restore drill for the L clinic (goal: under 10 minutes here).

    python bench/drill.py                 # generates bench/results/instance-L-1 once (~12 min)
    python bench/drill.py --size M --instance bench/results/instance-M-1

A full backup to a local directory, then ``mamori drill`` from it: verify every manifest,
decrypt and hash every object, rebuild the database and the document store in a scratch
directory, ``PRAGMA integrity_check``, row counts against the manifest, the whole audit trail
against its signed checkpoints — timed from start to a verified instance, and signed. Prints the
drill's own RTO, its steps and the data sizes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backup import PASS, RESULTS, prepare_backups, sh  # noqa: E402
from chart_open import prepare  # noqa: E402

GOAL_S = 600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="L")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instance", type=Path, default=None)
    ap.add_argument("--docs-mb", type=int, default=1024)
    ap.add_argument("--work", type=Path, default=RESULTS / "drill-bench")
    args = ap.parse_args()
    home, _login, _password = prepare(args.size, args.seed, args.instance)
    home = home.resolve()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)  # a previous run's keys, target and reports
    env, usb, db_bytes, doc_bytes = prepare_backups(home, work, args.docs_mb)
    mamori = [sys.executable, "-m", "mamori"]
    t0 = time.monotonic()
    sh([*mamori, "backup", "run", "--full", "--no-readable"], env)
    backup_s = time.monotonic() - t0
    ident = str(work / "keys" / "mamori-backup-primary.age")
    reports = work / "drills"
    t0 = time.monotonic()
    sh(
        [*mamori, "drill", "--from", f"dir:{usb}", "--identity", ident,
         "--report-dir", str(reports)],
        {"MAMORI_BACKUP_PASSPHRASE": PASS, "MAMORI_HOME": str(home), "COLUMNS": "400"},
    )  # fmt: skip
    wall = time.monotonic() - t0
    report = json.loads(next(reports.glob("drill-*.json")).read_text())
    result = {
        "size": args.size,
        "database_mb": round(db_bytes / 1e6),
        "documents_mb": round(doc_bytes / 1e6),
        "full_backup_s": round(backup_s, 1),
        "full_backup_MBps": round((db_bytes + doc_bytes) / 1e6 / backup_s),
        "drill_rto_s": report["rto_seconds"],
        "drill_command_s": round(wall, 1),
        "drill_steps_s": report["steps_seconds"],
        "audit_events_verified": report["audit_events_verified"],
        "documents_restored": report["documents_restored"],
        "goal_s": GOAL_S,
    }
    print(json.dumps(result, indent=1))
    verdict = "met" if report["rto_seconds"] < GOAL_S else "NOT met"
    print(
        f"{args.size} clinic drill: RTO {report['rto_seconds']:.0f} s "
        f"(goal < {GOAL_S} s: {verdict}); full backup {result['full_backup_MBps']} MB/s"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"drill-{args.size}-{stamp}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
