"""4.0.0: the nemesis run's plugin. Polls `polls` times, `interval`
seconds apart, then succeeds; with `fail_at`, raises at that invoke_count;
with `callback`, waits for a callback after its polls and succeeds with it,
taking `callback_sleep` seconds over that step.
Every step first appends a line to the plugin's own ledger (a file per
process under NEMESIS_LEDGER_DIR): what ran, whatever the worker later
commits, so the checker can tell a step run twice from one applied twice."""

import json
import os
import time
import typing

from bk_plugin_framework.kit import Context, InputsModel, Plugin, State


def write_ledger(context):
    folder = os.environ.get("NEMESIS_LEDGER_DIR")
    if not folder:
        return
    # "w": the worker that ran the step (the host's, or the pool process's,
    # parent), so a fault on one worker explains only that worker's steps.
    line = json.dumps({"t": context.trace_id, "n": context.invoke_count, "at": time.time(), "w": os.getppid()})
    # O_APPEND and one write per line: lines from one process never interleave.
    fd = os.open(os.path.join(folder, "%d.jsonl" % os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Ledgered(Plugin):
    class Meta:
        version = "4.0.0"
        desc = "polls, fails or waits for a callback, writing a ledger of its steps"

    class Inputs(InputsModel):
        polls: int
        interval: int = 0
        fail_at: typing.Optional[int] = None
        callback: bool = False
        callback_sleep: float = 0

    def execute(self, inputs: Inputs, context: Context):
        write_ledger(context)
        if context.state is State.CALLBACK:
            time.sleep(inputs.callback_sleep)
            context.outputs["callback_data"] = context.callback.data
            return
        if inputs.fail_at is not None and inputs.fail_at == context.invoke_count:
            raise self.Error("fail_at reached")
        if context.invoke_count < inputs.polls + 1:
            self.wait_poll(inputs.interval)
            return
        if inputs.callback:
            self.wait_callback()
            return
        context.outputs["polls_done"] = context.invoke_count - 1
