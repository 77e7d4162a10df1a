//! Spans leave the worker in batches, off the poll's path: a poll only
//! queues its finished spans, and the SDK's batch thread sends them. The
//! queue is bounded; a span that finds it full is dropped and counted, as
//! is every span of a batch the collector refused or never answered, so a
//! slow, refusing or absent collector costs the polls nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use tokio::runtime::Handle;

use super::settings::{Protocol, Root, Sampling, Settings};
use crate::meters;

/// How long one export may take before its spans count as dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from an OTLP/HTTP collector.
const MAX_ANSWER: u64 = 1 << 20;

/// Tracing, installed: shut it down to send what is queued.
pub struct Installed {
    provider: SdkTracerProvider,
}

impl Installed {
    /// Sends what is queued (within a few seconds) and stops the batch thread.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "spans still queued at exit were not sent");
        }
    }
}

/// Builds the exporter and the provider from `settings` and makes it the
/// global one. The gRPC transport runs on `runtime`.
pub fn install(settings: &Settings, runtime: &Handle) -> Result<Installed, String> {
    let queued = Arc::new(AtomicUsize::new(0));
    let exporter = match settings.protocol.value {
        Protocol::Grpc => {
            // tonic's channel starts its connection task on the runtime.
            let _entered = runtime.enter();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&settings.endpoint.value)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("OTLP/gRPC exporter for {}: {e}", settings.endpoint.value))?;
            Counted { inner: Arc::new(exporter), runtime: Some(runtime.clone()), queued: queued.clone() }
        }
        Protocol::HttpProtobuf => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(Ureq::new())
                .with_endpoint(&settings.endpoint.value)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("OTLP/HTTP exporter for {}: {e}", settings.endpoint.value))?;
            // The client blocks: it runs on the batch thread, never on the runtime.
            Counted { inner: Arc::new(exporter), runtime: None, queued: queued.clone() }
        }
    };
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().with_max_queue_size(settings.queue.value).build())
        .build();
    let resource = Resource::builder()
        .with_service_name(settings.service_name.value.clone())
        .with_attributes(settings.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Bounded { inner: batches, queued, cap: settings.queue.value })
        .with_sampler(sampler(settings.sampling.value))
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    Ok(Installed { provider })
}

fn sampler(sampling: Sampling) -> Sampler {
    match sampling {
        Sampling::AlwaysOn => Sampler::AlwaysOn,
        Sampling::AlwaysOff => Sampler::AlwaysOff,
        Sampling::Ratio(r) => Sampler::TraceIdRatioBased(r),
        Sampling::ParentBased(root) => Sampler::ParentBased(Box::new(match root {
            Root::On => Sampler::AlwaysOn,
            Root::Off => Sampler::AlwaysOff,
            Root::Ratio(r) => Sampler::TraceIdRatioBased(r),
        })),
    }
}

/// The SDK's batch processor behind a counted bound: a span that would
/// find the queue full is dropped here, where it can be counted.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet taken into an export.
    queued: Arc<AtomicUsize>,
    cap: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!(meters::SPANS_DROPPED, "reason" => meters::QUEUE_FULL).increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it sent and what it lost.
#[derive(Debug)]
struct Counted<E> {
    inner: Arc<E>,
    /// Where the transport's futures must run (gRPC); `None`: in place.
    runtime: Option<Handle>,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter + 'static> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.queued.fetch_sub(n, Ordering::Relaxed);
        let sent = match &self.runtime {
            Some(runtime) => {
                let inner = self.inner.clone();
                match runtime.spawn(async move { inner.export(batch).await }).await {
                    Ok(sent) => sent,
                    Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
                }
            }
            None => self.inner.export(batch).await,
        };
        let n = n as u64;
        match &sent {
            Ok(()) => metrics::counter!(meters::SPANS_EXPORTED).increment(n),
            Err(e) => {
                metrics::counter!(meters::SPANS_DROPPED, "reason" => meters::EXPORT_FAILED).increment(n);
                tracing::debug!(error = %e, spans = n, "spans not exported");
            }
        }
        sent
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, when the provider is built: no export holds a clone yet.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// OTLP/HTTP over the blocking client the worker already has.
#[derive(Debug)]
struct Ureq(ureq::Agent);

impl Ureq {
    fn new() -> Ureq {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(EXPORT_TIMEOUT))
            // The exporter reads the status itself.
            .http_status_as_error(false)
            .build();
        Ureq(config.into())
    }
}

#[async_trait::async_trait]
impl HttpClient for Ureq {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut answer = self.0.run(Request::from_parts(parts, body.to_vec()))?;
        let status = answer.status();
        let body = answer.body_mut().with_config().limit(MAX_ANSWER).read_to_vec()?;
        Ok(Response::builder().status(status).body(Bytes::from(body))?)
    }
}
