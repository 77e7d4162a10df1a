"""3.0.0: polls `polls` times, `interval` seconds apart, stamping the wall
clock at the start of each step into its storage (`stamps`, seconds since
the epoch): the gaps between stamps, less the interval, are how late each
poll ran (workload W2)."""

import time

from bk_plugin_framework.kit import Context, InputsModel, Plugin


class Stamping(Plugin):
    class Meta:
        version = "3.0.0"
        desc = "stamps each step, polls, then succeeds"

    class Inputs(InputsModel):
        polls: int
        interval: int

    def execute(self, inputs: Inputs, context: Context):
        stamps = context.storage.get("stamps", [])
        stamps.append(round(time.time(), 4))
        context.storage["stamps"] = stamps
        if context.invoke_count < inputs.polls + 1:
            self.wait_poll(inputs.interval)
            return
        context.outputs["steps"] = len(stamps)
