//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4),
//! for platforms that scrape rather than receive OTLP.
//!
//! A second reader on the one meter provider collects on every scrape, so the
//! endpoint shows exactly the instruments the OTLP export sends, with the same
//! attributes (see [`super::Metrics`]: none carries a subject id or a secret).
//! Names follow the OpenTelemetry-to-Prometheus conventions: dots become
//! underscores, the unit is appended (`_seconds`), monotonic sums end in
//! `_total`, histograms become `_bucket{le=…}`, `_sum` and `_count`.
//!
//! The server is deliberately tiny: one request per connection, `GET
//! /metrics` only, a bounded request head and a read deadline, so a scraper
//! (or anything else that reaches the port) cannot hold it up.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, HistogramDataPoint, Metric, MetricData, ResourceMetrics,
};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read; a scrape request is a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// A client that has not sent its request head by then is dropped.
const READ_DEADLINE: Duration = Duration::from_secs(5);

/// Connections answered at once; more are closed at accept, so whatever
/// reaches the port cannot pile up tasks (a scraper needs one).
const MAX_CONNECTIONS: usize = 16;

/// The reader registered with the meter provider, shared with the HTTP
/// server that collects through it. Cumulative, as Prometheus expects.
#[derive(Debug, Clone, Default)]
pub struct PrometheusReader(Arc<ManualReader>);

impl MetricReader for PrometheusReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

impl PrometheusReader {
    /// Collects now and renders the text exposition.
    pub fn scrape(&self) -> Result<String, String> {
        let mut metrics = ResourceMetrics::default();
        self.collect(&mut metrics).map_err(|e| e.to_string())?;
        Ok(render(&metrics))
    }
}

/// Binds `addr` now (so a taken port fails the start) and serves `/metrics`
/// until the task is aborted.
pub fn spawn(
    addr: SocketAddr,
    reader: PrometheusReader,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use anyhow::Context as _;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (telemetry.prometheus_listen)"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let listener = TcpListener::from_std(listener)?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        drop(stream);
                        continue;
                    };
                    let reader = reader.clone();
                    tokio::spawn(async move {
                        answer(stream, reader).await;
                        drop(slot);
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "prometheus accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((bound, task))
}

async fn answer(mut stream: TcpStream, reader: PrometheusReader) {
    let head = match tokio::time::timeout(READ_DEADLINE, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let mut request_line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default()
        .split(|&b| b == b' ');
    let (method, target) = (request_line.next(), request_line.next());
    let path = target.map(|t| t.split(|&b| b == b'?').next().unwrap_or_default());
    let (status, content_type, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            // Collecting runs the gauges' callbacks and walks every series:
            // CPU work, off the async workers.
            let scraped = tokio::task::spawn_blocking(move || reader.scrape()).await;
            match scraped {
                Ok(Ok(text)) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "prometheus collection failed");
                    (
                        "503 Service Unavailable",
                        "text/plain",
                        "collection failed\n".to_owned(),
                    )
                }
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain",
                    "collection failed\n".to_owned(),
                ),
            }
        }
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics is served here\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The request head (up to the blank line), or None if the client closed
/// first or sent more than [`MAX_REQUEST_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > MAX_REQUEST_HEAD {
            return None;
        }
    }
}

/// The text exposition of everything collected.
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => render_metric(&mut out, metric, data),
                AggregatedMetrics::U64(data) => render_metric(&mut out, metric, data),
                AggregatedMetrics::I64(data) => render_metric(&mut out, metric, data),
            }
        }
    }
    out
}

/// A sample value as Prometheus parses it.
trait Sample: Copy {
    fn text(self) -> String;
}

impl Sample for f64 {
    fn text(self) -> String {
        float(self)
    }
}

impl Sample for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Sample for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

fn render_metric<T: Sample>(out: &mut String, metric: &Metric, data: &MetricData<T>) {
    let base = metric_name(metric.name(), metric.unit());
    let (kind, name) = match data {
        MetricData::Sum(sum) if sum.is_monotonic() => ("counter", format!("{base}_total")),
        MetricData::Sum(_) | MetricData::Gauge(_) => ("gauge", base),
        MetricData::Histogram(_) => ("histogram", base),
        // No instrument of the service is exponential; one added later shows
        // up in the OTLP export only until it is rendered here.
        MetricData::ExponentialHistogram(_) => return,
    };
    let _ = writeln!(out, "# HELP {name} {}", escape_help(metric.description()));
    let _ = writeln!(out, "# TYPE {name} {kind}");
    match data {
        MetricData::Sum(sum) => {
            for point in sum.data_points() {
                sample(out, &name, point.attributes(), None, &point.value().text());
            }
        }
        MetricData::Gauge(gauge) => {
            for point in gauge.data_points() {
                sample(out, &name, point.attributes(), None, &point.value().text());
            }
        }
        MetricData::Histogram(histogram) => {
            for point in histogram.data_points() {
                render_histogram_point(out, &name, point);
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn render_histogram_point<T: Sample>(out: &mut String, name: &str, point: &HistogramDataPoint<T>) {
    let bucket = format!("{name}_bucket");
    // OpenTelemetry counts per bucket; Prometheus counts up to each bound.
    let mut cumulative = 0u64;
    for (bound, count) in point.bounds().zip(point.bucket_counts()) {
        cumulative += count;
        sample(
            out,
            &bucket,
            point.attributes(),
            Some(&float(bound)),
            &cumulative.to_string(),
        );
    }
    sample(
        out,
        &bucket,
        point.attributes(),
        Some("+Inf"),
        &point.count().to_string(),
    );
    sample(
        out,
        &format!("{name}_sum"),
        point.attributes(),
        None,
        &point.sum().text(),
    );
    sample(
        out,
        &format!("{name}_count"),
        point.attributes(),
        None,
        &point.count().to_string(),
    );
}

fn sample<'a>(
    out: &mut String,
    name: &str,
    attributes: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    let mut labels: Vec<(String, String)> = attributes
        .map(|kv| (sanitize(kv.key.as_str()), kv.value.to_string()))
        .collect();
    labels.sort();
    if let Some(le) = le {
        labels.push(("le".to_owned(), le.to_owned()));
    }
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// `facevault.rpc.duration` with unit `s` is `facevault_rpc_duration_seconds`.
fn metric_name(name: &str, unit: &str) -> String {
    let name = sanitize(name);
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "By" => "bytes",
        "" | "1" => return name,
        other => return format!("{name}_{}", sanitize(other)),
    };
    if name.ends_with(suffix) {
        name
    } else {
        format!("{name}_{suffix}")
    }
}

/// Prometheus names and label keys are `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;

    /// The exposition of a counter, a gauge and a histogram, as a scraper
    /// reads it.
    #[test]
    fn renders_counters_gauges_and_histograms_in_the_text_format() {
        let reader = PrometheusReader::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader.clone())
            .build();
        let meter = provider.meter("facevault");
        let decisions = meter
            .u64_counter("facevault.verify.decisions")
            .with_description("Verify decisions")
            .build();
        decisions.add(2, &[KeyValue::new("decision", "match")]);
        decisions.add(1, &[KeyValue::new("decision", "no_match")]);
        let _gauge = meter
            .u64_observable_gauge("facevault.deletions.pending")
            .with_description("Deletions queued")
            .with_callback(|observer| observer.observe(3, &[]))
            .build();
        let duration = meter
            .f64_histogram("facevault.rpc.duration")
            .with_description("RPC latency")
            .with_unit("s")
            .with_boundaries(vec![0.01, 0.1])
            .build();
        let labels = [
            KeyValue::new("rpc.method", "Verify"),
            KeyValue::new("rpc.grpc.status_code", "OK"),
        ];
        for seconds in [0.005, 0.05, 0.05, 2.0] {
            duration.record(seconds, &labels);
        }

        let text = reader.scrape().unwrap();
        for expected in [
            "# HELP facevault_verify_decisions_total Verify decisions",
            "# TYPE facevault_verify_decisions_total counter",
            "facevault_verify_decisions_total{decision=\"match\"} 2",
            "facevault_verify_decisions_total{decision=\"no_match\"} 1",
            "# TYPE facevault_deletions_pending gauge",
            "facevault_deletions_pending 3",
            "# TYPE facevault_rpc_duration_seconds histogram",
            "facevault_rpc_duration_seconds_bucket{rpc_grpc_status_code=\"OK\",rpc_method=\"Verify\",le=\"0.01\"} 1",
            "facevault_rpc_duration_seconds_bucket{rpc_grpc_status_code=\"OK\",rpc_method=\"Verify\",le=\"0.1\"} 3",
            "facevault_rpc_duration_seconds_bucket{rpc_grpc_status_code=\"OK\",rpc_method=\"Verify\",le=\"+Inf\"} 4",
            "facevault_rpc_duration_seconds_sum{rpc_grpc_status_code=\"OK\",rpc_method=\"Verify\"} 2.105",
            "facevault_rpc_duration_seconds_count{rpc_grpc_status_code=\"OK\",rpc_method=\"Verify\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == expected),
                "no line {expected:?} in\n{text}"
            );
        }
    }

    #[test]
    fn names_and_labels_are_sanitised_and_escaped() {
        assert_eq!(
            metric_name("facevault.keys.epoch_age_days", ""),
            "facevault_keys_epoch_age_days"
        );
        assert_eq!(metric_name("a.b", "ms"), "a_b_milliseconds");
        assert_eq!(metric_name("x.seconds", "s"), "x_seconds");
        assert_eq!(sanitize("9lives-x"), "_9lives_x");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
