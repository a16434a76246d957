"""Cost of writing each stored result through to the main SQLite file at once.

    python3 benches/store_checkpoint.py

The store (src/store.rs) runs WAL with synchronous=FULL and, since 2026-11-27,
wal_autocheckpoint=1, so results.db alone holds every result (a lost -wal or a plain copy
loses nothing). This times 300 inserts of a result-sized row with SQLite's default (1000
pages) and with 1, on the disk that holds /tmp. Python's sqlite3 with the same pragmas:
the cost is SQLite's and the disk's, not the Rust code's.
"""
import sqlite3, time, os, statistics
for ac in (1000, 1):
    p=f"/tmp/ckpt-{ac}.db"
    for suf in ("","-wal","-shm"):
        try: os.remove(p+suf)
        except FileNotFoundError: pass
    c=sqlite3.connect(p, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=FULL"); c.execute(f"PRAGMA wal_autocheckpoint={ac}")
    c.execute("CREATE TABLE r(id INTEGER PRIMARY KEY, created_at TEXT, source TEXT, sha TEXT, warnings TEXT, ba REAL)")
    ts=[]
    for i in range(300):
        t=time.perf_counter()
        c.execute("INSERT INTO r(created_at,source,sha,warnings,ba) VALUES (?,?,?,?,?)",("2026-11-27T13:00:00.000Z",f"hot-folder:/var/lib/boneage/inbox/{i:05}.png","a"*64,"w"*400,120.0))
        ts.append((time.perf_counter()-t)*1000)
    ts.sort()
    print(f"wal_autocheckpoint={ac}: p50 {statistics.median(ts):.2f} ms, p95 {ts[int(len(ts)*0.95)]:.2f} ms, db {os.path.getsize(p)} B, wal {os.path.getsize(p+'-wal') if os.path.exists(p+'-wal') else 0} B")
