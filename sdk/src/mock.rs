//! A mock host for a plugin's native unit tests (feature `mock`): canned
//! HTTP responses by method and URL, config values, captured log lines,
//! and the requests the plugin made, so that a plugin's logic runs under
//! `cargo test` with no wasm build and no host.
//!
//! ```ignore
//! use switchyard_sdk::mock::{MockHost, MockResponse};
//!
//! #[test]
//! fn lists_one_page() {
//!     let host = MockHost::new()
//!         .config("base_url", "https://hr.example")
//!         .on("GET", "https://hr.example/people?page=1", MockResponse::json(200, serde_json::json!([{"id": 7}])));
//!     let _installed = host.install();
//!     let page = Acme::fetch_employees(None).unwrap();
//!     assert_eq!(page.employees[0].id, "7");
//!     assert_eq!(host.requests()[0].method, "GET");
//! }
//! ```
//!
//! A URL ending in `*` matches every URL that starts with the rest. Several
//! responses for one route are given in order, the last one repeating. A
//! request no route matches fails as the host's transport error would
//! (`transient`), and is recorded too. The mock is per thread: each test
//! installs its own.

use std::cell::RefCell;
use std::rc::Rc;

/// A canned response.
#[derive(Clone, Debug)]
pub struct MockResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl MockResponse {
    /// A response with a status and an empty body.
    pub fn status(status: u16) -> Self {
        MockResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A JSON body (`content-type: application/json`).
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self::status(status)
            .header("content-type", "application/json")
            .with_body(body.to_string().into_bytes())
    }

    /// A text body.
    pub fn text(status: u16, body: &str) -> Self {
        Self::status(status)
            .header("content-type", "text/plain")
            .with_body(body.as_bytes().to_vec())
    }

    /// Add a header (`Retry-After`, `Date`, ...).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    fn with_body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }
}

/// A request the plugin made.
#[derive(Clone, Debug, PartialEq)]
pub struct MockRequest {
    /// Method, upper case.
    pub method: String,
    /// Full URL, query included.
    pub url: String,
    /// Headers as the plugin set them.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl MockRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body decoded as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Route {
    method: String,
    url: String,
    responses: Vec<MockResponse>,
    served: usize,
}

impl Route {
    fn matches(&self, method: &str, url: &str) -> bool {
        self.method.eq_ignore_ascii_case(method)
            && match self.url.strip_suffix('*') {
                Some(prefix) => url.starts_with(prefix),
                None => self.url == url,
            }
    }
}

#[derive(Default)]
struct State {
    config: Vec<(String, String)>,
    routes: Vec<Route>,
    requests: Vec<MockRequest>,
    logs: Vec<(String, String)>,
    /// Keys held now (`shared::lock`), and every key ever locked, in order.
    held: Vec<String>,
    locked: Vec<String>,
    remembered: std::collections::BTreeMap<String, String>,
}

/// The mock host: build it, [`install`](MockHost::install) it on the test's
/// thread, call the plugin's trait functions, then inspect it.
#[derive(Clone, Default)]
pub struct MockHost {
    state: Rc<RefCell<State>>,
}

thread_local! {
    static INSTALLED: RefCell<Option<MockHost>> = const { RefCell::new(None) };
}

/// Keeps a [`MockHost`] installed; dropping it uninstalls it.
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        INSTALLED.with(|i| i.borrow_mut().take());
    }
}

impl MockHost {
    /// An empty mock host: no config, no routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A config value the plugin reads with `config::get`.
    pub fn config(self, key: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .config
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// Answer `method url` with `response` (after the responses given for
    /// the same route before).
    pub fn on(self, method: &str, url: &str, response: MockResponse) -> Self {
        {
            let mut state = self.state.borrow_mut();
            let existing = state
                .routes
                .iter_mut()
                .find(|r| r.method.eq_ignore_ascii_case(method) && r.url == url);
            match existing {
                Some(route) => route.responses.push(response),
                None => state.routes.push(Route {
                    method: method.to_ascii_uppercase(),
                    url: url.to_owned(),
                    responses: vec![response],
                    served: 0,
                }),
            }
        }
        self
    }

    /// Make this the host of the current thread's plugin calls.
    pub fn install(&self) -> Installed {
        INSTALLED.with(|i| *i.borrow_mut() = Some(self.clone()));
        Installed(())
    }

    /// Every request the plugin made, in order.
    pub fn requests(&self) -> Vec<MockRequest> {
        self.state.borrow().requests.clone()
    }

    /// Every line the plugin logged, as `(level, message)`.
    pub fn logs(&self) -> Vec<(String, String)> {
        self.state.borrow().logs.clone()
    }

    /// A value as if an earlier call had remembered it (`shared::remember`).
    pub fn remembered(self, key: &str, value: &str) -> Self {
        self.state
            .borrow_mut()
            .remembered
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// What the plugin remembered under `key`.
    pub fn recalled(&self, key: &str) -> Option<String> {
        self.state.borrow().remembered.get(key).cloned()
    }

    /// Every key the plugin locked, in order.
    pub fn locked(&self) -> Vec<String> {
        self.state.borrow().locked.clone()
    }

    /// The keys the plugin holds now (empty after a call that let go of
    /// everything it locked).
    pub fn held(&self) -> Vec<String> {
        self.state.borrow().held.clone()
    }
}

fn with_host<T>(what: &str, f: impl FnOnce(&MockHost) -> T) -> T {
    INSTALLED.with(|i| match &*i.borrow() {
        Some(host) => f(host),
        None => panic!(
            "the plugin called the host ({what}) but no mock host is installed on this thread: `let _host = MockHost::new().install();` first"
        ),
    })
}

pub(crate) fn send(
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> Result<crate::http::Response, String> {
    with_host("http", |host| {
        let mut state = host.state.borrow_mut();
        state.requests.push(MockRequest {
            method: method.clone(),
            url: url.clone(),
            headers,
            body,
        });
        let Some(route) = state.routes.iter_mut().find(|r| r.matches(&method, &url)) else {
            return Err(format!("mock host: no response for {method} {url}"));
        };
        let at = route.served.min(route.responses.len() - 1);
        route.served += 1;
        let r = route.responses[at].clone();
        Ok(crate::http::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        })
    })
}

pub(crate) fn config(key: &str) -> Option<String> {
    with_host("config", |host| {
        host.state
            .borrow()
            .config
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    })
}

pub(crate) fn log(level: &str, message: &str) {
    with_host("log", |host| {
        host.state
            .borrow_mut()
            .logs
            .push((level.to_owned(), message.to_owned()));
    })
}

pub(crate) fn lock(key: &str) -> Result<(), crate::ConnectorError> {
    with_host("shared.lock", |host| {
        let mut state = host.state.borrow_mut();
        state.locked.push(key.to_owned());
        if !state.held.iter().any(|k| k == key) {
            state.held.push(key.to_owned());
        }
        Ok(())
    })
}

pub(crate) fn unlock(key: &str) {
    with_host("shared.unlock", |host| {
        host.state.borrow_mut().held.retain(|k| k != key);
    })
}

pub(crate) fn recall(key: &str) -> Option<String> {
    with_host("shared.recall", |host| {
        host.state.borrow().remembered.get(key).cloned()
    })
}

pub(crate) fn remember(key: &str, value: &str) {
    with_host("shared.remember", |host| {
        host.state
            .borrow_mut()
            .remembered
            .insert(key.to_owned(), value.to_owned());
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Request;

    #[test]
    fn routes_answer_in_order_and_requests_and_logs_are_kept() {
        let host = MockHost::new()
            .config("base_url", "https://x.example")
            .on(
                "GET",
                "https://x.example/a",
                MockResponse::status(503).header("Retry-After", "2"),
            )
            .on(
                "GET",
                "https://x.example/a",
                MockResponse::json(200, serde_json::json!({"ok": true})),
            )
            .on(
                "POST",
                "https://x.example/b/*",
                MockResponse::text(201, "made"),
            );
        let _installed = host.install();
        assert_eq!(
            crate::config::get("base_url").as_deref(),
            Some("https://x.example")
        );
        assert_eq!(crate::config::get("missing"), None);
        let first = Request::get("https://x.example/a").send().unwrap();
        assert_eq!(
            (first.status, first.header("retry-after")),
            (503, Some("2"))
        );
        for _ in 0..2 {
            let again = Request::get("https://x.example/a").send().unwrap();
            assert_eq!(again.json::<serde_json::Value>().unwrap()["ok"], true);
        }
        let made = Request::post("https://x.example/b/7")
            .json(&1)
            .unwrap()
            .send()
            .unwrap();
        assert_eq!(made.text(), "made");
        let lost = Request::delete("https://x.example/c").send().unwrap_err();
        assert!(
            matches!(&lost, crate::ConnectorError::Transient(m) if m.contains("no response for DELETE https://x.example/c")),
            "{lost:?}"
        );
        crate::log::warn("careful");
        let requests = host.requests();
        assert_eq!(requests.len(), 5);
        assert_eq!(requests[3].json(), serde_json::json!(1));
        assert_eq!(requests[3].header("Content-Type"), Some("application/json"));
        assert_eq!(host.logs(), [("warn".to_owned(), "careful".to_owned())]);
    }

    #[test]
    fn get_or_create_locks_once_remembers_and_lets_go() {
        use crate::shared;
        let host = MockHost::new();
        let _installed = host.install();
        let mut made = 0;
        let id = shared::get_or_create("group:SAFETY", || {
            made += 1;
            Ok("g-1".to_owned())
        })
        .unwrap();
        assert_eq!(id, "g-1");
        let again = shared::get_or_create("group:SAFETY", || {
            made += 1;
            Ok("g-2".to_owned())
        })
        .unwrap();
        assert_eq!(
            (again.as_str(), made),
            ("g-1", 1),
            "remembered, not made twice"
        );
        assert_eq!(host.locked(), ["group:SAFETY"]);
        assert!(host.held().is_empty(), "the key is let go");
        assert_eq!(host.recalled("group:SAFETY").as_deref(), Some("g-1"));
    }

    #[test]
    fn find_or_create_looks_again_after_a_conflict() {
        use crate::{Created, find_or_create};
        let host = MockHost::new();
        let _installed = host.install();
        let finds = std::cell::Cell::new(0);
        // The record was made by an earlier attempt whose answer was lost:
        // the first lookup misses (not yet visible), the create conflicts,
        // the second lookup finds it.
        let id = find_or_create(
            || {
                finds.set(finds.get() + 1);
                Ok((finds.get() > 1).then(|| "u-7".to_owned()))
            },
            || Err(Created::Conflict("409 uniqueness")),
        )
        .unwrap();
        assert_eq!((id.as_str(), finds.get()), ("u-7", 2));
        let failed = find_or_create::<()>(
            || Ok(None),
            || Err(crate::ConnectorError::Unauthorized("401".into()).into()),
        );
        assert!(matches!(
            failed,
            Err(crate::ConnectorError::Unauthorized(_))
        ));
    }
}
