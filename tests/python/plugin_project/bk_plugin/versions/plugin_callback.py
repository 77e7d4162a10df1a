"""1.5.0: Meta.enable_plugin_callback with plugin_callback_info in the
context data; succeeds on its first worker poll."""

import typing

from bk_plugin_framework.kit import Context, ContextRequire, InputsModel, Plugin
from bk_plugin_framework.kit.plugin import PluginCallbackModel


class CallsBack(Plugin):
    class Meta:
        version = "1.5.0"
        enable_plugin_callback = True

    class Inputs(InputsModel):
        pass

    class ContextInputs(ContextRequire):
        plugin_callback_info: typing.Optional[PluginCallbackModel] = None

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        context.outputs["done"] = True
