"""1.1.0: pydantic turns "3" into 3 and fills defaults; what the plugin saw
is written to its outputs."""

from bk_plugin_framework.kit import Context, InputsModel, Plugin


class Coercion(Plugin):
    class Meta:
        version = "1.1.0"

    class Inputs(InputsModel):
        count: int
        ratio: float = 0.5
        label: str = "none"

    def execute(self, inputs: Inputs, context: Context):
        if context.invoke_count == 1:
            return self.wait_poll(0)
        context.outputs["count_plus_one"] = inputs.count + 1
        context.outputs["types"] = [type(inputs.count).__name__, type(inputs.ratio).__name__]
        context.outputs["label"] = inputs.label
        context.outputs["unicode"] = "中文 ✓"
