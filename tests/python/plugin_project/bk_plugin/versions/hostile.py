"""Plugins whose output is hostile to the host's pipes, to show each ends
its own step only: 2.1.0 writes bytes that are not UTF-8 and a 100 MiB line,
2.2.0 asks wait_poll for a countdown that is not a number (its inputs say
which), 2.3.0 writes into the protocol's own pipe during its step or, from
a forked child, after it, 2.4.0 logs and prints line breaks that would
forge the worker's log lines. Each misbehaves on worker polls only."""

import logging
import os
import sys
import time
from typing import Any

from bk_plugin_framework.kit import Context, InputsModel, Plugin


def _protocol_fd():
    # host.py runs as __main__; its reply stream is what a plugin could reach.
    import __main__

    return __main__.PROTO_OUT.fileno()


class BadOutput(Plugin):
    class Meta:
        version = "2.1.0"

    class Inputs(InputsModel):
        mib: int = 100

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        os.write(2, "中文 in GBK\n".encode("gbk"))
        os.write(1, b"\xff\xfe not UTF-8 on fd 1\n")
        chunk = "x" * (1024 * 1024)
        for _ in range(inputs.mib):
            sys.stdout.write(chunk)
        sys.stdout.write("\n")
        sys.stdout.flush()
        print("after the long line")
        context.outputs["survived"] = True


class BadInterval(Plugin):
    class Meta:
        version = "2.2.0"

    class Inputs(InputsModel):
        interval: Any = 0
        infinite: bool = False

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        self.wait_poll(float("inf") if inputs.infinite else inputs.interval)


class WritesProtocol(Plugin):
    class Meta:
        version = "2.3.0"

    class Inputs(InputsModel):
        when: str = "during"

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        fd = _protocol_fd()
        if inputs.when == "during":
            os.write(fd, b"not the protocol\n")
            return
        if os.fork() == 0:
            time.sleep(1)
            os.write(fd, b'{"id": 999, "outcome": "success"}\n')
            os._exit(0)


class ForgesLogLines(Plugin):
    class Meta:
        version = "2.4.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        logging.getLogger("bk_plugin").warning("done\nERROR celerity: FORGED by a log message")
        print("done\rERROR celerity: FORGED by a carriage return", flush=True)
