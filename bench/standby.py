"""The read-only standby ready from an L generation (goal: under 3 minutes on 2 cores), beside a
plain ``age -d`` of the same bytes in the same run.

    python bench/standby.py                    # generates bench/results/instance-L-1 once (~12 min)
    python bench/standby.py --size S --docs-mb 0

A full backup to a local directory (without the readable copy, measured by
``bench/readable.py``), then:

* ``age -d`` (Debian's binary, the break-glass identity) of every object of that generation —
  the database, the instance files and every document — to /dev/null: the floor any restore
  that decrypts what it reads sits on;
* ``mamori standby --from … --identity …`` started cold on an empty directory, timed until its
  ``/healthz`` answers over HTTPS: verify the generation, fetch and decrypt every object,
  rebuild the database, every proof of ``mamori restore`` (hash, counts, the audit trail against
  its checkpoints, ``integrity_check``), then the server started on the copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backup import PASS, RESULTS, prepare_backups, sh  # noqa: E402
from chart_open import prepare  # noqa: E402

GOAL_S = 180


def _age_d(usb: Path, breakglass: Path) -> tuple[float, int]:
    """Every object of the target (one full generation) decrypted by ``age -d``; seconds and
    bytes."""
    objects = sorted(p for p in usb.rglob("*.age") if p.is_file())
    size = sum(p.stat().st_size for p in objects)
    t0 = time.monotonic()
    for p in objects:
        subprocess.run(
            ["age", "-d", "-i", str(breakglass), str(p)],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return time.monotonic() - t0, size


def _answers(url: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="L")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instance", type=Path, default=None)
    ap.add_argument("--docs-mb", type=int, default=1024)
    ap.add_argument("--work", type=Path, default=RESULTS / "standby-bench")
    ap.add_argument("--port", type=int, default=18443)
    args = ap.parse_args()
    home, _login, _password = prepare(args.size, args.seed, args.instance)
    home = home.resolve()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    env, usb, db_bytes, doc_bytes = prepare_backups(home, work, args.docs_mb)
    mamori = [sys.executable, "-m", "mamori"]
    t0 = time.monotonic()
    sh([*mamori, "backup", "run", "--full", "--no-readable"], env)
    backup_s = time.monotonic() - t0
    age_s, object_bytes = _age_d(usb, work / "keys" / "mamori-backup-breakglass.txt")

    root = work / "standby"
    log = (work / "standby.log").open("wb")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*mamori, "standby", "--from", f"dir:{usb}", "--identity",
         str(work / "keys" / "mamori-backup-primary.age"), "--dir", str(root),
         "--key-dir", str(work / "standby-keys"), "--port", str(args.port)],
        env={**os.environ, "MAMORI_BACKUP_PASSPHRASE": PASS}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        while not _answers(f"https://127.0.0.1:{args.port}/healthz"):
            if proc.poll() is not None:
                raise SystemExit((work / "standby.log").read_text())
            time.sleep(0.2)
        ready_s = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        log.close()
    result = {
        "size": args.size,
        "database_mb": round(db_bytes / 1e6),
        "documents_mb": round(doc_bytes / 1e6),
        "generation_objects_mb": round(object_bytes / 1e6),
        "full_backup_s": round(backup_s, 1),
        "age_d_all_objects_s": round(age_s, 1),
        "standby_ready_s": round(ready_s, 1),
        "standby_vs_age_d": round(ready_s / age_s, 2),
        "goal_s": GOAL_S,
    }
    print(json.dumps(result, indent=1))
    verdict = "met" if ready_s < GOAL_S else "NOT met"
    print(
        f"{args.size} clinic standby ready in {ready_s:.0f} s (goal < {GOAL_S} s: {verdict}); "
        f"age -d of the same bytes {age_s:.0f} s ({ready_s / age_s:.1f}x)"
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"standby-{args.size}-{stamp}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
