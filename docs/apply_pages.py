"""Apply a mamori page delta to its full backup, with nothing but Python's standard library.

    age -d -i KEY db.full.sqlite.zst.age    | zstd -d -o mamori.db
    age -d -i KEY db.delta.pages.zst.age    | zstd -d -o delta.pages
    python3 apply_pages.py delta.pages mamori.db
    sqlite3 mamori.db 'PRAGMA integrity_check'
"""

import hashlib
import json
import struct
import sys

delta_path, db_path = sys.argv[1], sys.argv[2]
with open(delta_path, "rb") as delta, open(db_path, "r+b") as db:
    assert delta.readline() == b"mamori-pages-v1\n", "not a mamori page delta"
    head = json.loads(delta.readline())
    size = head["page_size"]
    assert hashlib.sha256(db.read()).hexdigest() == head["base_sha256"], "wrong full backup"
    db.truncate(size * head["page_count"])
    while record := delta.read(4):
        (page,) = struct.unpack(">I", record)
        db.seek(page * size)
        db.write(delta.read(size))
with open(db_path, "rb") as db:
    assert hashlib.sha256(db.read()).hexdigest() == head["sha256"], "result differs"
print("ok")
