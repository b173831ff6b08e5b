//! Telemetry: every metric Switchyard exports is named here, and the audit
//! records of plugin calls are written here.
//!
//! The runtime and the engine record nothing themselves: they report to a
//! [`CallObserver`] and a [`RunObserver`], and [`Telemetry`] is both. It
//! records through the `metrics` facade; without an installed recorder (the
//! one-shot CLI) recording costs almost nothing. The daemon installs one process-wide
//! Prometheus recorder ([`install`]) and renders it at `GET /metrics` on the
//! admin listener.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `switchyard_link_runs_total` | counter | `link`, `outcome` (`ok`, `failed`, `stopped`, `halted`, `paused`, `interrupted`) |
//! | `switchyard_link_run_duration_seconds` | histogram | `link` |
//! | `switchyard_records_fetched_total` | counter | `link`, `kind` (`employees`, `completions`) |
//! | `switchyard_operations_total` | counter | `link`, `kind` (`upsert-user`, `set-active`, `enroll`, `unenroll`, `push-completion`), `result` (`ok`, `retry`, `dead-letter`, `stopped`) |
//! | `switchyard_retries_total` | counter | `link` |
//! | `switchyard_dead_letters_total` | counter | `link` |
//! | `switchyard_outbox_depth` | gauge | `link` |
//! | `switchyard_dead_letter_depth` | gauge | `link` |
//! | `switchyard_link_last_success_timestamp_seconds` | gauge | `link` |
//! | `switchyard_link_last_run_timestamp_seconds` | gauge | `link` |
//! | `switchyard_plugin_calls_total` | counter | `connector`, `operation`, `result` (`ok`, `fault`) |
//! | `switchyard_plugin_call_duration_seconds` | histogram | `connector`, `plugin`, `operation` |
//! | `switchyard_limit_violations_total` | counter | `connector`, `limit` (`memory`, `deadline`, `fuel`, `output`, `stack`, `http-requests`) |
//! | `switchyard_plugin_reloads_total` | counter | `plugin`, `result` (`loaded`, `refused`, `removed`) |
//! | `switchyard_webhook_requests_total` | counter | `connector` (`unknown` for names not configured), `verdict` (recorded in `webhook.rs`) |

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::audit::{Event, Kind};
use crate::engine::{OperationResult, RunObserver, RunReport};
use crate::model::FaultKind;
use crate::runtime::{CallObserver, CallOutcome, FinishedCall};
use crate::store::Store;

/// Buckets for latency histograms, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How the text log format writes an event's fields: like the default,
/// but every value (the message included) with control characters escaped
/// ([`crate::runtime::capability::log::escape`]), so that text from a vendor
/// or a plugin, wherever it is logged, cannot forge a log line or send
/// escape sequences to the operator's terminal. The JSON format needs no
/// help: it escapes control characters, one line per event.
pub fn text_log_fields()
-> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = crate::runtime::capability::log::escape(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// Install the process-wide Prometheus recorder (once; later calls return the
/// same handle). `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new().set_buckets(BUCKETS) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("metrics buckets refused: {e}");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(e) => {
                    tracing::warn!("metrics recorder not installed: {e}");
                    None
                }
            }
        })
        .clone()
}

/// The Prometheus text exposition of everything recorded.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

/// Turns what the runtime and the engine report into metrics and, when it
/// has the audit log, into `http.request` and `plugin.call-failed` records.
pub struct Telemetry {
    audit: Option<std::sync::Arc<dyn Store>>,
}

impl Telemetry {
    /// Metrics only.
    pub const METRICS: Telemetry = Telemetry { audit: None };

    /// Metrics and the audit records of plugin calls.
    pub fn with_audit(store: std::sync::Arc<dyn Store>) -> Telemetry {
        Telemetry { audit: Some(store) }
    }
}

impl CallObserver for Telemetry {
    fn call_finished(&self, call: &FinishedCall<'_>) {
        let fault = match call.outcome {
            CallOutcome::Fault(f) => Some(f.kind),
            _ => None,
        };
        plugin_call(
            call.connector,
            call.plugin,
            call.operation,
            call.elapsed,
            fault,
        );
        if let Some(store) = &self.audit
            && let Err(e) = store.audit().append_all(call_events(call))
        {
            tracing::error!(connector = %call.connector, "failed to write the audit log: {e:#}");
        }
    }
}

impl RunObserver for Telemetry {
    fn operation(&self, link: &str, kind: &'static str, result: OperationResult) {
        operation(link, kind, result);
    }
}

/// The audit records of a call: each HTTP request, and the failure if it
/// failed. Paths and error texts of a call for one employee are personal
/// (erasable). An audit write that fails is logged, not fatal: the call
/// happened either way.
fn call_events(call: &FinishedCall<'_>) -> Vec<Event> {
    let context = call.context;
    let event = |kind: Kind| {
        let mut e = Event::new(kind).connector(call.connector);
        if let Some(link) = &context.link {
            e = e.link(link);
        }
        if let Some(employee) = &context.employee {
            e = e.employee(employee);
        }
        if let Some(key) = &context.key {
            e = e.key(key);
        }
        e
    };
    let mut events = Vec::with_capacity(call.exchanges.len() + 1);
    for x in call.exchanges {
        let detail = serde_json::json!({
            "function": call.operation,
            "method": x.method,
            "origin": x.origin,
            "query": x.query,
            "status": x.status,
            "duration_ms": x.duration_ms,
            "bytes_out": x.bytes_out,
            "bytes_in": x.bytes_in,
        });
        events.push(
            event(Kind::HttpRequest)
                .detail(detail)
                .personal(serde_json::json!({ "path": x.path, "error": x.error })),
        );
    }
    let failure = match call.outcome {
        CallOutcome::Ok => None,
        CallOutcome::Error(e) => Some((e.to_string(), None)),
        CallOutcome::Fault(f) => Some((format!("plugin fault: {f}"), Some(f.kind.label()))),
    };
    if let Some((error, fault)) = failure {
        let detail = serde_json::json!({
            "function": call.operation,
            "plugin": call.plugin,
            "version": call.version,
            "sha256": call.sha256,
            "requests_not_recorded": call.dropped_exchanges,
            "fault": fault,
        });
        events.push(
            event(Kind::PluginCallFailed)
                .detail(detail)
                .personal(serde_json::json!({ "error": error })),
        );
    }
    events
}

/// One call into a plugin: latency, and the limit it broke if it faulted.
fn plugin_call(
    connector: &str,
    plugin: &str,
    operation: &'static str,
    elapsed: Duration,
    fault: Option<FaultKind>,
) {
    metrics::histogram!(
        "switchyard_plugin_call_duration_seconds",
        "connector" => connector.to_owned(), "plugin" => plugin.to_owned(), "operation" => operation
    )
    .record(elapsed.as_secs_f64());
    let result = if fault.is_some() { "fault" } else { "ok" };
    metrics::counter!("switchyard_plugin_calls_total", "connector" => connector.to_owned(), "operation" => operation, "result" => result)
        .increment(1);
    if let Some(kind) = fault.filter(|k| k.is_limit()) {
        metrics::counter!("switchyard_limit_violations_total", "connector" => connector.to_owned(), "limit" => kind.label()).increment(1);
    }
}

/// One outbox operation's outcome.
fn operation(link: &str, kind: &'static str, result: OperationResult) {
    metrics::counter!("switchyard_operations_total", "link" => link.to_owned(), "kind" => kind, "result" => result.label()).increment(1);
}

/// A plugin file loaded, refused or removed by the directory watcher.
pub fn plugin_reload(plugin: &str, result: &'static str) {
    metrics::counter!("switchyard_plugin_reloads_total", "plugin" => plugin.to_owned(), "result" => result).increment(1);
}

/// A finished link run: outcome, duration and, from its report, what it
/// fetched, retried and dead-lettered.
pub fn link_run(
    link: &str,
    outcome: &'static str,
    elapsed: Duration,
    report: Option<&RunReport>,
    now_s: f64,
) {
    let link = link.to_owned();
    metrics::counter!("switchyard_link_runs_total", "link" => link.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("switchyard_link_run_duration_seconds", "link" => link.clone())
        .record(elapsed.as_secs_f64());
    metrics::gauge!("switchyard_link_last_run_timestamp_seconds", "link" => link.clone())
        .set(now_s);
    if let Some(r) = report {
        metrics::counter!("switchyard_records_fetched_total", "link" => link.clone(), "kind" => "employees")
            .increment(r.employees_fetched as u64);
        metrics::counter!("switchyard_records_fetched_total", "link" => link.clone(), "kind" => "completions")
            .increment(r.completions_fetched as u64);
        metrics::counter!("switchyard_retries_total", "link" => link.clone())
            .increment(r.retries as u64);
        metrics::counter!("switchyard_dead_letters_total", "link" => link.clone())
            .increment(r.dead_lettered as u64);
        if let Some(n) = r.in_scope {
            metrics::gauge!("switchyard_link_scope_employees", "link" => link.clone())
                .set(n as f64);
        }
    }
    if outcome == "ok" {
        metrics::gauge!("switchyard_link_last_success_timestamp_seconds", "link" => link)
            .set(now_s);
    }
}

/// What waits in a link's outbox and dead-letter queue.
pub fn depths(link: &str, outbox: usize, dead_letters: usize) {
    metrics::gauge!("switchyard_outbox_depth", "link" => link.to_owned()).set(outbox as f64);
    metrics::gauge!("switchyard_dead_letter_depth", "link" => link.to_owned())
        .set(dead_letters as f64);
}

#[cfg(test)]
mod text_log_tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn vendor_text_cannot_forge_a_text_log_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .fmt_fields(super::text_log_fields())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let vendor =
                "bad gateway\n2026-01-01T00:00:00Z  INFO switchyard: admin logged in\u{1b}[2J";
            tracing::warn!(error = %vendor, "vendor said {vendor}");
        });
        let out = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\u{1b}'), "{out:?}");
        assert!(out.contains("vendor said bad gateway\\n2026"), "{out}");
        assert!(out.contains("error=bad gateway\\n2026"), "{out}");
    }
}
