//! Logs, traces and metrics.
//!
//! Logs go to stderr through `tracing`: JSON in production, human-readable in
//! dev. When `[telemetry] otlp_endpoint` is set, spans, metrics and the same
//! log events (with their fields as attributes) are also exported over
//! OTLP/gRPC, and every JSON log line inside a span carries the
//! `trace_id`/`span_id` of that span so logs and traces can be joined.
//!
//! Nothing logged or exported anywhere carries an embedding, a raw subject id
//! or a key; the types that hold them redact their `Debug`, and span fields
//! and metric attributes must stay to the low-cardinality values documented
//! on [`Metrics`] and [`init`].
//!
//! # Naming spans
//!
//! The exported span name is the `otel.name` field when the span has one,
//! otherwise the name given to the `tracing` macro. Other `otel.*` fields are
//! interpreted too: `otel.kind` (`"server"`, `"client"`, ...), and
//! `otel.status_code` (`"ok"`/`"error"`) with `otel.status_description`.
//! Every other field becomes a span attribute under its own name, e.g.
//!
//! ```ignore
//! let span = tracing::info_span!(
//!     "facevault.v1.FaceVault/Verify",
//!     otel.name = "facevault.v1.FaceVault/Verify",
//!     otel.kind = "server",
//!     rpc.method = "Verify",
//!     tenant = %tenant,
//!     otel.status_code = tracing::field::Empty,
//! );
//! ```
//!
//! `otel.name` and `otel.kind` must be given when the span is created: the
//! OpenTelemetry span is started the first time the `tracing` span is entered
//! (or its context is read), and later `span.record("otel.name", ..)` calls no
//! longer rename it. Ordinary attributes and `otel.status_code` may be
//! recorded later. Spans below the `level` filter are not created at all, so
//! RPC spans must be `info` or above.

mod prometheus;

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};
use opentelemetry::trace::{SpanContext, TraceContextExt as _, TracerProvider as _};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde::Deserialize;
use tracing::{Event, Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Instrumentation scope of the tracer and meter, and the fallback
/// `service.name` when the configured one is blank.
const INSTRUMENTATION_SCOPE: &str = "facevault";

/// The flushes run in parallel under this one budget (plus a second of
/// slack), so a dead collector cannot hold up a graceful shutdown for long.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(5);

/// Per-request cap on an OTLP export. The SDK default (10 s) is longer than
/// the whole shutdown budget, so one stuck request would use up the final
/// flush.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// RPC latencies are sub-millisecond to a few seconds; the SDK's default
/// buckets are sized for milliseconds and would put every RPC in the first.
const RPC_DURATION_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The exporter's own stack (tonic → tower → hyper → h2) emits `tracing`
/// spans and events; exporting those would make every export produce more
/// to export. Matched on the target's crate segment with `-` and `_` alike,
/// because the OpenTelemetry crates' internal logs use the package name
/// ("opentelemetry-otlp") rather than the module path.
const EXPORT_PIPELINE_TARGETS: [&str; 10] = [
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "tokio",
    "opentelemetry",
    "opentelemetry_sdk",
    "opentelemetry_otlp",
    "opentelemetry_appender_tracing",
];

/// `[telemetry]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// OTLP/gRPC collector endpoint, e.g. "http://otel-collector:4317"; None
    /// (default) = no export, logs only. Only `http://` is supported: the
    /// exporter is built without TLS.
    pub otlp_endpoint: Option<String>,
    /// `service.name` resource attribute. Default "facevault".
    pub service_name: String,
    /// How often metrics are exported. Default 10 000 ms.
    pub metrics_interval_ms: u64,
    /// Fraction of new traces sampled (a trace continued from a caller keeps
    /// the caller's decision). Clamped to 0.0..=1.0; default 1.0.
    pub trace_sample_ratio: f64,
    /// Address of the Prometheus scrape endpoint (`GET /metrics`, plain
    /// HTTP), e.g. "0.0.0.0:9464"; None (default) = not served. The same
    /// instruments as the OTLP export, with or without OTLP.
    pub prometheus_listen: Option<SocketAddr>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "facevault".to_owned(),
            metrics_interval_ms: 10_000,
            trace_sample_ratio: 1.0,
            prometheus_listen: None,
        }
    }
}

/// Keeps the OpenTelemetry providers alive. Call [`Telemetry::shutdown`] on
/// graceful shutdown: dropping it does not flush, because the installed
/// subscriber and the global meter provider keep their own references.
#[must_use = "call `shutdown().await` on graceful exit, or buffered spans, metrics and logs are lost"]
pub struct Telemetry {
    providers: Option<Providers>,
    /// Present when anything reads the metrics: OTLP, Prometheus or both.
    meter: Option<SdkMeterProvider>,
    prometheus: Option<tokio::task::JoinHandle<()>>,
}

/// The OTLP span and log pipelines.
struct Providers {
    tracer: SdkTracerProvider,
    logger: SdkLoggerProvider,
}

impl Telemetry {
    /// Flushes and stops span, metric and log export. Returns within a few
    /// seconds even if the collector is unreachable; what could not be sent by
    /// then is dropped with a warning.
    pub async fn shutdown(self) {
        if let Some(server) = self.prometheus {
            server.abort();
        }
        // The SDK flushes by handing work to its own threads and blocking on
        // the answer; on an async worker that blocking can stall the very
        // runtime the gRPC channel needs, so it goes to the blocking pool.
        let mut flushes = Vec::new();
        if let Some(Providers { tracer, logger }) = self.providers {
            flushes.push((
                "spans",
                tokio::task::spawn_blocking(move || {
                    tracer
                        .shutdown_with_timeout(SHUTDOWN_BUDGET)
                        .map_err(|e| e.to_string())
                }),
            ));
            flushes.push((
                "logs",
                tokio::task::spawn_blocking(move || {
                    logger
                        .shutdown_with_timeout(SHUTDOWN_BUDGET)
                        .map_err(|e| e.to_string())
                }),
            ));
        }
        if let Some(meter) = self.meter {
            flushes.push((
                "metrics",
                tokio::task::spawn_blocking(move || {
                    meter
                        .shutdown_with_timeout(SHUTDOWN_BUDGET)
                        .map_err(|e| e.to_string())
                }),
            ));
        }
        if flushes.is_empty() {
            return;
        }
        let all = futures::future::join_all(
            flushes
                .into_iter()
                .map(|(signal, task)| async move { (signal, task.await) }),
        );
        match tokio::time::timeout(SHUTDOWN_BUDGET + Duration::from_secs(1), all).await {
            Ok(outcomes) => {
                for (signal, outcome) in outcomes {
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::warn!(signal, %error, "telemetry flush failed")
                        }
                        Err(error) => {
                            tracing::warn!(signal, %error, "telemetry flush task failed")
                        }
                    }
                }
            }
            Err(_) => tracing::warn!(
                budget_ms = SHUTDOWN_BUDGET.as_millis() as u64,
                "telemetry flush timed out; unsent spans, metrics and logs dropped"
            ),
        }
    }
}

/// Installs the global `tracing` subscriber and, when
/// `settings.otlp_endpoint` is set, OTLP/gRPC export of spans, metrics and
/// logs.
///
/// * `level` is an `EnvFilter` directive ("info", "facevault=debug,info");
///   an invalid one falls back to "info" with a warning.
/// * Logs go to stderr: flattened JSON for [`LogFormat::Json`] (with
///   `trace_id`/`span_id` when exporting and inside a span), compact text for
///   [`LogFormat::Pretty`].
/// * Spans are batched and exported; the gRPC connection is driven by the
///   current tokio runtime, so this must be called inside one (it returns an
///   error otherwise).
/// * The meter provider is installed globally, so [`metrics`] instruments
///   export every `metrics_interval_ms`.
/// * Every event that passes `level` is also batched and exported as an OTLP
///   log record: the message is the body, the other fields are attributes.
///   Events from the exporter's own stack are not (see
///   `EXPORT_PIPELINE_TARGETS`).
///
/// If a global subscriber is already installed (as in tests), logging is
/// left as it is and this still returns `Ok`; span and log export then do
/// nothing, while metrics export still works.
pub fn init(
    format: LogFormat,
    level: &str,
    settings: &TelemetrySettings,
) -> anyhow::Result<Telemetry> {
    let (filter, bad_level) = match EnvFilter::try_new(level) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };

    let (providers, otlp_metrics) = match settings.otlp_endpoint.as_deref() {
        Some(endpoint) => {
            let (providers, reader) = build_providers(endpoint, settings)?;
            (Some(providers), Some(reader))
        }
        None => (None, None),
    };
    let prometheus_reader = settings
        .prometheus_listen
        .map(|_| prometheus::PrometheusReader::default());
    let meter = (otlp_metrics.is_some() || prometheus_reader.is_some()).then(|| {
        let mut builder = SdkMeterProvider::builder().with_resource(resource(settings));
        if let Some(reader) = otlp_metrics {
            builder = builder.with_reader(reader);
        }
        if let Some(reader) = prometheus_reader.clone() {
            builder = builder.with_reader(reader);
        }
        builder.build()
    });
    let otel_layer = providers
        .as_ref()
        .map(|p| otel_layer(p.tracer.tracer(INSTRUMENTATION_SCOPE)));
    let log_layer = providers.as_ref().map(|p| log_bridge_layer(&p.logger));

    // `filter` is a global filter: exported log records get exactly the
    // events the stderr lines do.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel_layer)
        .with(log_layer)
        .with(fmt_layer(format, std::io::stderr))
        .try_init()
        .is_ok();

    if let Some(p) = &providers {
        opentelemetry::global::set_tracer_provider(p.tracer.clone());
    }
    if let Some(meter) = &meter {
        opentelemetry::global::set_meter_provider(meter.clone());
        // Registers the observable gauges with the real provider now, so they
        // export even before the service first records anything.
        metrics();
    }
    let prometheus = match (settings.prometheus_listen, prometheus_reader) {
        (Some(addr), Some(reader)) => {
            tokio::runtime::Handle::try_current()
                .context("telemetry::init must be called inside a tokio runtime")?;
            let (bound, server) = prometheus::spawn(addr, reader)?;
            tracing::info!(addr = %bound, "prometheus metrics on http://{bound}/metrics");
            Some(server)
        }
        _ => None,
    };

    if let Some(error) = bad_level {
        tracing::warn!(level, %error, "invalid log level; using \"info\"");
    }
    if !installed {
        tracing::debug!("a tracing subscriber was already installed; kept it");
    }
    Ok(Telemetry {
        providers,
        meter,
        prometheus,
    })
}

fn service_name(settings: &TelemetrySettings) -> String {
    match settings.service_name.trim() {
        "" => INSTRUMENTATION_SCOPE.to_owned(),
        name => name.to_owned(),
    }
}

fn resource(settings: &TelemetrySettings) -> Resource {
    Resource::builder()
        .with_service_name(service_name(settings))
        .build()
}

/// The OTLP span and log pipelines, and the reader that pushes metrics.
fn build_providers(
    endpoint: &str,
    settings: &TelemetrySettings,
) -> anyhow::Result<(
    Providers,
    PeriodicReader<opentelemetry_otlp::MetricExporter>,
)> {
    // Building a tonic channel spawns its worker on the ambient runtime and
    // panics without one; an error names the mistake instead.
    tokio::runtime::Handle::try_current()
        .context("telemetry::init must be called inside a tokio runtime")?;

    let resource = resource(settings);

    let span_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("OTLP span exporter for {endpoint:?}"))?;
    // NaN would otherwise reach the sampler unchecked; clamp() keeps NaN.
    let ratio = if settings.trace_sample_ratio.is_nan() {
        1.0
    } else {
        settings.trace_sample_ratio.clamp(0.0, 1.0)
    };
    let tracer = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_batch_exporter(span_exporter)
        .build();

    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("OTLP metric exporter for {endpoint:?}"))?;
    let reader = PeriodicReader::builder(metric_exporter)
        .with_interval(Duration::from_millis(settings.metrics_interval_ms.max(1)))
        .build();

    let log_exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .with_context(|| format!("OTLP log exporter for {endpoint:?}"))?;
    let logger = SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(log_exporter)
        .build();

    Ok((Providers { tracer, logger }, reader))
}

fn otel_layer<S>(tracer: opentelemetry_sdk::trace::SdkTracer) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(
            not_export_pipeline as fn(&Metadata<'_>) -> bool,
        ))
}

fn log_bridge_layer<S>(provider: &SdkLoggerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    OpenTelemetryTracingBridge::new(provider).with_filter(tracing_subscriber::filter::filter_fn(
        not_export_pipeline as fn(&Metadata<'_>) -> bool,
    ))
}

fn not_export_pipeline(meta: &Metadata<'_>) -> bool {
    !is_export_pipeline(meta.target())
}

fn is_export_pipeline(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target).as_bytes();
    EXPORT_PIPELINE_TARGETS.iter().any(|known| {
        known.len() == krate.len()
            && known
                .bytes()
                .zip(krate.iter().copied())
                .all(|(k, t)| k == t || (k == b'_' && t == b'-'))
    })
}

fn fmt_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .event_format(JsonWithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_target(true),
            })
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_target(true)
            .with_writer(writer)
            .boxed(),
    }
}

/// The stock JSON formatter with `trace_id` and `span_id` prepended; the
/// stock one has no hook for extra top-level fields.
struct JsonWithTraceIds {
    inner: Format<Json>,
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = event_span_context(event);
        match (ids, line.strip_prefix('{')) {
            (Some(sc), Some(rest)) => {
                let sep = if rest.starts_with('}') { "" } else { "," };
                write!(
                    writer,
                    "{{\"trace_id\":\"{}\",\"span_id\":\"{}\"{sep}{rest}",
                    sc.trace_id(),
                    sc.span_id()
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

/// The OpenTelemetry span an event belongs to, if that span is exported.
fn event_span_context(event: &Event<'_>) -> Option<SpanContext> {
    let cx = if let Some(parent) = event.parent() {
        // While an event is being dispatched, tracing hands nested lookups the
        // global dispatcher only; under a scoped one this finds nothing.
        tracing::dispatcher::get_default(|dispatch| {
            tracing_opentelemetry::get_otel_context(parent, dispatch)
        })?
    } else if event.is_contextual() {
        // Entering a span attaches its OpenTelemetry context to the thread,
        // which is exactly the span the event is recorded under.
        opentelemetry::Context::current()
    } else {
        return None;
    };
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Trace id (32 lowercase hex digits) of the current `tracing` span's
/// OpenTelemetry context; None when not exporting or outside any span. Given
/// for unsampled traces too, so audit records still correlate with logs.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The service's instruments. Attribute values must come from the small
/// fixed sets documented per field: every distinct combination is a separate
/// time series at the collector.
pub struct Metrics {
    /// RPC latency in seconds ("facevault.rpc.duration", unit "s").
    /// Attributes: `rpc.method` (e.g. "Verify") and `rpc.grpc.status_code`
    /// (the code's name, e.g. "OK", "PERMISSION_DENIED").
    pub rpc_duration: Histogram<f64>,
    /// Verify decisions ("facevault.verify.decisions"); attribute `decision`
    /// = "match" | "no_match".
    pub verify_decisions: Counter<u64>,
    /// Subjects locked out after repeated failures ("facevault.lockouts").
    pub lockouts: Counter<u64>,
    /// Requests refused as replays ("facevault.replays_refused").
    pub replays_refused: Counter<u64>,
    /// Requests refused by rate limiting ("facevault.rate_limited").
    pub rate_limited: Counter<u64>,
    /// Requests shed under load ("facevault.load_shed").
    pub load_shed: Counter<u64>,
    /// Requests refused over their caller's in-flight share
    /// ("facevault.caller_in_flight").
    pub caller_in_flight: Counter<u64>,
    /// Audit events written ("facevault.audit.events").
    pub audit_events: Counter<u64>,
    /// Retention entries that could not be carried out and were skipped
    /// ("facevault.retention.skipped").
    pub retention_skipped: Counter<u64>,
    /// Cut-short changes the reconciler finished ("facevault.reconciled");
    /// attribute `what` = "ledger" | "cancellation".
    pub reconciled: Counter<u64>,
    /// Key-file reloads that failed and kept the keys in use
    /// ("facevault.keys.reload_failures").
    pub key_reload_failures: Counter<u64>,
    /// DEKs re-wrapped to the active epoch ("facevault.keys.rewrapped").
    pub rewrapped: Counter<u64>,
    /// Shred statements refused, or stored ones not served
    /// ("facevault.keys.shred_refused"); attribute `reason` (see
    /// `domain::key_epochs::ShredRefusal::as_str`).
    pub shred_refused: Counter<u64>,
    /// Sealed records that did not open under the service's keys and were
    /// refused ("facevault.integrity.refused"); attribute `what` =
    /// "decommission-reason".
    pub integrity_refused: Counter<u64>,
    /// Stored templates enrolled before a verified erasure of their subject,
    /// deleted instead of re-wrapped ("facevault.keys.resurrections_refused").
    pub resurrections_refused: Counter<u64>,
    /// Tenant walks the re-wrap worker refused because the tenant's audit log
    /// did not verify intact ("facevault.keys.rewrap_refused").
    pub rewrap_refused: Counter<u64>,
    /// Audit breaks the service found while acting on the log: registry
    /// incidents and entries the retention trim refused to excuse
    /// ("facevault.audit.breaks_found"); attribute `kind` (a break kind).
    pub audit_breaks: Counter<u64>,
    // Held so the gauges' callbacks live as long as the instruments.
    _gauges: Vec<ObservableGauge<u64>>,
}

/// Values the observable gauges report at each export; see [`set_gauges`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GaugeSnapshot {
    /// "facevault.deletions.pending"
    pub deletions_pending: u64,
    /// "facevault.deletions.overdue"
    pub deletions_overdue: u64,
    /// "facevault.subjects.stored"
    pub subjects_stored: u64,
    /// "facevault.filing.threshold"
    pub filing_threshold: u64,
    /// "facevault.calendar.fallback", exported as 0 or 1.
    pub calendar_fallback: bool,
    /// "facevault.keys.rewrap.pending": DEKs the last re-wrap pass found under
    /// an epoch other than the active one.
    pub rewrap_pending: u64,
    /// "facevault.keys.epoch_age_days": age of the oldest epoch in the keyring
    /// (it bounds how long an erased template stays readable in old copies).
    pub epoch_age_days: u64,
    /// "facevault.keys.retirement_overdue", exported as 0 or 1: the oldest
    /// epoch is past the date it had to be retired by.
    pub epoch_retirement_overdue: bool,
}

static GAUGES: Mutex<GaugeSnapshot> = Mutex::new(GaugeSnapshot {
    deletions_pending: 0,
    deletions_overdue: 0,
    subjects_stored: 0,
    filing_threshold: 0,
    calendar_fallback: false,
    rewrap_pending: 0,
    epoch_age_days: 0,
    epoch_retirement_overdue: false,
});

/// Replaces the values the gauges report from the next export on.
pub fn set_gauges(snapshot: GaugeSnapshot) {
    *GAUGES.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    metrics();
}

fn gauge_snapshot() -> GaugeSnapshot {
    *GAUGES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The service's instruments, created on first use from the global meter
/// provider. Call [`init`] first: instruments created before a provider is
/// installed stay no-ops for the life of the process (harmless when export
/// is off).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new(&opentelemetry::global::meter(INSTRUMENTATION_SCOPE)))
}

impl Metrics {
    fn new(meter: &Meter) -> Self {
        let counter = |name: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_description(description)
                .build()
        };
        let gauge =
            |name: &'static str, description: &'static str, read: fn(&GaugeSnapshot) -> u64| {
                meter
                    .u64_observable_gauge(name)
                    .with_description(description)
                    .with_callback(move |observer| observer.observe(read(&gauge_snapshot()), &[]))
                    .build()
            };
        Self {
            rpc_duration: meter
                .f64_histogram("facevault.rpc.duration")
                .with_description("RPC latency")
                .with_unit("s")
                .with_boundaries(RPC_DURATION_BUCKETS_S.to_vec())
                .build(),
            verify_decisions: counter("facevault.verify.decisions", "Verify decisions"),
            lockouts: counter("facevault.lockouts", "Subjects locked out"),
            replays_refused: counter("facevault.replays_refused", "Replayed requests refused"),
            rate_limited: counter("facevault.rate_limited", "Requests refused by rate limit"),
            load_shed: counter("facevault.load_shed", "Requests shed under load"),
            caller_in_flight: counter(
                "facevault.caller_in_flight",
                "Requests refused over their caller's in-flight share",
            ),
            audit_events: counter("facevault.audit.events", "Audit events written"),
            retention_skipped: counter(
                "facevault.retention.skipped",
                "Retention entries skipped as unreadable",
            ),
            reconciled: counter(
                "facevault.reconciled",
                "Cut-short changes finished by the reconciler",
            ),
            key_reload_failures: counter(
                "facevault.keys.reload_failures",
                "Key-file reloads that failed (the keys in use were kept)",
            ),
            rewrapped: counter(
                "facevault.keys.rewrapped",
                "DEKs re-wrapped to the active key epoch",
            ),
            shred_refused: counter(
                "facevault.keys.shred_refused",
                "Shred statements refused: the signed receipt, the keyring or a readable template says no",
            ),
            integrity_refused: counter(
                "facevault.integrity.refused",
                "Sealed records refused because they did not open",
            ),
            resurrections_refused: counter(
                "facevault.keys.resurrections_refused",
                "Restored copies of erased templates deleted instead of re-wrapped",
            ),
            rewrap_refused: counter(
                "facevault.keys.rewrap_refused",
                "Tenant re-wrap walks refused: the tenant's audit log did not verify intact",
            ),
            audit_breaks: counter(
                "facevault.audit.breaks_found",
                "Audit breaks found by the registry publisher and the retention trim",
            ),
            _gauges: vec![
                gauge("facevault.deletions.pending", "Deletions queued", |s| {
                    s.deletions_pending
                }),
                gauge(
                    "facevault.deletions.overdue",
                    "Deletions past their statutory deadline",
                    |s| s.deletions_overdue,
                ),
                gauge(
                    "facevault.subjects.stored",
                    "Subjects with a stored template",
                    |s| s.subjects_stored,
                ),
                gauge(
                    "facevault.filing.threshold",
                    "Current filing threshold",
                    |s| s.filing_threshold,
                ),
                gauge(
                    "facevault.calendar.fallback",
                    "1 while the built-in holiday calendar is in use",
                    |s| u64::from(s.calendar_fallback),
                ),
                gauge(
                    "facevault.keys.rewrap.pending",
                    "DEKs not yet re-wrapped to the active key epoch",
                    |s| s.rewrap_pending,
                ),
                gauge(
                    "facevault.keys.epoch_age_days",
                    "Age in days of the oldest key epoch in the keyring",
                    |s| s.epoch_age_days,
                ),
                gauge(
                    "facevault.keys.retirement_overdue",
                    "1 while the oldest key epoch is past its retirement date",
                    |s| u64::from(s.epoch_retirement_overdue),
                ),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::mpsc::{Receiver, Sender, channel};

    use opentelemetry::KeyValue;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue};
    use tonic::{Request, Response, Status};

    use super::*;

    #[derive(Debug)]
    enum Received {
        Span {
            name: String,
            trace_id: String,
            events: usize,
        },
        Metric(String),
        Log {
            service_name: Option<Value>,
            scope: String,
            body: Option<Value>,
            attributes: Vec<(String, Option<Value>)>,
        },
    }

    fn value(v: Option<AnyValue>) -> Option<Value> {
        v.and_then(|v| v.value)
    }

    fn attribute(attributes: &[ProtoKeyValue], key: &str) -> Option<Value> {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| value(kv.value.clone()))
    }

    #[derive(Clone)]
    struct Collector(Sender<Received>);

    impl Collector {
        fn send(&self, item: Received) {
            let _ = self.0.send(item);
        }
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            let spans = request
                .into_inner()
                .resource_spans
                .into_iter()
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans);
            for span in spans {
                let trace_id = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                self.send(Received::Span {
                    name: span.name,
                    trace_id,
                    events: span.events.len(),
                });
            }
            Ok(Response::new(ExportTraceServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl MetricsService for Collector {
        async fn export(
            &self,
            request: Request<ExportMetricsServiceRequest>,
        ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
            let metrics = request
                .into_inner()
                .resource_metrics
                .into_iter()
                .flat_map(|r| r.scope_metrics)
                .flat_map(|s| s.metrics);
            for metric in metrics {
                self.send(Received::Metric(metric.name));
            }
            Ok(Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    #[tonic::async_trait]
    impl LogsService for Collector {
        async fn export(
            &self,
            request: Request<ExportLogsServiceRequest>,
        ) -> Result<Response<ExportLogsServiceResponse>, Status> {
            for resource_logs in request.into_inner().resource_logs {
                let service_name = resource_logs
                    .resource
                    .as_ref()
                    .and_then(|r| attribute(&r.attributes, "service.name"));
                for scope_logs in resource_logs.scope_logs {
                    let scope = scope_logs.scope.map(|s| s.name).unwrap_or_default();
                    for record in scope_logs.log_records {
                        self.send(Received::Log {
                            service_name: service_name.clone(),
                            scope: scope.clone(),
                            body: value(record.body),
                            attributes: record
                                .attributes
                                .into_iter()
                                .map(|kv| (kv.key, value(kv.value)))
                                .collect(),
                        });
                    }
                }
            }
            Ok(Response::new(ExportLogsServiceResponse::default()))
        }
    }

    async fn start_collector() -> (String, Receiver<Received>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = channel();
        let collector = Collector(tx);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .add_service(MetricsServiceServer::new(collector.clone()))
                .add_service(LogsServiceServer::new(collector))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (format!("http://{addr}"), rx)
    }

    // The only test that installs the global subscriber: a process gets one.
    #[tokio::test(flavor = "multi_thread")]
    async fn exports_spans_metrics_and_logs_over_otlp_grpc() {
        let (endpoint, received) = start_collector().await;
        let settings = TelemetrySettings {
            otlp_endpoint: Some(endpoint),
            metrics_interval_ms: 200,
            ..TelemetrySettings::default()
        };
        let telemetry = init(LogFormat::Json, "info", &settings).unwrap();

        let trace_id = {
            let span = tracing::info_span!(
                "facevault.v1.FaceVault/Verify",
                otel.name = "facevault.v1.FaceVault/Verify",
                tenant = "tenant-a",
                rpc.method = "Verify",
            );
            let _entered = span.enter();
            tracing::info!(decision = "match", "verified");
            current_trace_id().expect("inside an exported span")
        };
        assert_eq!(trace_id.len(), 32);
        assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(current_trace_id(), None, "outside any span");

        metrics().rpc_duration.record(
            0.012,
            &[
                KeyValue::new("rpc.method", "Verify"),
                KeyValue::new("rpc.grpc.status_code", "OK"),
            ],
        );
        set_gauges(GaugeSnapshot {
            deletions_pending: 3,
            ..GaugeSnapshot::default()
        });

        let (tenant, chain_id, tree_size, timestamp_ms) =
            ("tenant-a", "chain-7", 4242_u64, 1_700_000_000_123_u64);
        let root_hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let signature = "c2lnbmF0dXJlLW5vdC1hLXNlY3JldA==";
        tracing::info!(
            target: "facevault::audit::anchor",
            tenant = %tenant,
            chain_id = %chain_id,
            tree_size,
            root_hash = %root_hash,
            timestamp_ms,
            signature = %signature,
            "signed tree head"
        );

        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), telemetry.shutdown())
            .await
            .expect("shutdown is bounded");
        assert!(started.elapsed() < SHUTDOWN_BUDGET + Duration::from_secs(2));

        let mut span = None;
        let mut metric_names = HashSet::new();
        let mut anchor = None;
        let mut log_scopes = HashSet::new();
        for item in received.try_iter() {
            match item {
                Received::Span {
                    name,
                    trace_id: id,
                    events,
                } if name == "facevault.v1.FaceVault/Verify" => span = Some((id, events)),
                Received::Span { .. } => {}
                Received::Metric(name) => {
                    metric_names.insert(name);
                }
                Received::Log {
                    service_name,
                    scope,
                    body,
                    attributes,
                } => {
                    if body == Some(Value::StringValue("signed tree head".into())) {
                        anchor = Some((service_name, scope.clone(), attributes));
                    }
                    log_scopes.insert(scope);
                }
            }
        }
        let (exported_trace_id, events) = span.expect("span exported before shutdown returned");
        assert_eq!(exported_trace_id, trace_id);
        assert_eq!(events, 1, "the info! inside the span is a span event");
        assert!(
            metric_names.contains("facevault.rpc.duration"),
            "{metric_names:?}"
        );
        assert!(
            metric_names.contains("facevault.deletions.pending"),
            "{metric_names:?}"
        );

        let (service_name, scope, attributes) =
            anchor.expect("the anchor line exported as a log record before shutdown returned");
        assert_eq!(service_name, Some(Value::StringValue("facevault".into())));
        assert_eq!(scope, "facevault::audit::anchor");
        let get = |key: &str| {
            attributes
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.clone())
        };
        assert_eq!(
            get("tree_size"),
            Some(Value::IntValue(4242)),
            "{attributes:?}"
        );
        assert_eq!(
            get("chain_id"),
            Some(Value::StringValue(chain_id.into())),
            "{attributes:?}"
        );
        assert_eq!(
            get("timestamp_ms"),
            Some(Value::IntValue(1_700_000_000_123)),
            "{attributes:?}"
        );
        assert_eq!(
            get("root_hash"),
            Some(Value::StringValue(root_hash.into())),
            "{attributes:?}"
        );
        assert!(
            !log_scopes.iter().any(|s| is_export_pipeline(s)),
            "{log_scopes:?}"
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // A scoped subscriber with an exporter-less provider: checks the JSON
    // lines without touching the global subscriber the other test installs.
    #[test]
    fn json_lines_carry_the_span_trace_id() {
        let provider = SdkTracerProvider::builder().build();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(otel_layer(provider.tracer("test")))
            .with(fmt_layer(LogFormat::Json, move || writer.clone()));

        let trace_id = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before any span");
            let span = tracing::info_span!("facevault.v1.FaceVault/Verify", tenant = "t");
            let _entered = span.enter();
            tracing::info!(decision = "no_match", "inside");
            current_trace_id().unwrap()
        });

        let out = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(!lines[0].contains("trace_id"), "{}", lines[0]);
        assert!(lines[0].starts_with('{') && lines[0].contains("\"message\":\"before any span\""));
        let prefix = format!("{{\"trace_id\":\"{trace_id}\",\"span_id\":\"");
        assert!(lines[1].starts_with(&prefix), "{}", lines[1]);
        assert!(
            lines[1].contains("\"decision\":\"no_match\""),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with('}'), "{}", lines[1]);
    }

    #[test]
    fn settings_defaults_and_unknown_fields() {
        let s: TelemetrySettings = toml::from_str("otlp_endpoint = \"http://c:4317\"").unwrap();
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://c:4317"));
        assert_eq!(s.service_name, "facevault");
        assert_eq!(s.metrics_interval_ms, 10_000);
        assert_eq!(s.trace_sample_ratio, 1.0);
        assert!(toml::from_str::<TelemetrySettings>("otlp_endpont = \"x\"").is_err());
    }

    #[test]
    fn export_pipeline_targets_are_not_exported() {
        assert!(is_export_pipeline("h2::proto::streams"));
        assert!(is_export_pipeline("tonic"));
        assert!(is_export_pipeline("opentelemetry-otlp"));
        assert!(is_export_pipeline("opentelemetry_sdk::logs"));
        assert!(!is_export_pipeline("tower_http::trace"));
        assert!(!is_export_pipeline("opentelemetry_extra"));
        assert!(!is_export_pipeline("facevault::service"));
    }
}
