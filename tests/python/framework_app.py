#!/usr/bin/env python3
"""The plugin framework's producer and Python worker, for comparison tests.

    framework_app.py produce --broker URL --db URL --specs JSON
        (--specs @FILE reads the JSON from FILE.) For each spec {"trace_id", "version", "inputs", "context_data"?}, does
        what the framework's executor does: runs the plugin's first execute
        (invoke_count 1), inserts the schedule row if it polls or waits for a
        callback, and enqueues the `schedule` task with
        apply_async(kwargs={"trace_id": ...}, countdown=interval,
        queue="plugin_schedule"). Prints the states it left.

    framework_app.py worker --broker URL --db URL
        A Python Celery worker running the framework's schedule and callback
        tasks as bk-plugin-framework 2.3.15 writes them (load the row, run the
        plugin, save the same columns, enqueue the next poll), with plain SQL.

    framework_app.py callback --broker URL --trace-id T --callback-id C --data JSON
        Enqueues the callback task as the framework's callback API does.

The plugins are the Python twins of Celerity's test plugins: "1.0.0" (the
example plugin of SPEC §5), "panic-1.0.0" (raises an unexpected error) and
"callback-1.0.0" (waits for a callback, then succeeds with its data).
"""

import argparse
import datetime as dt
import json
import random
import sys
import urllib.parse

import pymysql

from framework import SCHEDULE_TASK, make_app

CALLBACK_TASK = "bk_plugin_framework.runtime.callback.celery.tasks.callback"
POLL, CALLBACK, SUCCESS, FAIL = 2, 3, 4, 5


class PluginError(Exception):
    """The framework's Plugin.Error."""


class Plugin:
    def __init__(self):
        self.poll_interval = -1
        self.waiting_callback = False

    def wait_poll(self, interval):
        self.waiting_callback = False
        self.poll_interval = max(interval, 0)

    def wait_callback(self):
        self.poll_interval = -1
        self.waiting_callback = True

    @property
    def waiting_poll(self):
        return self.poll_interval != -1


class Example(Plugin):
    @staticmethod
    def validate(inputs):
        polls = inputs["polls"]
        if not isinstance(polls, int):
            raise ValueError("polls must be an int")
        return {"polls": polls, "interval": inputs.get("interval", 0), "fail_at": inputs.get("fail_at")}

    def execute(self, inputs, ctx):
        if inputs["fail_at"] is not None and inputs["fail_at"] == ctx["invoke_count"]:
            raise PluginError("fail_at reached")
        ctx["storage"]["executions"] = ctx["storage"].get("executions", 0) + 1
        if ctx["invoke_count"] < inputs["polls"] + 1:
            self.wait_poll(inputs["interval"])
            return
        ctx["outputs"]["polls_done"] = ctx["storage"]["executions"] - 1


class Panics(Plugin):
    @staticmethod
    def validate(inputs):
        return inputs

    def execute(self, inputs, ctx):
        if ctx["invoke_count"] == 1:
            self.wait_poll(0)
            return
        ctx["storage"]["touched"] = True
        raise RuntimeError("boom")


class WaitsForCallback(Plugin):
    @staticmethod
    def validate(inputs):
        return inputs

    def execute(self, inputs, ctx):
        if ctx["callback"] is None:
            self.wait_callback()
            return
        ctx["outputs"]["callback_id"] = ctx["callback"]["id"]
        ctx["outputs"]["callback_data"] = ctx["callback"]["data"]


PLUGINS = {"1.0.0": Example, "panic-1.0.0": Panics, "callback-1.0.0": WaitsForCallback}


def connect(url):
    u = urllib.parse.urlparse(url)
    return pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username or "root",
                           password=u.password or "", database=u.path.lstrip("/"), autocommit=True)


def now():
    # Django USE_TZ=True: naive UTC.
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def dump_data(inputs, storage, outputs, context_data):
    return json.dumps({"inputs": inputs, "context": {"storage": storage, "outputs": outputs, "data": context_data},
                       "outputs": outputs})


def produce(opts):
    app = make_app("producer", opts.broker, "plugin_schedule")
    db = connect(opts.db)
    left = {}
    text = opts.specs
    if text.startswith("@"):
        with open(text[1:]) as f:
            text = f.read()
    for spec in json.loads(text):
        if "raw_data" in spec:
            # A row the producer could not have made well: inserted as is, polled at once.
            with db.cursor() as cur:
                cur.execute(
                    "INSERT INTO schedule_schedule (trace_id, plugin_version, state, invoke_count, data, created_at,"
                    " finish_at, scheduling, err) VALUES (%s, %s, %s, 1, %s, %s, NULL, 0, '')",
                    (spec["trace_id"], spec["version"], POLL, spec["raw_data"], now()))
            app.send_task(SCHEDULE_TASK, kwargs={"trace_id": spec["trace_id"]}, queue="plugin_schedule")
            left[spec["trace_id"]] = POLL
            continue
        plugin_cls = PLUGINS[spec["version"]] if spec["version"] in PLUGINS else Example
        inputs = spec["inputs"]
        ctx = {"invoke_count": 1, "storage": {}, "outputs": {}, "callback": None}
        plugin = plugin_cls()
        plugin.execute(plugin_cls.validate(inputs), ctx)
        state = POLL if plugin.waiting_poll else CALLBACK if plugin.waiting_callback else SUCCESS
        left[spec["trace_id"]] = state
        if state == SUCCESS:
            continue
        data = dump_data(inputs, ctx["storage"], ctx["outputs"], spec.get("context_data", {}))
        with db.cursor() as cur:
            cur.execute(
                "INSERT INTO schedule_schedule (trace_id, plugin_version, state, invoke_count, data, created_at,"
                " finish_at, scheduling, err) VALUES (%s, %s, %s, 1, %s, %s, NULL, 0, '')",
                (spec["trace_id"], spec["version"], state, data, now()))
        if state == POLL:
            app.send_task(SCHEDULE_TASK, kwargs={"trace_id": spec["trace_id"]}, countdown=plugin.poll_interval,
                          queue="plugin_schedule")
    json.dump(left, sys.stdout)


def callback(opts):
    app = make_app("producer", opts.broker, "plugin_callback")
    app.send_task(CALLBACK_TASK, kwargs={"trace_id": opts.trace_id, "callback_id": opts.callback_id,
                                         "callback_data": opts.data}, queue="plugin_callback")


def run_schedule(app, db, trace_id, callback_info=None):
    """executor.schedule of bk-plugin-framework, restated with plain SQL."""
    with db.cursor() as cur:
        cur.execute("SELECT plugin_version, state, invoke_count, data FROM schedule_schedule WHERE trace_id = %s",
                    (trace_id,))
        version, state, invoke_count, data = cur.fetchone()
        plugin_cls = PLUGINS.get(version)
        try:
            schedule_data = json.loads(data)
            inputs = plugin_cls.validate(schedule_data["inputs"])
        except Exception:
            cur.execute("UPDATE schedule_schedule SET state = %s WHERE trace_id = %s", (FAIL, trace_id))
            return
        ctx = {
            "invoke_count": invoke_count + 1,
            "storage": schedule_data["context"]["storage"],
            "outputs": schedule_data["context"]["outputs"],
            "callback": callback_info,
        }
        plugin = plugin_cls()
        err, execute_fail, unexpected = "", False, False
        try:
            plugin.execute(inputs, ctx)
        except PluginError as e:
            err, execute_fail = "plugin schedule failed: %s" % e, True
        except Exception as e:
            err, unexpected = "plugin schedule failed: %s" % e, True
        new_data = dump_data(schedule_data["inputs"], ctx["storage"], ctx["outputs"], {})
        if execute_fail:
            cur.execute("UPDATE schedule_schedule SET state=%s, invoke_count=%s, data=%s, finish_at=%s, err=%s"
                        " WHERE trace_id=%s", (FAIL, invoke_count + 1, new_data, now(), err, trace_id))
        elif unexpected:
            cur.execute("UPDATE schedule_schedule SET state=%s, invoke_count=%s, finish_at=%s, err=%s"
                        " WHERE trace_id=%s", (FAIL, invoke_count + 1, now(), err, trace_id))
        elif plugin.waiting_poll:
            cur.execute("UPDATE schedule_schedule SET state=%s, invoke_count=%s, data=%s WHERE trace_id=%s",
                        (POLL, invoke_count + 1, new_data, trace_id))
            app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, countdown=plugin.poll_interval,
                          queue="plugin_schedule")
        elif plugin.waiting_callback:
            cur.execute("UPDATE schedule_schedule SET state=%s, invoke_count=%s, data=%s WHERE trace_id=%s",
                        (CALLBACK, invoke_count + 1, new_data, trace_id))
        else:
            cur.execute("UPDATE schedule_schedule SET state=%s, invoke_count=%s, data=%s, finish_at=%s"
                        " WHERE trace_id=%s", (SUCCESS, invoke_count + 1, new_data, now(), trace_id))


def worker(opts):
    app = make_app("framework", opts.broker, "plugin_schedule")
    from framework import framework_queue
    app.conf.task_queues = [framework_queue("plugin_schedule"), framework_queue("plugin_callback")]
    db = connect(opts.db)

    @app.task(name=SCHEDULE_TASK, ignore_result=True)
    def schedule(trace_id):
        run_schedule(app, db, trace_id)

    @app.task(name=CALLBACK_TASK, ignore_result=True)
    def callback_task(trace_id, callback_id, callback_data):
        with db.cursor() as cur:
            if cur.execute("UPDATE schedule_schedule SET scheduling=1 WHERE trace_id=%s AND scheduling=0",
                           (trace_id,)) != 1:
                app.send_task(CALLBACK_TASK, kwargs={"trace_id": trace_id, "callback_id": callback_id,
                                                     "callback_data": callback_data},
                              countdown=random.randint(1, 5), queue="plugin_callback")
                return
            try:
                cur.execute("SELECT state FROM schedule_schedule WHERE trace_id=%s", (trace_id,))
                if cur.fetchone()[0] == CALLBACK:
                    run_schedule(app, db, trace_id, {"id": callback_id, "data": json.loads(callback_data)})
            finally:
                cur.execute("UPDATE schedule_schedule SET scheduling=0 WHERE trace_id=%s", (trace_id,))

    app.worker_main(["worker", "-P", "solo", "-Q", "plugin_schedule,plugin_callback", "--without-mingle",
                     "--without-gossip", "--without-heartbeat", "-l", "WARNING"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["produce", "worker", "callback"])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--db")
    parser.add_argument("--specs")
    parser.add_argument("--trace-id")
    parser.add_argument("--callback-id")
    parser.add_argument("--data")
    opts = parser.parse_args()
    {"produce": produce, "worker": worker, "callback": callback}[opts.mode](opts)


if __name__ == "__main__":
    main()
