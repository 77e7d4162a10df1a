#!/usr/bin/env python3
"""Real Python Celery on the other end of the interop tests.

    interop.py worker  --broker URL --queue Q --out FILE
        Runs a Celery worker (solo pool) on Q with the framework's topology.
        Every task it runs is appended to FILE as one JSON line: what Celery
        handed the task (id, name, args, kwargs, retries, eta, custom headers,
        delivery info) and when it ran.

    interop.py produce --broker URL --queue Q
        Publishes tasks through the real Celery API, the way the framework's
        producers do, and prints one JSON list of what was sent.
"""

import argparse
import datetime as dt
import decimal
import json
import sys
import time
import uuid

from kombu.utils.json import dumps as kombu_dumps

from framework import SCHEDULE_TASK, make_app

RECORD_TASK = "celerity.interop.record"
CUSTOM_HEADER = "x-celerity-test"


def jsonable(value):
    return json.loads(kombu_dumps(value))


def worker(opts):
    app = make_app("interop", opts.broker, opts.queue)

    def record(task, args, kwargs):
        req = task.request
        eta = req.eta
        line = {
            "id": req.id,
            "task": task.name,
            "args": jsonable(list(args)),
            "kwargs": jsonable(kwargs),
            "retries": req.retries,
            "eta": eta.isoformat() if hasattr(eta, "isoformat") else eta,
            "custom_header": req.get(CUSTOM_HEADER),
            "root_id": req.root_id,
            "parent_id": req.parent_id,
            "correlation_id": req.correlation_id,
            "priority": (req.delivery_info or {}).get("priority"),
            "ran_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        with open(opts.out, "a") as f:
            f.write(json.dumps(line) + "\n")

    @app.task(bind=True, name=RECORD_TASK)
    def record_task(self, *args, **kwargs):
        record(self, args, kwargs)

    @app.task(bind=True, name=SCHEDULE_TASK)
    def schedule(self, *args, **kwargs):
        record(self, args, kwargs)

    app.worker_main(["worker", "-P", "solo", "-Q", opts.queue, "--without-mingle", "--without-gossip",
                     "--without-heartbeat", "-l", "WARNING", "-n", f"interop-{uuid.uuid4().hex[:6]}@%h"])


def produce(opts):
    app = make_app("interop", opts.broker, opts.queue)
    shanghai = dt.timezone(dt.timedelta(hours=8))
    eta = dt.datetime(2026, 11, 23, 20, 0, 0, 250000, tzinfo=shanghai)
    expires = dt.datetime(2030, 1, 1, 0, 0, 0, tzinfo=dt.timezone.utc)
    sent = []

    def send(name, args=None, kwargs=None, **options):
        result = app.send_task(name, args=args, kwargs=kwargs, queue=opts.queue, **options)
        sent.append({
            "id": result.id,
            "task": name,
            "args": jsonable(list(args or [])),
            "kwargs": jsonable(kwargs or {}),
            "eta": options["eta"].isoformat() if "eta" in options else None,
            "expires": options["expires"].isoformat() if "expires" in options else None,
            "priority": options.get("priority", 0),
            "custom_header": (options.get("headers") or {}).get(CUSTOM_HEADER),
        })

    trace_id = uuid.uuid4().hex
    send(SCHEDULE_TASK, kwargs={"trace_id": trace_id})
    send(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, eta=eta, priority=9)
    send(RECORD_TASK, args=[1, 2.5, "three", None, [True, False]],
         kwargs={"when": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
                 "amount": decimal.Decimal("10.25"), "ref": uuid.UUID(int=42), "raw": b"\x00\xff"},
         expires=expires, headers={CUSTOM_HEADER: "from-python"})
    json.dump(sent, sys.stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["worker", "produce"])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--out")
    opts = parser.parse_args()
    {"worker": worker, "produce": produce}[opts.mode](opts)


if __name__ == "__main__":
    main()
