//! The real binary, `facevault serve`, exporting to a real OTLP/gRPC receiver run
//! by the test; afterwards everything it produced (logs, spans, audit events) is
//! searched for the subject id and the embedding.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use facevault::proto::audit_log_client::AuditLogClient;
use facevault::proto::{self, Decision};
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
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Receiver {
    span_names: Arc<Mutex<Vec<String>>>,
    /// Every exported span, encoded, to search for leaks.
    span_bytes: Arc<Mutex<Vec<u8>>>,
    metric_names: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let request = request.into_inner();
        self.span_bytes
            .lock()
            .unwrap()
            .extend(request.encode_to_vec());
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            self.span_names.lock().unwrap().push(span.name.clone());
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        for m in request
            .into_inner()
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            self.metric_names.lock().unwrap().push(m.name.clone());
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_spans_and_metrics_and_leaks_nothing() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .add_service(MetricsServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // A library app gives us Redis, keys and PKI; the binary is what is tested.
    let mut app = spawn_app().await;
    let (mut child, log_path) = app
        .spawn_binary(&format!(
            "[telemetry]\notlp_endpoint = \"{otlp}\"\nmetrics_interval_ms = 200\n\n[logging]\nformat = \"json\"\nlevel = \"debug,h2=info,hyper=info,tower=info,tonic=info\"\n"
        ))
        .await;

    let subject = "subject-secret-7c1e@example.org";
    let values = face(77);
    let mut client = app.app_client().await;
    app.enroll(&mut client, subject, &values).await;
    let matched = app
        .verify(&mut client, subject, &capture_of(&values, 0.2, 1))
        .await
        .unwrap();
    assert_eq!(matched.decision(), Decision::Match);
    app.verify(&mut client, subject, &face(78)).await.unwrap();
    let refused = client
        .verify(app.verify_request(subject, &values, "nope"))
        .await;
    assert!(refused.is_err());
    let tls = app.tls_config(&app.pki.auditor.0, &app.pki.auditor.1);
    let mut audit = AuditLogClient::new(app.channel_with(tls).await.unwrap());
    let events = audit
        .list_events(proto::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(events.events.len() >= 4);
    let trace_ids: Vec<_> = events.events.iter().map(|e| e.trace_id.clone()).collect();
    assert!(
        trace_ids.iter().all(|t| t.len() == 32),
        "audit events carry trace ids: {trace_ids:?}"
    );
    client
        .delete_subject(proto::DeleteSubjectRequest {
            subject_id: subject.to_owned(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;

    // Graceful shutdown: SIGTERM, drain, flush audit and telemetry, exit 0.
    let pid = child.id().unwrap();
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");

    let names = receiver.span_names.lock().unwrap().clone();
    for expected in [
        "facevault.v1.FaceVault/Enroll",
        "facevault.v1.FaceVault/Verify",
        "facevault.v1.FaceVault/DeleteSubject",
        "facevault.v1.AuditLog/ListEvents",
        "redis.verify_begin",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "no span {expected}: {names:?}"
        );
    }
    let metrics = receiver.metric_names.lock().unwrap().clone();
    for expected in [
        "facevault.rpc.duration",
        "facevault.verify.decisions",
        "facevault.audit.events",
    ] {
        assert!(
            metrics.iter().any(|n| n == expected),
            "no metric {expected}: {metrics:?}"
        );
    }

    // Nothing produced anywhere names the subject or carries the embedding.
    let logs = std::fs::read(&log_path).unwrap();
    assert!(logs.len() > 1000, "debug logs were written");
    let spans = receiver.span_bytes.lock().unwrap().clone();
    let audit_bytes: Vec<u8> = events
        .events
        .iter()
        .flat_map(|e| e.encode_to_vec())
        .collect();
    for (what, bytes) in [
        ("logs", &logs),
        ("spans", &spans),
        ("audit events", &audit_bytes),
    ] {
        assert!(!contains(bytes, subject.as_bytes()), "subject id in {what}");
        assert!(
            !contains(bytes, b"7c1e"),
            "part of the subject id in {what}"
        );
        for v in values.iter().take(32) {
            assert!(
                !contains(bytes, &v.to_le_bytes()),
                "embedding bytes in {what}"
            );
            assert!(
                !contains(bytes, format!("{v}").as_bytes()),
                "embedding value {v} in {what}"
            );
        }
    }
}

/// `GET` over plain HTTP/1.1 with a minimal client: the status line and the
/// body.
async fn http_get(port: u16, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the scrape answered in time")
    .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample line that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// With `telemetry.prometheus_listen` and OTLP off, the binary serves the
/// instruments the calls moved at `/metrics`, in the text format, with no
/// subject id anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_prometheus_metrics_without_otlp() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut app = spawn_app().await;
    let (_child, log_path) = app
        .spawn_binary(&format!(
            "[telemetry]\nprometheus_listen = \"127.0.0.1:{port}\"\n"
        ))
        .await;

    let subject = "subject-secret-9a4d@example.org";
    let values = face(91);
    let mut client = app.app_client().await;
    app.enroll(&mut client, subject, &values).await;
    for _ in 0..2 {
        let matched = app
            .verify(&mut client, subject, &capture_of(&values, 0.2, 1))
            .await
            .unwrap();
        assert_eq!(matched.decision(), Decision::Match);
    }
    app.verify(&mut client, subject, &face(92)).await.unwrap();

    let (status, text) = http_get(port, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{text}");
    for family in [
        "# TYPE facevault_rpc_duration_seconds histogram",
        "# TYPE facevault_verify_decisions_total counter",
        "# TYPE facevault_audit_events_total counter",
        "# TYPE facevault_deletions_pending gauge",
    ] {
        assert!(
            text.lines().any(|l| l == family),
            "no {family:?} in\n{text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "facevault_verify_decisions_total{decision=\"match\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "facevault_verify_decisions_total{decision=\"no_match\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "facevault_rpc_duration_seconds_count{rpc_grpc_status_code=\"OK\",rpc_method=\"Verify\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        sample(&text, "facevault_audit_events_total").unwrap_or(0.0) >= 4.0,
        "{text}"
    );
    assert!(!text.contains(subject) && !text.contains("9a4d"), "{text}");

    // Only GET /metrics is served.
    assert_eq!(http_get(port, "/").await.0, "HTTP/1.1 404 Not Found");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains(&format!("http://127.0.0.1:{port}/metrics")),
        "the start-up log names the endpoint: {log}"
    );
}
