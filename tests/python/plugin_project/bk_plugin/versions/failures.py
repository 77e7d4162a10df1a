"""1.3.0 raises Plugin.Error and 1.4.0 another exception on their first
worker poll (the producer's own execute only asks for a poll), after
changing storage, so what each saves shows."""

from bk_plugin_framework.kit import Context, InputsModel, Plugin


class RaisesPluginError(Plugin):
    class Meta:
        version = "1.3.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        context.storage["touched"] = True
        raise self.Error("the remote system said no")


class RaisesOther(Plugin):
    class Meta:
        version = "1.4.0"

    class Inputs(InputsModel):
        pass

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        context.storage["touched"] = True
        raise ValueError("unexpected value 42")
