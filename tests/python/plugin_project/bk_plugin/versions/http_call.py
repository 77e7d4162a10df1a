"""3.1.0: on its first worker poll, GETs `url` with requests (as plugins
call other systems) and succeeds with the status; with the requests
instrumentation on, that call is a span of the poll's trace."""

import requests
from bk_plugin_framework.kit import Context, InputsModel, Plugin


class CallsOut(Plugin):
    class Meta:
        version = "3.1.0"
        desc = "calls a URL on its first poll"

    class Inputs(InputsModel):
        url: str

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        context.outputs["status"] = requests.get(inputs.url, timeout=10).status_code
