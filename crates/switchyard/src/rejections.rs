//! Refused requests stay cheap: a junk flood costs a counter, not a disk.
//!
//! A request refused before any work (a webhook without a valid
//! signature, to an unknown connector or too large; an admin request
//! without the right token) is:
//!
//! - counted in `switchyard_requests_rejected_total{listener, reason}`;
//! - logged at most once per [`LOG_EVERY`] per client address and reason,
//!   with how many were not logged since;
//! - summed in memory per client address, listener, reason and connector,
//!   and written to the audit log as one `requests.rejected` record each
//!   ([`Rejections::flush`]: every `rejection_summary_every` and at
//!   shutdown), not one record per request;
//! - charged to the client address's budget (`max_rejections_per_second`,
//!   bursts of ten times that): a client over budget is answered 429 with
//!   `Retry-After` before its request is read ([`Rejections::throttled`]),
//!   and those answers are summed the same way (`throttled`).
//!
//! Requests that pass these checks never touch the budget, so a sender
//! with valid signatures is never throttled by its own volume.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::audit::{Event, Kind};
use crate::model::Timestamp;
use crate::store::AuditStore;

/// The metric of refused requests.
pub const METRIC: &str = "switchyard_requests_rejected_total";

/// A client address and reason is logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Past this many distinct keys in one interval, new ones are summed under
/// the source `other` (a flood from many addresses stays bounded too).
const MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    listener: &'static str,
    source: String,
    reason: String,
    connector: Option<String>,
}

struct Tally {
    count: u64,
    first: Timestamp,
    last: Timestamp,
}

#[derive(Default)]
struct Inner {
    tallies: BTreeMap<Key, Tally>,
    /// When each (source, reason) was last logged, and how many since.
    logged: HashMap<(String, String), (Instant, u64)>,
    /// Client addresses over budget, and until when.
    blocked: HashMap<IpAddr, Instant>,
}

/// Refused requests of both listeners.
pub struct Rejections {
    budget: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    inner: Mutex<Inner>,
}

impl Rejections {
    /// `per_second` refusals per client address, bursts of ten times that.
    pub fn new(per_second: u32) -> Rejections {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        Rejections {
            budget: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record one refused request from `source` (if known).
    pub fn note(
        &self,
        listener: &'static str,
        source: Option<IpAddr>,
        reason: &str,
        connector: Option<&str>,
    ) {
        metrics::counter!(METRIC, "listener" => listener, "reason" => reason.to_owned())
            .increment(1);
        let over_budget = source.and_then(|ip| {
            self.budget
                .check_key(&ip)
                .err()
                .map(|until| (ip, until.wait_time_from(self.clock.now())))
        });
        self.tally(listener, source, reason, connector, over_budget);
    }

    /// Whether `source` is over its budget: answer 429 without looking at
    /// the request. Such answers are summed (reason `throttled`).
    pub fn throttled(&self, listener: &'static str, source: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let until = {
            let mut inner = self.lock();
            match inner.blocked.get(&source) {
                Some(until) if *until > now => *until,
                Some(_) => {
                    inner.blocked.remove(&source);
                    return None;
                }
                None => return None,
            }
        };
        metrics::counter!(METRIC, "listener" => listener, "reason" => "throttled").increment(1);
        self.tally(listener, Some(source), "throttled", None, None);
        Some(until - now)
    }

    fn tally(
        &self,
        listener: &'static str,
        source: Option<IpAddr>,
        reason: &str,
        connector: Option<&str>,
        over_budget: Option<(IpAddr, Duration)>,
    ) {
        let now = Timestamp::now();
        let source_text = source.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let mut inner = self.lock();
        if let Some((ip, wait)) = over_budget {
            let until = Instant::now() + wait.max(Duration::from_millis(100));
            if inner.blocked.len() < MAX_KEYS || inner.blocked.contains_key(&ip) {
                inner.blocked.insert(ip, until);
            }
        }
        let mut key = Key {
            listener,
            source: source_text.clone(),
            reason: reason.to_owned(),
            connector: connector.map(str::to_owned),
        };
        if inner.tallies.len() >= MAX_KEYS && !inner.tallies.contains_key(&key) {
            key.source = "other".to_owned();
            key.connector = None;
        }
        let tally = inner.tallies.entry(key).or_insert_with(|| Tally {
            count: 0,
            first: now,
            last: now,
        });
        tally.count += 1;
        tally.last = now;
        // The log: once per LOG_EVERY per source and reason.
        let log_key = (source_text, reason.to_owned());
        if inner.logged.len() >= MAX_KEYS && !inner.logged.contains_key(&log_key) {
            return;
        }
        let entry = inner
            .logged
            .entry(log_key)
            .or_insert((Instant::now() - LOG_EVERY * 2, 0));
        if entry.0.elapsed() >= LOG_EVERY {
            let suppressed = entry.1;
            *entry = (Instant::now(), 0);
            drop(inner);
            tracing::warn!(
                listener,
                source = source.map(|s| s.to_string()),
                reason,
                connector,
                suppressed,
                "request refused ({reason}); {suppressed} more like it from this address since the last line"
            );
        } else {
            entry.1 += 1;
        }
    }

    /// Write one `requests.rejected` audit record per key summed since the
    /// last flush, and forget what is old. Returns the records written.
    pub fn flush(&self, audit: &dyn AuditStore) -> anyhow::Result<usize> {
        let tallies = std::mem::take(&mut self.lock().tallies);
        let events: Vec<Event> = tallies
            .into_iter()
            .map(|(key, tally)| {
                let event = Event::new(Kind::RequestsRejected).detail(serde_json::json!({
                    "listener": key.listener,
                    "source": key.source,
                    "reason": key.reason,
                    "count": tally.count,
                    "first": tally.first,
                    "last": tally.last,
                }));
                match &key.connector {
                    Some(c) => event.connector(c),
                    None => event,
                }
            })
            .collect();
        let written = events.len();
        audit.append_all(events)?;
        {
            let mut inner = self.lock();
            let now = Instant::now();
            inner.blocked.retain(|_, until| *until > now);
            inner
                .logged
                .retain(|_, (at, _)| at.elapsed() < LOG_EVERY * 6);
        }
        self.budget.retain_recent();
        Ok(written)
    }
}

/// The 429 answer to a throttled client, with `Retry-After` in whole
/// seconds (at least 1).
pub fn too_many(wait: Duration) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let body = serde_json::json!({
        "error": "too many refused requests from this address; retry later",
    });
    (
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        [(axum::http::header::RETRY_AFTER, secs.max(1).to_string())],
        axum::Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_over_its_budget_is_throttled_and_others_are_not() {
        let r = Rejections::new(1);
        let bad: IpAddr = [192, 0, 2, 1].into();
        let good: IpAddr = [192, 0, 2, 2].into();
        // A burst of 10, then over budget.
        for _ in 0..10 {
            r.note("public", Some(bad), "bad-signature", Some("lms"));
            assert_eq!(r.throttled("public", bad), None);
        }
        r.note("public", Some(bad), "bad-signature", Some("lms"));
        let wait = r.throttled("public", bad).expect("throttled");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(r.throttled("public", good), None);
        // Logged once; the ten after it wait for the next line's count.
        let logged = r.lock().logged[&(bad.to_string(), "bad-signature".to_owned())];
        assert_eq!(logged.1, 10);
        // Sums, not records: one per (source, listener, reason, connector).
        let tallies = &r.lock().tallies;
        let lms = tallies
            .iter()
            .find(|(k, _)| k.reason == "bad-signature")
            .unwrap();
        assert_eq!(lms.1.count, 11);
        let throttled = tallies
            .iter()
            .find(|(k, _)| k.reason == "throttled")
            .unwrap();
        assert_eq!(throttled.1.count, 1);
    }
}
