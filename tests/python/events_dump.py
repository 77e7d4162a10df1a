#!/usr/bin/env python3
"""Receives Celery events with Celery's own receiver for SECONDS, or until a
worker-offline event, and prints them as one JSON list.

    events_dump.py BROKER_URL SECONDS

Prints "ready" on stderr once its queue is bound, so a caller can start
the worker after that.
"""

import json
import socket
import sys
import time

from celery import Celery


def main():
    broker, seconds = sys.argv[1], float(sys.argv[2])
    app = Celery("events_dump", broker=broker)
    got = []
    deadline = time.monotonic() + seconds
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": got.append})
        # The context declares and binds the receiver's queue, as `capture` does.
        with recv.consumer_context(wakeup=False) as (connection, _, _):
            print("ready", file=sys.stderr, flush=True)
            while time.monotonic() < deadline and not any(e.get("type") == "worker-offline" for e in got):
                try:
                    connection.drain_events(timeout=0.5)
                except (socket.timeout, TimeoutError):
                    continue
    json.dump(got, sys.stdout)


if __name__ == "__main__":
    main()
