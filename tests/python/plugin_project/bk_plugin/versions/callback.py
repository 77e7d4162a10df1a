"""1.2.0: waits for a callback on its first poll, then succeeds with what
the callback carried."""

from bk_plugin_framework.kit import Context, InputsModel, Plugin, State


class WaitsForCallback(Plugin):
    class Meta:
        version = "1.2.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.state is State.CALLBACK:
            context.outputs["callback_id"] = context.callback.id
            context.outputs["callback_data"] = context.callback.data
            return
        context.storage["waiting"] = True
        self.wait_callback()
