"""Tracing for the test project, as blueapps turns it on in a BlueKing
app: when ENABLE_OTEL_TRACE is true, a tracer provider exporting over
OTLP/gRPC to BKAPP_OTEL_GRPC_HOST, named BKAPP_OTEL_SERVICE_NAME, sampled by
BKAPP_OTEL_SAMPLER (blueapps' default: parentbased_always_off), with
BlueKing APM's data token as the resource attribute bk.data.token; and the
Celery and requests instrumentations. With the standard OTEL_* variables
only (OTEL_EXPORTER_OTLP_ENDPOINT set), the SDK reads them itself.

A stand-in for blueapps' setup (blueapps itself does not install here: see
framework-requirements.txt), so that the framework's own worker and the
producer trace as a template app's do. Off unless configured.
"""

import os

_TRUE = ("1", "true", "yes", "on")


PROVIDER = None


def setup():
    """Once per process; returns the provider, or None when tracing is off."""
    global PROVIDER
    if PROVIDER is not None:
        return PROVIDER
    enabled = os.environ.get("ENABLE_OTEL_TRACE", "").lower() in _TRUE
    standard = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if not (enabled or standard):
        return None

    try:
        from opentelemetry import trace
    except ImportError:
        # Not installed in this environment: the app runs untraced.
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace import sampling

    if enabled:
        attributes = {"service.name": os.environ.get("BKAPP_OTEL_SERVICE_NAME", "plugin-project")}
        token = os.environ.get("BKAPP_OTEL_BK_DATA_TOKEN")
        if token:
            attributes["bk.data.token"] = token
        sampler = _sampler(os.environ.get("BKAPP_OTEL_SAMPLER", "parentbased_always_off"), sampling)
        exporter = GrpcExporter(endpoint=os.environ.get("BKAPP_OTEL_GRPC_HOST", "http://localhost:4317"), insecure=True)
        provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    else:
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        exporter = HttpExporter() if protocol == "http/protobuf" else GrpcExporter()
        provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
    RequestsInstrumentor().instrument()
    PROVIDER = provider
    return provider


def _sampler(name, sampling):
    ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    return {
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
        "parentbased_always_on": lambda: sampling.DEFAULT_ON,
        "parentbased_always_off": lambda: sampling.DEFAULT_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio),
        "parentbased_traceidratio": lambda: sampling.ParentBasedTraceIdRatio(ratio),
    }[name]()
