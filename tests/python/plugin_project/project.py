"""The test plugin project's own operations, done by the real framework:
  migrate                 Django's migrations (schedule_schedule and the rest)
  produce SPECS_JSON|@FILE
                          BKPluginExecutor.execute for each spec, as the
                          plugin runtime's invoke API does: the plugin's first
                          execute, the schedule row, the first `schedule` task
  produce-paced VERSION PREFIX COUNT SPREAD_S PROCS INPUTS_JSON
                          COUNT schedules of VERSION with INPUTS_JSON, trace
                          ids PREFIX<i:08>, created as `produce` does at an
                          even rate over SPREAD_S seconds by PROCS processes
                          (one process cannot keep up with hundreds a
                          second); prints how late the last one was
  produce-plan @FILE SPREAD_S PROCS RETRIES
                          the specs of FILE created as `produce` does, at an
                          even rate over SPREAD_S seconds by PROCS
                          processes; a failed invoke is tried again under a
                          new trace id (<id>r<n>), up to RETRIES times: one
                          JSON line per invoke, with its error if it failed
                          (the nemesis run's producer, which loses its
                          broker node while it publishes)
  callback TRACE_ID ID DATA_JSON
                          the framework's callback API: the `callback` task
  callbacks-waiting PREFIX UNTIL_EPOCH
                          every second until UNTIL_EPOCH, the callback API
                          for each schedule of PREFIX waiting in CALLBACK,
                          once it has taken one; one JSON line per callback
  read TRACE_ID           what the framework's readers see: the Schedule
                          model, its state through the framework's State
                          enum (a value outside it raises), err, outputs
Specs: [{"trace_id", "version", "inputs", "context"}]. Prints one JSON line
per produced schedule. The database and broker come from the plugin
runtime's settings names (BK_PLUGIN_RUNTIME_DB_*, BK_PLUGIN_RUNTIME_BROKER_URL).
"""

import json
import sys

import plugin_project.celery_app  # noqa: F401  (Django and the Celery app, as a worker has them)
from plugin_project import tracing


def migrate():
    from django.core.management import call_command

    # fake_initial: `celerity migrate` may have created schedule_schedule
    # already, with the same DDL.
    call_command("migrate", verbosity=0, fake_initial=True)


def produce(specs):
    from bk_plugin_framework.hub import VersionHub
    from bk_plugin_framework.runtime.executor import BKPluginExecutor

    plugins = VersionHub.all_plugins()
    for spec in specs:
        # With tracing on, each execute runs in a span standing in for the
        # invoke API's request span (Django's instrumentation, in an app).
        with request_span("POST /bk_plugin/invoke", spec["trace_id"]):
            result = BKPluginExecutor(trace_id=spec["trace_id"]).execute(
                plugin_cls=plugins[spec["version"]], inputs=spec["inputs"], context_inputs=spec.get("context", {})
            )
        print(json.dumps({"trace_id": spec["trace_id"], "state": result.state.value, "err": result.err}))
    if tracing.PROVIDER is not None:
        tracing.PROVIDER.shutdown()


def request_span(name, trace_id):
    """With tracing on, a span standing in for the plugin API request's
    (Django's instrumentation makes it, in an app)."""
    import contextlib

    if tracing.PROVIDER is None:
        return contextlib.nullcontext()
    from opentelemetry import trace

    tracer = trace.get_tracer("plugin_project")
    return tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER, attributes={"bk_plugin.trace_id": trace_id})


def paced(count, spread, procs, step):
    """step(i) for each i < count at an even rate over `spread` seconds, by
    `procs` forked processes (one cannot keep up with hundreds a second).
    Each process prints how late its latest step began; a step that raises
    SystemExit ends its process as failed. Returns how many failed."""
    import os
    import time

    from django.db import connections

    # Each process opens its own database and broker connections after the fork.
    connections.close_all()
    start = time.time() + 0.5
    children = []
    for k in range(procs):
        pid = os.fork()
        if pid == 0:
            late, code = 0.0, 0
            try:
                for i in range(k, count, procs):
                    due = start + spread * i / count
                    now = time.time()
                    if now < due:
                        time.sleep(due - now)
                    else:
                        late = max(late, now - due)
                    step(i)
            except SystemExit as e:
                print(e, file=sys.stderr)
                code = 1
            print(json.dumps({"process": k, "latest_s": round(late, 3)}))
            sys.stdout.flush()
            os._exit(code)
        children.append(pid)
    return len([pid for pid in children if os.waitpid(pid, 0)[1] != 0])


def produce_paced(version, prefix, count, spread, procs, inputs):
    def step(i):
        from bk_plugin_framework.hub import VersionHub
        from bk_plugin_framework.runtime.executor import BKPluginExecutor

        result = BKPluginExecutor(trace_id="%s%08d" % (prefix, i)).execute(
            plugin_cls=VersionHub.all_plugins()[version], inputs=inputs, context_inputs={}
        )
        if result.err:
            raise SystemExit("execute failed: %s" % result.err)

    failed = paced(count, spread, procs, step)
    if failed:
        sys.exit("%d producer process(es) failed" % failed)


def produce_plan(specs, spread, procs, retries):
    import time

    from django.db import close_old_connections

    def step(i):
        from bk_plugin_framework.hub import VersionHub
        from bk_plugin_framework.runtime.executor import BKPluginExecutor

        spec = specs[i]
        # A caller whose invoke failed invokes again under a new trace id
        # (the failed one stays as the framework left it), up to `retries`
        # times, a second apart.
        for attempt in range(retries + 1):
            trace_id = spec["trace_id"] if attempt == 0 else "%sr%d" % (spec["trace_id"], attempt)
            # Each invoke is a request of the app's: Django drops a
            # connection an error left unusable at a request's edge.
            close_old_connections()
            try:
                result = BKPluginExecutor(trace_id=trace_id).execute(
                    plugin_cls=VersionHub.all_plugins()[spec["version"]], inputs=spec["inputs"], context_inputs={}
                )
                err = result.err
            except Exception as e:  # the producer's own failure: reported, the run goes on
                err = "raised: %r" % e
            print(json.dumps({"trace_id": trace_id, "spec": spec["trace_id"], "at": time.time(), "err": err}))
            sys.stdout.flush()
            if err is None:
                return
            time.sleep(1)

    paced(len(specs), spread, procs, step)


def callbacks_waiting(prefix, until):
    import time

    from django.db import close_old_connections

    from bk_plugin_framework.constants import State
    from bk_plugin_framework.runtime.callback.api import callback as send
    from bk_plugin_framework.runtime.schedule.models import Schedule

    done = set()
    while time.time() < until:
        try:
            close_old_connections()
            waiting = Schedule.objects.filter(trace_id__startswith=prefix, state=State.CALLBACK.value)
            ids = [t for t in waiting.values_list("trace_id", flat=True) if t not in done]
        except Exception as e:  # the database is the nemesis's to break: try again next second
            print(json.dumps({"error": repr(e)}), file=sys.stderr)
            ids = []
        for trace_id in ids:
            answer = send(trace_id, "cb-" + trace_id, {"from": "nemesis"})
            if answer["result"]:
                done.add(trace_id)
                print(json.dumps({"trace_id": trace_id, "at": time.time()}))
                sys.stdout.flush()
        time.sleep(1)


def callback(trace_id, callback_id, data):
    from bk_plugin_framework.runtime.callback.api import callback as send

    with request_span("POST /bk_plugin/callback", trace_id):
        answer = send(trace_id, callback_id, data)
    if tracing.PROVIDER is not None:
        tracing.PROVIDER.shutdown()
    print(json.dumps(answer))


def read(trace_id):
    from bk_plugin_framework.constants import State
    from bk_plugin_framework.runtime.schedule.models import Schedule

    s = Schedule.objects.get(trace_id=trace_id)
    print(
        json.dumps(
            {
                "state": State(s.state).name,
                "err": s.err,
                "finished": s.finish_at is not None,
                "outputs": json.loads(s.data)["outputs"],
            }
        )
    )


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "migrate":
        migrate()
    elif command == "produce":
        # "@FILE" reads the specs from a file (thousands do not fit a command line nicely).
        text = open(sys.argv[2][1:]).read() if sys.argv[2].startswith("@") else sys.argv[2]
        produce(json.loads(text))
    elif command == "produce-paced":
        version, prefix, count, spread, procs, inputs = sys.argv[2:8]
        produce_paced(version, prefix, int(count), float(spread), int(procs), json.loads(inputs))
    elif command == "produce-plan":
        produce_plan(json.loads(open(sys.argv[2][1:]).read()), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif command == "callbacks-waiting":
        callbacks_waiting(sys.argv[2], float(sys.argv[3]))
    elif command == "callback":
        callback(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif command == "read":
        read(sys.argv[2])
    else:
        sys.exit("unknown command %s" % command)
