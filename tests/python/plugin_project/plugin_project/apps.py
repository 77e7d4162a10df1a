"""Tracing turned on when Django starts, as blueapps' instrumentation app
does in a BlueKing app: in the producer, the framework's worker and
Celerity's plugin hosts alike."""

from django.apps import AppConfig


class TracingConfig(AppConfig):
    name = "plugin_project"
    label = "plugin_project_tracing"

    def ready(self):
        from plugin_project import tracing

        tracing.setup()
