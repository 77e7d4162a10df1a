"""Plugins that misbehave, to show a host survives them or dies alone:
1.6.0 prints and logs, 1.7.0 hangs, 1.8.0 calls os._exit, 1.9.0 grows its
memory, 2.0.0 dies of a signal. Each misbehaves on worker polls only: the
producer's own execute asks for a poll."""

import logging
import os
import signal
import sys
import time

from bk_plugin_framework.kit import Context, InputsModel, Plugin

logger = logging.getLogger("bk_plugin")
HOARD = []


class Prints(Plugin):
    class Meta:
        version = "1.6.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        print("printed by the plugin")
        sys.stdout.flush()
        os.write(1, b"written to fd 1 by the plugin\n")
        print('{"id": 1, "outcome": "success", "data": "{}"}')
        logger.warning("a warning from the plugin")
        logging.getLogger().info("an info line on the root logger")
        context.outputs["printed"] = True


class Hangs(Plugin):
    class Meta:
        version = "1.7.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        time.sleep(3600)


class Exits(Plugin):
    class Meta:
        version = "1.8.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        os._exit(3)


class Grows(Plugin):
    class Meta:
        version = "1.9.0"

    class Inputs(InputsModel):
        mib: int = 40
        polls: int = 1

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        if context.invoke_count < inputs.polls + 1:
            self.wait_poll(0)
        # Repeating a byte writes every page, so the memory is resident.
        HOARD.append(bytearray(b"\x01") * (inputs.mib * 1024 * 1024))
        context.outputs["hoarded"] = len(HOARD)


class Killed(Plugin):
    class Meta:
        version = "2.0.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        os.kill(os.getpid(), signal.SIGKILL)
