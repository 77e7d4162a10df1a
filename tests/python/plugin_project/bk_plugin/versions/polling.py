"""1.0.0: polls `polls` times, `interval` seconds apart, keeping a count in
storage, then succeeds with an output; fails at `fail_at` (the example
plugin of SPEC §5, in Python)."""

import typing

from bk_plugin_framework.kit import Context, InputsModel, Plugin


class Polling(Plugin):
    class Meta:
        version = "1.0.0"
        desc = "polls, then succeeds"

    class Inputs(InputsModel):
        polls: int
        interval: int = 0
        fail_at: typing.Optional[int] = None

    def execute(self, inputs: Inputs, context: Context):
        if inputs.fail_at is not None and inputs.fail_at == context.invoke_count:
            raise self.Error("fail_at reached")
        context.storage["executions"] = context.storage.get("executions", 0) + 1
        if context.invoke_count < inputs.polls + 1:
            self.wait_poll(inputs.interval)
            return
        context.outputs["polls_done"] = context.storage["executions"] - 1
