#!/usr/bin/env python3
"""The Python contender of scripts/bench: a plain Celery 5 worker running the
framework's schedule task (framework_app.run_schedule: load the row, run the
example plugin, save the same columns, enqueue the next poll) with one
pymysql connection per thread or process.

    bench_worker.py --broker URL --db URL --pool threads|prefork --concurrency N
"""

import argparse
import threading

from framework import SCHEDULE_TASK, framework_queue, make_app
from framework_app import connect, run_schedule


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--pool", choices=["threads", "prefork", "solo"], default="threads")
    parser.add_argument("--concurrency", type=int, default=100)
    opts = parser.parse_args()

    app = make_app("bench", opts.broker, "plugin_schedule")
    app.conf.task_queues = [framework_queue("plugin_schedule")]
    local = threading.local()

    def db():
        # pymysql connections are not thread-safe; prefork children each open their own.
        if getattr(local, "db", None) is None:
            local.db = connect(opts.db)
        return local.db

    @app.task(name=SCHEDULE_TASK, ignore_result=True)
    def schedule(trace_id):
        run_schedule(app, db(), trace_id)

    app.worker_main(["worker", "-P", opts.pool, "-c", str(opts.concurrency), "-Q", "plugin_schedule",
                     "--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "WARNING"])


if __name__ == "__main__":
    main()
