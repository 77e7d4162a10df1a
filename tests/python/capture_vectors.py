#!/usr/bin/env python3
"""Capture golden Celery messages from real Celery and kombu.

Each scenario publishes through the real Celery API (as the plugin framework's
producers do), then takes the raw message back from RabbitMQ with kombu and
writes, to broker-proto/tests/vectors/<name>.json:

- "delivery": the AMQP properties, the header table and the body bytes exactly
  as RabbitMQ delivered them;
- "celery_view": what Celery's own worker code makes of that delivery (the v2
  headers and body, or its v1/hybrid conversion), which the Rust tests compare
  field by field with broker_proto::decode.

Run it with the test venv (scripts/test prepares it):
    .venv/bin/python tests/python/capture_vectors.py [--broker amqp://...] [--out DIR]
Queues are uniquely named and deleted afterwards; nothing else is touched.
"""

import argparse
import base64
import datetime as dt
import decimal
import json
import os
import sys
import time
import uuid

import celery
import kombu
from celery import signature
from celery.contrib.testing.worker import start_worker
from celery.worker import state as worker_state
from celery.worker.strategy import hybrid_to_proto2, proto1_to_proto2
from kombu.utils.json import dumps as kombu_dumps

from framework import SCHEDULE_TASK, framework_queue, make_app

KNOWN = [
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
    "retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr",
    "origin", "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps",
]
PROPERTIES = [
    "content_type", "content_encoding", "correlation_id", "reply_to",
    "priority", "delivery_mode", "expiration",
]
SHANGHAI = dt.timezone(dt.timedelta(hours=8))


def jsonable(value):
    """Python values as kombu's JSON writes them (markers included)."""
    return json.loads(kombu_dumps(value))


def take(app, queue_name):
    """The next message on the queue: its body bytes exactly as RabbitMQ
    delivered them, and kombu's reading of it (which inflates compressed bodies)."""
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        queue = framework_queue(queue_name)(channel)
        raw = channel.basic_get(queue_name, no_ack=True)
        if raw is None:
            sys.exit(f"capture: nothing arrived on {queue_name}")
        queue.delete()
        body = raw.body
        if isinstance(body, str):
            # py-amqp decodes text bodies when content_encoding is set; undo it exactly.
            body = body.encode(raw.properties.get("content_encoding") or "utf-8")
        return body, channel.message_to_python(raw)


def celery_view(message):
    """What Celery's worker strategy makes of the delivery."""
    payload = message.decode()
    headers = message.headers or {}
    if "task" in headers:
        if isinstance(payload, dict) and "args" in payload:
            protocol = "hybrid"
            (args, kwargs, embed), meta, _, _ = hybrid_to_proto2(message, payload)
        else:
            protocol = "v2"
            args, kwargs, embed = payload
            meta = headers
        extra = {k: v for k, v in headers.items() if k not in KNOWN and k != "compression"}
    else:
        protocol = "v1"
        (args, kwargs, embed), meta, _, _ = proto1_to_proto2(message, dict(payload))
        extra = dict(headers)
    timelimit = meta.get("timelimit") or [None, None]
    return {
        "protocol": protocol,
        "task": meta.get("task"),
        "id": meta.get("id"),
        "args": jsonable(list(args)),
        "kwargs": jsonable(kwargs),
        "embed": {k: jsonable(embed.get(k)) for k in ("callbacks", "errbacks", "chain", "chord")},
        "retries": meta.get("retries") or 0,
        "eta": jsonable(meta.get("eta")),
        "expires": jsonable(meta.get("expires")),
        "root_id": meta.get("root_id"),
        "parent_id": meta.get("parent_id"),
        "group": meta.get("group"),
        "group_index": meta.get("group_index"),
        "shadow": meta.get("shadow"),
        "lang": meta.get("lang"),
        "timelimit": list(timelimit),
        "argsrepr": meta.get("argsrepr"),
        "kwargsrepr": meta.get("kwargsrepr"),
        "origin": meta.get("origin"),
        "ignore_result": bool(meta.get("ignore_result")),
        "replaced_task_nesting": meta.get("replaced_task_nesting") or 0,
        "stamped_headers": meta.get("stamped_headers"),
        "stamps": jsonable(meta.get("stamps") or {}),
        "priority": message.properties.get("priority"),
        "reply_to": message.properties.get("reply_to"),
        "correlation_id": message.properties.get("correlation_id"),
        "extra_headers": jsonable(extra),
    }


def record(out_dir, name, description, taken):
    body, message = taken
    vector = {
        "name": name,
        "description": description,
        "captured_with": {"celery": celery.__version__, "kombu": kombu.__version__},
        "delivery": {
            "properties": {k: message.properties.get(k) for k in PROPERTIES},
            "headers": jsonable(message.headers or {}),
            "body_base64": base64.b64encode(body).decode(),
        },
        "celery_view": celery_view(message),
    }
    path = os.path.join(out_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(vector, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"captured {path}")


def capture(out_dir, broker, name, description, publish, **conf):
    queue_name = f"celerity-capture-{name}-{uuid.uuid4().hex[:8]}"
    app = make_app("capture", broker, queue_name, **conf)
    publish(app, queue_name)
    record(out_dir, name, description, take(app, queue_name))


def capture_retry(out_dir, broker):
    """A retry published by a real worker running Task.retry."""
    queue_name = f"celerity-capture-retry-{uuid.uuid4().hex[:8]}"
    app = make_app("capture", broker, queue_name)

    @app.task(bind=True, name=SCHEDULE_TASK, max_retries=6)
    def schedule(self, trace_id):
        if self.request.retries == 0:
            raise self.retry(countdown=30)

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        schedule.apply_async(kwargs={"trace_id": uuid.uuid4().hex}, queue=queue_name)
        # The worker holds the retry until its eta: wait until it is in hand.
        deadline = time.monotonic() + 30
        while not any(r.request_dict.get("retries") == 1 for r in worker_state.scheduled_requests):
            if time.monotonic() > deadline:
                sys.exit("capture: the retry never came back to the worker")
            time.sleep(0.2)
    # Stopping the worker hands the unacked retry back to the queue.
    record(out_dir, "retry", "Task.retry(countdown=30) re-published by a real Celery worker", take(app, queue_name))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", default=os.environ.get("CELERITY_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "broker-proto", "tests", "vectors"))
    opts = parser.parse_args()
    out, broker = opts.out, opts.broker
    os.makedirs(out, exist_ok=True)
    trace_id = "0123456789abcdef0123456789abcdef"

    capture(out, broker, "send_task_kwargs",
            "send_task with kwargs, exactly as the framework's executor enqueues a schedule",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, queue=q))
    capture(out, broker, "countdown",
            "apply_async with countdown=5 (eta = now + 5 s, UTC)",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, countdown=5, queue=q))
    capture(out, broker, "countdown_zero",
            "apply_async with countdown=0 (eta stays null)",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, countdown=0, queue=q))
    capture(out, broker, "eta_offset",
            "an explicit eta with a +08:00 offset",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id},
                                         eta=dt.datetime(2026, 11, 23, 20, 41, 33, 123456, tzinfo=SHANGHAI), queue=q))
    capture(out, broker, "local_timezone",
            "countdown with enable_utc=False and timezone Asia/Shanghai",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, countdown=60, queue=q),
            enable_utc=False, timezone="Asia/Shanghai")
    capture(out, broker, "expires",
            "expires=3600 seconds: an expires header and an expiration property",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, expires=3600, queue=q))
    capture(out, broker, "priority",
            "priority=7 on the framework's x-max-priority=255 queue",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, priority=7, queue=q))
    capture(out, broker, "custom_headers",
            "custom headers of several types next to Celery's own",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, queue=q,
                                         headers={"x-request-id": "req-1", "x-attempt": 3, "x-big": 2**40,
                                                  "x-ratio": 0.25, "x-flag": True, "x-none": None,
                                                  "x-list": ["a", 1], "x-table": {"k": "v", "n": 2}}))
    capture(out, broker, "kombu_types",
            "args and kwargs holding every kombu JSON marker type",
            lambda app, q: app.send_task("capture.types", queue=q, args=[
                dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
                dt.datetime(2026, 1, 2, 3, 4, 5),
                dt.date(2026, 1, 2),
                dt.time(1, 2, 3),
                decimal.Decimal("1.50"),
                uuid.UUID("12345678-1234-5678-1234-567812345678"),
                b"abc",
                b"\xff\x00",
            ], kwargs={"nested": {"when": dt.datetime(2026, 1, 2, tzinfo=SHANGHAI), "n": [1, 2.5, None, "s"]}}))
    capture(out, broker, "options",
            "time limits, shadow, ignore_result and a link/link_error",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, queue=q,
                                         time_limit=30, soft_time_limit=20.5, shadow="nickname",
                                         ignore_result=True,
                                         link=signature("capture.on_success", args=(1,)),
                                         link_error=signature("capture.on_error")))
    capture(out, broker, "compressed",
            "compression='zlib' (kombu announces it as application/x-gzip)",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id * 20}, compression="zlib", queue=q))
    capture(out, broker, "protocol_v1",
            "task_protocol=1: everything in the body dict, no task header",
            lambda app, q: app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, countdown=5, expires=60, queue=q),
            task_protocol=1)

    def hybrid(app, q):
        # A v1-style dict body under v2 headers, as some non-Celery producers send.
        with app.producer_or_acquire() as producer:
            producer.publish(
                {"task": SCHEDULE_TASK, "id": "hybrid-1", "args": [], "kwargs": {"trace_id": trace_id},
                 "retries": 2, "eta": "2026-11-23T20:41:33+00:00"},
                routing_key=q, exchange="default", serializer="json",
                headers={"task": SCHEDULE_TASK, "id": "hybrid-1", "lang": "py", "x-extra": "kept"},
                declare=[app.amqp.queues[q]])
    capture(out, broker, "hybrid", "v2 headers with a v1-style dict body", hybrid)
    capture_retry(out, broker)
    capture_traced(out, broker, trace_id)


def capture_traced(out_dir, broker, trace_id):
    """A schedule task published under a span, by a producer instrumented
    with OpenTelemetry's Celery instrumentation (as a template app with
    tracing on): the W3C trace context in the headers, where it writes it."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("capture").start_as_current_span("POST /bk_plugin/invoke"):

            def publish(app, q):
                app.send_task(SCHEDULE_TASK, kwargs={"trace_id": trace_id}, countdown=5, queue=q)

            capture(out_dir, broker, "traced",
                    "apply_async with countdown=5 by a producer traced with opentelemetry-instrumentation-celery",
                    publish)
    finally:
        instrumentor.uninstrument()


if __name__ == "__main__":
    main()
