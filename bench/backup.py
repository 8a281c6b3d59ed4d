"""mamori backup vs restic on the same generated clinic, side by side in one run.

    python bench/backup.py [--instance bench/results/instance-M-1] [--docs-mb 1024]

Dataset: a copy (in ``--work``; the source is never changed) of an instance made by
``bench/chart_open.py`` (M clinic by default) plus synthetic
"scans" (incompressible, 0.1-3 MB each) stored through mamori's document store until
``--docs-mb`` is reached. Steps, each timed with a cold-ish page cache (``drop_caches`` when
permitted) and ``--warm-gb`` of guest memory touched just before (see ``warm_memory``):

1. full backup: ``mamori backup run --full`` to a local directory vs a SQLite snapshot
   (online backup API, as restic cannot snapshot a live database) + ``restic backup``,
   ``--repeat`` times each (default 3), alternating, each into an empty target/repository;
   the medians are compared (single runs on this virtual disk vary by ±15 %);
2. the "1 %" change: 1 % of observation and progress-note rows rewritten (random sealed bytes
   of the same length, directly in SQLite — a stand-in for a day of edits touching pages all
   over the file) and ~10 MB of new scans; then the next backup of each (mamori writes a page
   delta, restic deduplicates 1 MiB-ish chunks);
3. full restore: ``mamori restore`` (which also verifies: SHA-256, integrity_check, counts,
   audit trail, every document) vs ``restic restore`` (files only).

Prints MB/s, sizes and ratios. Needs Debian's ``restic``. ``--restore-only`` repeats step 3
on what a previous run left in ``--work``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PASS = "bench passphrase for the offline key"  # noqa: S105 - synthetic bench key


def sh(cmd: list[str], env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    return out.stdout


def drop_caches() -> None:
    subprocess.run(["sync"], check=False)
    with contextlib.suppress(OSError):  # only as root
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


WARM_GB = 0.0  # set by main(): guest memory touched before every timed step


def warm_memory(gb: float) -> None:
    """Touch ``gb`` of memory in a child process, then free it. This virtual machine hands
    memory that has been free for ~30 s back to its host (free page reporting), and the next
    use of such a page costs the guest a fault into the host: writing 3 GB into a fresh page
    cache took 9-10 s of system time instead of 0.8-1.1 s (``drop_caches``, then a 3 GB file,
    measured 2026-11-23). Whichever tool ran first after a pause paid that for both, so every
    timed step starts with the memory it will fill already touched, as on a real server."""
    if gb <= 0:
        return
    code = (
        "import mmap\n"
        f"m = mmap.mmap(-1, {int(gb * (1 << 30))})\n"
        "z = bytes(1 << 20)\n"
        "while m.tell() < len(m): m.write(z[: len(m) - m.tell()])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def cold(fn: Callable[[], object]) -> float:
    """Seconds ``fn`` takes, started with a cold page cache (and warm guest memory)."""
    drop_caches()
    warm_memory(WARM_GB)
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def add_scans(home: Path, megabytes: int, seed: int) -> int:
    """Random 'scanned PDFs' through the document store (encrypted like real uploads)."""
    from mamori.documents.store import DocumentStore
    from mamori.instance import open_instance

    inst = open_instance(str(home))
    store = DocumentStore(inst.settings.documents_dir, inst.db)
    rng = random.Random(seed)
    total = 0
    while total < megabytes * 1_000_000:
        size = rng.randint(100_000, 3_000_000)
        store.put(rng.randbytes(size))
        total += size
    inst.db.dispose()
    return total


def one_percent_change(home: Path) -> None:
    con = sqlite3.connect(home / "data" / "mamori.db")
    for table in ("observation", "progress_note"):
        con.execute(
            f"UPDATE {table} SET sealed = randomblob(length(sealed)) "  # noqa: S608
            "WHERE abs(random()) % 100 = 0"
        )
    con.commit()
    con.close()


def working_copy(source: Path, work: Path) -> Path:
    """A fresh ``work`` directory holding a copy of the instance: the bench adds scans,
    rewrites 1 % of rows with random bytes (no longer valid ciphertext) and rewrites the
    backup settings, and must do all that to its own copy — on the shared M instance, the
    random bytes had broken the seals of the rows ``bench/chart_open.py`` then read."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    home = work / "instance"
    print(f"copying {source} …", flush=True)
    shutil.copytree(source, home, ignore=shutil.ignore_patterns("backup"))
    return home


def prepare_backups(home: Path, work: Path, docs_mb: int) -> tuple[dict[str, str], Path, int, int]:
    """A fresh ``work`` directory, scans up to ``docs_mb``, new offline keys in ``work/keys``
    and one local-directory target ``work/usb``; the environment for ``mamori`` commands, the
    target, and the database and document bytes."""
    env = {"MAMORI_HOME": str(home), "MAMORI_BACKUP_PASSPHRASE": PASS}
    docs_now = du(home / "documents") if (home / "documents").exists() else 0
    if docs_now < docs_mb * 900_000:
        print(f"adding {docs_mb} MB of synthetic scans …", flush=True)
        add_scans(home, docs_mb - docs_now // 1_000_000, seed=1)
    shutil.rmtree(home / "backup", ignore_errors=True)
    (home / "backup").mkdir(mode=0o700)
    sh([sys.executable, "-m", "mamori", "backup", "keygen", "--out", str(work / "keys")], env)
    toml = (home / "mamori.toml").read_text()
    toml = toml.split("\n# bench target\n")[0]
    usb = work / "usb"
    usb.mkdir()
    toml += f'\n# bench target\n[[backup.targets]]\nname = "bench"\nkind = "dir"\npath = "{usb}"\n'
    (home / "mamori.toml").write_text(toml)
    db_bytes = (home / "data" / "mamori.db").stat().st_size
    doc_bytes = du(home / "documents")
    print(f"dataset: database {db_bytes / 1e6:.0f} MB + documents {doc_bytes / 1e6:.0f} MB")
    return env, usb, db_bytes, doc_bytes


def restore_steps(out: str) -> dict[str, float]:
    """``steps (s) / …: verify 0.3, database 9.1, …`` from ``mamori restore``'s output."""
    line = next(x for x in out.splitlines() if x.startswith("steps (s)"))
    pairs = [p.strip().split(" ") for p in line.split(":", 1)[1].split(",")]
    return {name: float(value) for name, value in pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--instance", type=Path, default=RESULTS / "instance-M-1")
    ap.add_argument("--docs-mb", type=int, default=1024)
    ap.add_argument("--work", type=Path, default=RESULTS / "backup-bench")
    ap.add_argument("--repeat", type=int, default=3, help="full backups and restores of each")
    ap.add_argument(
        "--restore-only", action="store_true", help="only the restores, from a previous run's work"
    )
    ap.add_argument(
        "--warm-gb",
        type=float,
        default=8.0,
        help="guest memory touched before every timed step (0: as before 2026-11-23)",
    )
    args = ap.parse_args()
    global WARM_GB
    WARM_GB = args.warm_gb
    if not shutil.which("restic"):
        sys.exit("restic not installed (apt install restic)")
    if args.restore_only:
        restore_only(args.work.resolve(), args.repeat)
        return
    source = args.instance.resolve()
    if not (source / "mamori.toml").exists():
        sys.exit(f"{source}: make it first with `python bench/chart_open.py --size M`")
    work = args.work.resolve()
    home = working_copy(source, work)
    env, usb, db_bytes, doc_bytes = prepare_backups(home, work, args.docs_mb)
    dataset = db_bytes + doc_bytes
    renv = {"RESTIC_PASSWORD": PASS, "RESTIC_REPOSITORY": str(work / "restic")}
    sh(["restic", "init"], renv)
    rows: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> float:
        rows[name] = cold(fn)
        return rows[name]

    mamori = [sys.executable, "-m", "mamori"]
    snap = work / "snapshot" / "mamori.db"
    snap.parent.mkdir()

    def restic_backup() -> None:
        snap.unlink(missing_ok=True)
        src, dst = sqlite3.connect(home / "data" / "mamori.db"), sqlite3.connect(snap)
        dst.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")  # as mamori does
        src.backup(dst)
        src.close()
        dst.close()
        sh(["restic", "backup", "-q", str(snap.parent), str(home / "documents")], renv)

    fulls: dict[str, list[float]] = {"mamori full": [], "restic full": []}
    for i in range(args.repeat):
        if i:  # every full into an empty target and an empty repository
            for child in usb.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            shutil.rmtree(work / "restic")
            sh(["restic", "init"], renv)
        fulls["mamori full"].append(
            timed(
                "mamori full",
                lambda: sh([*mamori, "backup", "run", "--full", "--no-readable"], env),
            )
        )
        fulls["restic full"].append(timed("restic full", restic_backup))
    for name, runs in fulls.items():
        rows[name] = statistics.median(runs)
    mamori_full = du(usb)
    restic_full = du(work / "restic")
    one_percent_change(home)
    add_scans(home, 10, seed=2)
    timed("mamori incr", lambda: sh([*mamori, "backup", "run", "--no-readable"], env))
    mamori_incr = du(usb) - mamori_full
    timed("restic incr", restic_backup)
    restic_incr = du(work / "restic") - restic_full
    restores = restore_rounds(work, usb, renv, args.repeat)
    rows.update({k: v for k, v in restores.items() if isinstance(v, float)})
    steps: dict[str, float] = restores["steps"]
    mb = dataset / 1e6
    result = {
        "dataset_mb": round(mb),
        "mamori_full_s": round(rows["mamori full"], 1),
        "restic_full_s": round(rows["restic full"], 1),
        "mamori_full_runs_s": [round(x, 1) for x in fulls["mamori full"]],
        "restic_full_runs_s": [round(x, 1) for x in fulls["restic full"]],
        "mamori_full_MBps": round(mb / rows["mamori full"]),
        "restic_full_MBps": round(mb / rows["restic full"]),
        "mamori_full_stored_mb": round(mamori_full / 1e6),
        "restic_full_stored_mb": round(restic_full / 1e6),
        "mamori_incr_s": round(rows["mamori incr"], 1),
        "restic_incr_s": round(rows["restic incr"], 1),
        "mamori_incr_mb": round(mamori_incr / 1e6, 1),
        "restic_incr_mb": round(restic_incr / 1e6, 1),
        "incr_size_ratio_restic_over_mamori": round(restic_incr / max(mamori_incr, 1), 1),
        "mamori_restore_s": round(rows["mamori restore"], 1),
        "restic_restore_s": round(rows["restic restore"], 1),
        "mamori_restore_MBps": round(mb / rows["mamori restore"]),
        "mamori_restore_steps_s": steps,
        # what restic's restore does too: fetch, decrypt, check every object's hash, write
        "mamori_restore_data_s": round(steps["verify"] + steps["database"] + steps["documents"], 1),
        "restic_restore_MBps": round(mb / rows["restic restore"]),
        "mamori_restore_runs_s": restores["mamori runs"],
        "restic_restore_runs_s": restores["restic runs"],
        # restic returns with its files still in the page cache; mamori's restore returns once
        # they are on the disk (fsync, sync): restic followed by `sync` is the like-for-like
        "restic_restore_synced_s": round(rows["restic restore+sync"], 1),
        "restic_restore_synced_MBps": round(mb / rows["restic restore+sync"]),
    }
    print(json.dumps(result, indent=1))
    full_ratio = rows["restic full"] / rows["mamori full"]
    print(
        f"full backup (median of {args.repeat}): mamori {result['mamori_full_MBps']} MB/s vs "
        f"restic {result['restic_full_MBps']} MB/s (ratio {full_ratio:.2f}×)\n"
        f"next backup after ~1 % change: mamori {result['mamori_incr_mb']} MB vs restic "
        f"{result['restic_incr_mb']} MB ({result['incr_size_ratio_restic_over_mamori']}× smaller)\n"
        f"{restore_line(rows, mb, args.repeat)}\n"
        f"  of which fetch+decrypt+hash checks (restic's work): "
        f"{result['mamori_restore_data_s']} s = "
        f"{mb / max(result['mamori_restore_data_s'], 0.1):.0f} MB/s "
        f"(ratio {rows['restic restore'] / max(result['mamori_restore_data_s'], 0.1):.2f}×); "
        f"steps {steps}"
    )
    save(result, "backup", work)


def restore_rounds(work: Path, usb: Path, renv: dict[str, str], repeat: int) -> dict[str, Any]:
    """``mamori restore`` and ``restic restore`` of the latest generation/snapshot, alternated
    ``repeat`` times, each into an empty directory from a cold page cache; the medians, the
    single runs, mamori's steps in its median run, and restic's time including ``sync``."""
    ident = str(work / "keys" / "mamori-backup-primary.age")
    restore = [
        sys.executable, "-m", "mamori", "restore", "--from", f"dir:{usb}", "--identity", ident,
        "--to", str(work / "restored"), "--key-dir", str(work / "rkeys"),
    ]  # fmt: skip
    restic = ["restic", "restore", "latest", "-q", "--target", str(work / "restic-restored")]
    runs: dict[str, list[float]] = {"mamori": [], "restic": [], "synced": []}
    steps: list[tuple[float, dict[str, float]]] = []
    env = {"MAMORI_BACKUP_PASSPHRASE": PASS, "COLUMNS": "400"}
    for _ in range(repeat):
        for name in ("restored", "restic-restored", "rkeys"):
            shutil.rmtree(work / name, ignore_errors=True)
        printed: list[str] = []
        took = cold(lambda out=printed: out.append(sh(restore, env)))  # type: ignore[misc]
        runs["mamori"].append(took)
        steps.append((took, restore_steps(printed[0])))
        took = cold(lambda: sh(restic, renv))
        t0 = time.monotonic()
        subprocess.run(["sync"], check=True)
        runs["restic"].append(took)
        runs["synced"].append(took + time.monotonic() - t0)
    steps.sort(key=lambda pair: pair[0])
    return {
        "mamori restore": statistics.median(runs["mamori"]),
        "restic restore": statistics.median(runs["restic"]),
        "restic restore+sync": statistics.median(runs["synced"]),
        "mamori runs": [round(x, 1) for x in runs["mamori"]],
        "restic runs": [round(x, 1) for x in runs["restic"]],
        "steps": steps[len(steps) // 2][1],
    }


def restore_only(work: Path, repeat: int) -> None:
    """The restores again, on the target and repository a previous run left in ``work``."""
    usb = work / "usb"
    if not (usb.exists() and (work / "restic").exists() and (work / "keys").exists()):
        sys.exit(f"{work}: no previous run to restore from (run without --restore-only first)")
    renv = {"RESTIC_PASSWORD": PASS, "RESTIC_REPOSITORY": str(work / "restic")}
    r = restore_rounds(work, usb, renv, repeat)
    mb = (du(work / "restored" / "data") + du(work / "restored" / "documents")) / 1e6
    result = {
        "dataset_mb": round(mb),
        "mamori_restore_runs_s": r["mamori runs"],
        "restic_restore_runs_s": r["restic runs"],
        "mamori_restore_MBps": round(mb / r["mamori restore"]),
        "restic_restore_MBps": round(mb / r["restic restore"]),
        "restic_restore_synced_MBps": round(mb / r["restic restore+sync"]),
        "mamori_restore_steps_s": r["steps"],
    }
    print(json.dumps(result, indent=1))
    print(restore_line(r, mb, repeat))
    save(result, "backup-restore", work)


def restore_line(r: dict[str, Any], mb: float, repeat: int) -> str:
    mamori = r["mamori restore"]
    return (
        f"full restore (verified; medians of {repeat}): mamori {mb / mamori:.0f} MB/s vs restic "
        f"{mb / r['restic restore']:.0f} MB/s (ratio {r['restic restore'] / mamori:.2f}×); "
        f"restic + sync {mb / r['restic restore+sync']:.0f} MB/s (ratio "
        f"{r['restic restore+sync'] / mamori:.2f}×)"
    )


def save(result: dict[str, Any], name: str, work: Path) -> None:
    """The result as ``results/<name>-<time>.json``; the restored copies go."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(result, indent=1))
    shutil.rmtree(work / "restored", ignore_errors=True)
    shutil.rmtree(work / "restic-restored", ignore_errors=True)


if __name__ == "__main__":
    main()
