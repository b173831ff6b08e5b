//! Prometheus metrics: every metric Switchyard exports is named here.
//!
//! Other modules record through the `metrics` facade (these helpers, or
//! `metrics::counter!` directly); without an installed recorder (the one-shot
//! CLI) recording costs almost nothing. The daemon installs one process-wide
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

use crate::sync::RunReport;

/// Buckets for latency histograms, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

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

/// One call into a plugin: latency, and the limit it broke if it faulted.
pub fn plugin_call(connector: &str, plugin: &str, operation: &'static str, elapsed: Duration, fault: Option<&str>) {
    metrics::histogram!(
        "switchyard_plugin_call_duration_seconds",
        "connector" => connector.to_owned(), "plugin" => plugin.to_owned(), "operation" => operation
    )
    .record(elapsed.as_secs_f64());
    let result = if fault.is_some() { "fault" } else { "ok" };
    metrics::counter!("switchyard_plugin_calls_total", "connector" => connector.to_owned(), "operation" => operation, "result" => result)
        .increment(1);
    if let Some(limit) = fault.and_then(limit_of) {
        metrics::counter!("switchyard_limit_violations_total", "connector" => connector.to_owned(), "limit" => limit).increment(1);
    }
}

/// Which limit a plugin fault message is about (None: a trap or bad output
/// that is not a limit).
fn limit_of(fault: &str) -> Option<&'static str> {
    let fault = fault.to_ascii_lowercase();
    [
        ("memory limit", "memory"),
        ("deadline", "deadline"),
        ("fuel", "fuel"),
        ("output limit", "output"),
        ("stack overflow", "stack"),
        ("http requests per call", "http-requests"),
    ]
    .into_iter()
    .find(|(needle, _)| fault.contains(needle))
    .map(|(_, limit)| limit)
}

/// One outbox operation's outcome (`ok`, `retry`, `dead-letter`, `stopped`).
pub fn operation(link: &str, kind: &'static str, result: &'static str) {
    metrics::counter!("switchyard_operations_total", "link" => link.to_owned(), "kind" => kind, "result" => result).increment(1);
}

/// A plugin file loaded, refused or removed by the directory watcher.
pub fn plugin_reload(plugin: &str, result: &'static str) {
    metrics::counter!("switchyard_plugin_reloads_total", "plugin" => plugin.to_owned(), "result" => result).increment(1);
}

/// A finished link run: outcome, duration and, from its report, what it
/// fetched, retried and dead-lettered.
pub fn link_run(link: &str, outcome: &'static str, elapsed: Duration, report: Option<&RunReport>, now_s: f64) {
    let link = link.to_owned();
    metrics::counter!("switchyard_link_runs_total", "link" => link.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("switchyard_link_run_duration_seconds", "link" => link.clone()).record(elapsed.as_secs_f64());
    metrics::gauge!("switchyard_link_last_run_timestamp_seconds", "link" => link.clone()).set(now_s);
    if let Some(r) = report {
        metrics::counter!("switchyard_records_fetched_total", "link" => link.clone(), "kind" => "employees")
            .increment(r.employees_fetched as u64);
        metrics::counter!("switchyard_records_fetched_total", "link" => link.clone(), "kind" => "completions")
            .increment(r.completions_fetched as u64);
        metrics::counter!("switchyard_retries_total", "link" => link.clone()).increment(r.retries as u64);
        metrics::counter!("switchyard_dead_letters_total", "link" => link.clone()).increment(r.dead_lettered as u64);
    }
    if outcome == "ok" {
        metrics::gauge!("switchyard_link_last_success_timestamp_seconds", "link" => link).set(now_s);
    }
}

/// What waits in a link's outbox and dead-letter queue.
pub fn depths(link: &str, outbox: usize, dead_letters: usize) {
    metrics::gauge!("switchyard_outbox_depth", "link" => link.to_owned()).set(outbox as f64);
    metrics::gauge!("switchyard_dead_letter_depth", "link" => link.to_owned()).set(dead_letters as f64);
}

#[cfg(test)]
mod tests {
    use super::limit_of;

    #[test]
    fn faults_map_to_limits() {
        assert_eq!(limit_of("memory limit exceeded: x"), Some("memory"));
        assert_eq!(limit_of("deadline of 1s exceeded (interrupted)"), Some("deadline"));
        assert_eq!(limit_of("fuel budget exhausted: limit `fuel` is 10"), Some("fuel"));
        assert_eq!(limit_of("output limit exceeded: 5 records"), Some("output"));
        assert_eq!(limit_of("limit of 3 HTTP requests per call reached"), Some("http-requests"));
        assert_eq!(limit_of("trap: unreachable"), None);
    }
}
