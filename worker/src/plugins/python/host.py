"""Celerity's plugin host: one Python process of a plugin project that runs
the plugin part of bk-plugin-framework 2.3.15's BKPluginExecutor.schedule,
one step at a time, for a Celerity worker.

The worker starts it with the project's own interpreter and environment and
keeps the rest of a poll (the row, the guarded update, the attempt log,
retries, the next publish, the callback lock and the plugin callback POST).
It ships inside the celerity binary; nothing is installed in the project.
Runs on Python 3.8 and later, with pydantic v1 or v2.

Protocol: one JSON object per line. The worker writes requests to this
process's standard input; the host answers on what was its standard output
when it started. Its file descriptor 1 is then pointed at standard error, so
whatever a plugin prints (even from C code) reaches the worker's log and
never the protocol. Messages the host sends:
  {"ready": {"versions": [...], "python": ..., "framework": ..., "pydantic": ...}}
  {"log": {"level": N, "logger": ..., "message": ..., "trace_id": ...}}
  {"id": N, "outcome": "poll"|"callback"|"success"|"error"|"unexpected"|"invalid",
   "interval": N, "data": TEXT|null, "err": TEXT|null, "plugin_callback": {...}|null}
"""

import importlib
import json
import logging
import os
import sys
import threading
import traceback

PROTOCOL_VERSION = 1


def _close_inherited_fds():
    """Closes every descriptor but 0, 1 and 2: the worker's database client
    opens its sockets without close-on-exec, and plugin code must not get
    the worker's authenticated sessions."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(3, 65536)
        return
    for fd in fds:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


_close_inherited_fds()


def _take_protocol_streams():
    """Keeps the protocol on private copies of fds 0 and 1; fd 0 becomes
    /dev/null and fd 1 becomes standard error."""
    proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except AttributeError:
        pass
    return proto_in, proto_out


PROTO_IN, PROTO_OUT = _take_protocol_streams()
_SEND_LOCK = threading.Lock()
_CURRENT = {"trace_id": None}


STEP_MARK = "\x1ecelerity-step "


def mark_step(trace_id):
    """Tells the worker, in the output stream itself, which step what
    follows belongs to: pipes keep order, clocks do not."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(2, (STEP_MARK + (trace_id or "") + "\n").encode("utf-8"))


def send(message):
    line = (json.dumps(message) + "\n").encode("utf-8")
    with _SEND_LOCK:
        PROTO_OUT.write(line)


class ToWorker(logging.Handler):
    """Log records of the plugin and the framework, sent to the worker's log."""

    def __init__(self, level):
        logging.Handler.__init__(self, level)
        self.setFormatter(logging.Formatter("%(message)s"))
        self._last = None

    def emit(self, record):
        # The handler sits on the root and on `bk_plugin`: a record that
        # propagates from one to the other is sent once.
        if record is self._last:
            return
        self._last = record
        try:
            send(
                {
                    "log": {
                        "level": record.levelno,
                        "logger": record.name,
                        "message": self.format(record),
                        "trace_id": _CURRENT["trace_id"],
                    }
                }
            )
        except Exception:
            self.handleError(record)


def _is_console(handler):
    if isinstance(handler, logging.FileHandler) or not isinstance(handler, logging.StreamHandler):
        return False
    return getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)


def setup_logging():
    level = int(os.environ.get("CELERITY_HOST_LOG_LEVEL", logging.INFO))
    handler = ToWorker(level)
    for name in ("", "bk_plugin"):
        logger = logging.getLogger(name)
        # Console output would reach the worker twice: once as a record, once as text.
        for old in [h for h in logger.handlers if _is_console(h)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
    root = logging.getLogger()
    root.setLevel(level)
    plugin_logger = logging.getLogger("bk_plugin")
    if plugin_logger.level == logging.NOTSET or plugin_logger.level > level:
        plugin_logger.setLevel(level)


def load_plugins():
    """The project's plugins: Django set up as the project's own Celery
    worker would, then the framework's VersionHub, filled by the apps or,
    failing that, by discovering `bk_plugin.versions` as the framework's
    plugin service does."""
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
    setup_logging()
    from bk_plugin_framework.hub import VersionHub

    plugins = VersionHub.all_plugins()
    if not plugins:
        from bk_plugin_framework.utils.module_load import discover_plugins

        discover_plugins(importlib.import_module("bk_plugin.versions"))
        plugins = VersionHub.all_plugins()
    return plugins


def describe(plugins):
    import bk_plugin_framework

    try:
        import pydantic

        pydantic_version = str(getattr(pydantic, "VERSION", getattr(pydantic, "__version__", "")))
    except Exception:
        pydantic_version = ""
    framework_version = getattr(bk_plugin_framework, "__version__", "")
    if not framework_version:
        try:
            from bk_plugin_framework.__version__ import __version__ as framework_version
        except Exception:
            framework_version = ""
    return {
        "versions": [
            {
                "version": version,
                "class": "%s.%s" % (cls.__module__, cls.__qualname__),
                "plugin_callback": bool(getattr(cls.Meta, "enable_plugin_callback", False)),
            }
            for version, cls in sorted(plugins.items())
        ],
        "python": "%d.%d.%d" % sys.version_info[:3],
        "framework": framework_version,
        "pydantic": pydantic_version,
        "protocol": PROTOCOL_VERSION,
        "time_zone": naive_time_zone(),
    }


def naive_time_zone():
    """The zone of the naive datetimes Django writes to the tables: its
    TIME_ZONE when USE_TZ is off, UTC when it is on; None without Django
    settings."""
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return None
    try:
        from django.conf import settings

        return "UTC" if settings.USE_TZ else str(settings.TIME_ZONE or "UTC")
    except Exception:
        return None


def _poll_interval(value):
    """The countdown a wait_poll asked for, or why it is none: the reply
    must be JSON the worker reads (`inf` is not), and Celery itself would
    fail on a countdown that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, "wait_poll interval must be a number of seconds, got %r" % (value,)
    if value != value or value in (float("inf"), float("-inf")):
        return None, "wait_poll interval must be a finite number of seconds, got %r" % (value,)
    return value, None


class Step:
    """The plugin part of BKPluginExecutor.schedule (bk-plugin-framework
    2.3.15, runtime/executor.py), for one request."""

    def __init__(self, plugins):
        from bk_plugin_framework.kit import Callback, Context, ContextRequire, InputsModel, Plugin, State

        try:
            from pydantic.v1 import ValidationError
        except ImportError:
            from pydantic import ValidationError
        try:
            from bk_plugin_framework.utils import local
        except Exception:
            local = None
        self.plugins = plugins
        self.Callback, self.Context, self.Plugin, self.State = Callback, Context, Plugin, State
        self.ContextRequire, self.InputsModel = ContextRequire, InputsModel
        self.ValidationError = ValidationError
        self.local = local

    def run(self, request):
        plugin_cls = self.plugins.get(request["version"])
        if plugin_cls is None:
            return {"outcome": "invalid", "err": "can not find plugin for version %s" % request["version"]}
        if self.local is not None:
            self.local.set_trace_id(request["trace_id"])
        try:
            schedule_data = json.loads(request["data"])
        except Exception as e:
            return {"outcome": "invalid", "err": "schedule data load error: %s" % e}

        input_cls = getattr(plugin_cls, "Inputs", self.InputsModel)
        context_inputs_cls = getattr(plugin_cls, "ContextInputs", self.ContextRequire)
        try:
            valid_inputs = input_cls(**schedule_data["inputs"])
        except self.ValidationError as e:
            return {"outcome": "invalid", "err": "inputs validation error: %s" % str(e)}
        except (KeyError, TypeError) as e:
            return {"outcome": "invalid", "err": "schedule data load error: %s" % e}
        try:
            valid_context_inputs = context_inputs_cls(**schedule_data["context"]["data"])
        except self.ValidationError as e:
            return {"outcome": "invalid", "err": "context validation error: %s" % str(e)}
        except (KeyError, TypeError) as e:
            return {"outcome": "invalid", "err": "schedule data load error: %s" % e}

        callback_info = request.get("callback") or {}
        state = self.State.CALLBACK if request["state"] == self.State.CALLBACK.value else self.State.POLL
        try:
            context = self.Context(
                trace_id=request["trace_id"],
                data=valid_context_inputs,
                state=state,
                invoke_count=request["invoke_count"],
                callback=self.Callback(
                    callback_id=callback_info.get("id"), callback_data=callback_info.get("data")
                ),
                outputs=schedule_data["context"]["outputs"],
                storage=schedule_data["context"]["storage"],
            )
        except (KeyError, TypeError) as e:
            return {"outcome": "invalid", "err": "schedule data load error: %s" % e}
        plugin = plugin_cls()
        outcome, err = None, None
        logger = logging.getLogger("bk_plugin")
        try:
            plugin.execute(inputs=valid_inputs, context=context)
        except self.Plugin.Error as e:
            logger.exception("[schedule] plugin execute failed")
            outcome, err = "error", "plugin schedule failed: %s" % str(e)
        except Exception as e:
            logger.exception("[schedule] plugin execute raise unexpected error")
            outcome, err = "unexpected", "plugin schedule failed: %s" % str(e)

        context.data = context_inputs_cls(**schedule_data["context"]["data"])
        plugin_callback = None
        info = context.plugin_callback_info
        if getattr(plugin_cls.Meta, "enable_plugin_callback", False) and info is not None:
            plugin_callback = {"url": info.url, "data": info.data}
        try:
            data = json.dumps(
                {"inputs": schedule_data["inputs"], "context": context.schedule_context, "outputs": context.outputs}
            )
        except Exception as e:
            logger.exception("[execute] schedule data json dumps error")
            return {
                "outcome": "invalid",
                "err": "plugin context json dumps error: %s" % e,
                "plugin_callback": plugin_callback,
            }
        reply = {"outcome": outcome, "err": err, "data": data, "plugin_callback": plugin_callback}
        if outcome == "unexpected":
            # An unexpected error saves neither storage nor context data.
            reply["data"] = None
        elif outcome is None:
            if plugin.is_wating_poll:
                interval, why = _poll_interval(plugin.poll_interval)
                if why is None:
                    reply["outcome"], reply["interval"] = "poll", interval
                else:
                    reply["outcome"], reply["err"] = "error", "plugin schedule failed: %s" % why
            elif plugin.is_waiting_callback:
                reply["outcome"] = "callback"
            else:
                reply["outcome"] = "success"
        return reply


def attach_trace_context(carrier):
    """With tracing on in the worker and OpenTelemetry in the project's
    environment, the step runs inside the worker's run span, so spans the
    plugin's own code makes (its HTTP calls, through the requests
    instrumentation) are its children. Without OpenTelemetry, nothing."""
    if not carrier:
        return None
    try:
        from opentelemetry import context, propagate
    except ImportError:
        return None
    try:
        return context.attach(propagate.extract(carrier))
    except Exception:
        # A context it cannot read is no reason to fail the step.
        return None


def detach_trace_context(token):
    if token is not None:
        from opentelemetry import context

        context.detach(token)


def main():
    try:
        plugins = load_plugins()
        step = Step(plugins)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    send({"ready": describe(plugins)})
    while True:
        line = PROTO_IN.readline()
        if not line:
            return
        request = json.loads(line)
        if request.get("op") == "exit":
            return
        _CURRENT["trace_id"] = request.get("trace_id")
        mark_step(_CURRENT["trace_id"])
        token = attach_trace_context(request.get("trace_context"))
        try:
            reply = step.run(request)
        finally:
            detach_trace_context(token)
        reply["id"] = request["id"]
        mark_step(None)
        _CURRENT["trace_id"] = None
        send(reply)


main()
