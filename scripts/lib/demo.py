#!/usr/bin/env python3
"""The measuring half of scripts/demo. Every figure it prints comes from the
demo database or the workers' logs; nothing is a fixed string.

    demo.py reset --admin-url URL --database NAME
        Drops and re-creates the demo database, so a re-run starts clean.
    demo.py specs --count N --fail-every K --out FILE
        Writes the producer's specs: N schedules of the plugin project's
        version 1.0.0 (3 polls, 1 s apart); every K-th fails at its second
        poll (K = 0: none).
    demo.py watch --db URL --count N [--log FILE ...] [--plugins FILE]
        Draws a progress bar of finalised schedules until all N are final,
        then prints the summary, with where each version ran (FILE is the
        output of `celerity plugins`). Exits 1 if progress stops for 60 s.
"""

import argparse
import json
import sys
import time
import urllib.parse
import uuid

import pymysql

SUCCESS, FAIL = 4, 5
STALL_SECS = 60


def connect(url, database=True):
    u = urllib.parse.urlparse(url)
    return pymysql.connect(host=u.hostname, port=u.port or 3306, user=urllib.parse.unquote(u.username or "root"),
                           password=urllib.parse.unquote(u.password or ""),
                           database=u.path.lstrip("/") if database else None, autocommit=True)


def reset(opts):
    db = connect(opts.admin_url, database=False)
    with db.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{opts.database}`")
        cur.execute(f"CREATE DATABASE `{opts.database}` CHARACTER SET utf8mb4")


def specs(opts):
    run = uuid.uuid4().hex[:8]
    out = []
    for i in range(opts.count):
        inputs = {"polls": 3, "interval": 1}
        if opts.fail_every and i % opts.fail_every == opts.fail_every - 1:
            inputs["fail_at"] = 3
        out.append({"trace_id": f"demo{run}{i:06d}", "version": "1.0.0", "inputs": inputs, "context": {}})
    with open(opts.out, "w") as f:
        json.dump(out, f)


def one(cur, sql):
    cur.execute(sql)
    return cur.fetchone()


def bar(done, total, width=40):
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} final"


def watch(opts):
    db = connect(opts.db)
    started = time.monotonic()
    last, last_change = -1, started
    while True:
        with db.cursor() as cur:
            done, ok, failed = one(cur, f"SELECT COUNT(*), COALESCE(SUM(state = {SUCCESS}), 0),"
                                        f" COALESCE(SUM(state = {FAIL}), 0) FROM schedule_schedule"
                                        f" WHERE state IN ({SUCCESS}, {FAIL})")
        done = int(done)
        sys.stderr.write(f"\r{bar(done, opts.count)}  SUCCESS {int(ok)}  FAIL {int(failed)}  "
                         f"{time.monotonic() - started:5.1f} s")
        sys.stderr.flush()
        if done >= opts.count:
            break
        now = time.monotonic()
        if done != last:
            last, last_change = done, now
        elif now - last_change > STALL_SECS:
            sys.stderr.write(f"\nno schedule finalised for {STALL_SECS} s; stopping\n")
            summary(db, opts)
            return 1
        time.sleep(0.25)
    sys.stderr.write("\n")
    summary(db, opts)
    return 0


def summary(db, opts):
    with db.cursor() as cur:
        cur.execute("SELECT state, COUNT(*) FROM schedule_schedule GROUP BY state ORDER BY state")
        by_state = {int(s): int(n) for s, n in cur.fetchall()}
        polls, first, last = one(cur, "SELECT COUNT(*), MIN(started_at), MAX(ended_at) FROM celerity_attempt")
        cur.execute("SELECT hostname, COUNT(*) FROM celerity_attempt GROUP BY hostname ORDER BY hostname")
        per_worker = cur.fetchall()
        cur.execute("SELECT plugin_version, COUNT(*) FROM schedule_schedule GROUP BY plugin_version ORDER BY 1")
        per_version = cur.fetchall()
    runs = {}
    if opts.plugins:
        with open(opts.plugins) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3:
                    runs[parts[0]] = f"{parts[1]}: {parts[2]}"
    names = {2: "POLL", 3: "CALLBACK", SUCCESS: "SUCCESS", FAIL: "FAIL"}
    retries = 0
    for path in opts.log:
        with open(path, errors="replace") as f:
            retries += sum("retry published" in line for line in f)
    span = (last - first).total_seconds() if polls and last and first else 0.0
    rows = [("schedules", str(opts.count))]
    rows += [(names.get(s, str(s)), str(n)) for s, n in sorted(by_state.items())]
    rows += [("polls", str(polls)),
             ("polls/s (first poll started to last ended)", f"{polls / span:.0f}" if span > 0 else "n/a"),
             ("retries seen (worker logs)", str(retries))]
    rows += [(f"share of {host}", f"{n} polls ({100 * n / polls:.0f}%)") for host, n in per_worker]
    rows += [(f"version {v} ran in", f"{runs.get(v, 'unknown')} ({n} schedules)") for v, n in per_version]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["reset", "specs", "watch"])
    p.add_argument("--admin-url")
    p.add_argument("--database")
    p.add_argument("--count", type=int)
    p.add_argument("--fail-every", type=int, default=0)
    p.add_argument("--out")
    p.add_argument("--db")
    p.add_argument("--log", action="append", default=[])
    p.add_argument("--plugins")
    opts = p.parse_args()
    sys.exit({"reset": reset, "specs": specs, "watch": watch}[opts.mode](opts) or 0)


if __name__ == "__main__":
    main()
