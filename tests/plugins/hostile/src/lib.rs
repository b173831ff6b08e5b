//! A misbehaving HRIS plugin for containment tests. Its `mode` config key
//! picks the misbehaviour of `fetch-employees`:
//!
//! - `ok`: one well-formed employee (proves the plugin still works after a
//!   fault); its email is the config key `email`, if set;
//! - `loop`: spin forever (deadline);
//! - `memory`: allocate until refused (memory budget);
//! - `trap`: panic (trap);
//! - `flood`: send requests to `target` until refused (request limit);
//! - `fetch`: GET `target` and return the response body (or the host's
//!   refusal) as the employee's given name: for egress and redaction tests;
//! - `ambient`: look for environment variables, arguments and files, and
//!   report what it found as the given name;
//! - `status`: GET `target` and return `"{status} {location}"` as the given
//!   name (redirect tests);
//! - `records`: return `count` employees (output limit);
//! - `big`: return one employee whose given name is `bytes` long (output limit);
//! - `print`: write `lines` lines (`text`, if set) to stdout and to stderr,
//!   then behave as `ok`;
//! - `upload`: POST a body of `bytes` bytes to `target` and return the
//!   response body (or the host's refusal) as the given name;
//! - `flaky`: trap if the config key `trap` is `true`, else behave as `ok`;
//! - `recursion`: recurse without end (stack limit);
//! - `negotiate`: GET `target` asking for a compressed response itself
//!   (`Accept-Encoding: gzip`, `TE: gzip`), and return the response's
//!   `Content-Encoding` (or `-`) and body as `"{encoding}\n{body}"`;
//! - `headers`: GET `target` with `count` distinct headers of `bytes` bytes
//!   each (plus the header `name: value` from `extra_header`, if set) and
//!   return the body or the host's refusal;
//! - `log`: log `text` through the `log` import, then behave as `ok`;
//! - `shared`: the `shared` import, the cursor saying what to do (so that
//!   calls of one connector do different things): `hog` takes the key
//!   `key`, GETs `target` (if set) to say so, and spins forever holding it; `lock` takes `key` and returns the
//!   outcome (`locked`, or the error) as the given name; `hoard` takes
//!   `count` distinct keys and remembers a value of `bytes` bytes under
//!   each, returning the first refusal (or `all`).

use switchyard_sdk::http::Request;
use switchyard_sdk::{
    ConnectorError, Employee, EmployeePage, EmploymentStatus, HrisConnector, config, log, shared,
};

struct Hostile;

fn page(given_name: String) -> EmployeePage {
    let mut e = Employee::new("1", EmploymentStatus::Active);
    e.given_name = Some(given_name);
    e.email = config::get("email");
    EmployeePage {
        employees: vec![e],
        next_cursor: None,
        changes_cursor: None,
    }
}

impl HrisConnector for Hostile {
    fn fetch_employees(cursor: Option<String>) -> Result<EmployeePage, ConnectorError> {
        let mode = config::get("mode").unwrap_or_default();
        let target = config::get("target").unwrap_or_default();
        match mode.as_str() {
            "ok" => Ok(page("ok".into())),
            // Asks the host for the same setting without end: cheap for
            // the plugin, not for the host.
            "chatty" => {
                let mut found = 0usize;
                for _ in 0..10_000_000 {
                    found += config::get("mode").map_or(0, |m| m.len());
                }
                Ok(page(found.to_string()))
            }
            // A listing that never ends: the same next cursor forever, or
            // a new one (and a new employee) on every page.
            "same-cursor" => Ok(EmployeePage {
                next_cursor: Some("again".into()),
                ..page("again".into())
            }),
            "endless" => {
                let n: u64 = cursor.as_deref().and_then(|c| c.parse().ok()).unwrap_or(0);
                let mut e = Employee::new(format!("e{n}"), EmploymentStatus::Active);
                e.given_name = Some("x".repeat(1024));
                Ok(EmployeePage {
                    employees: vec![e],
                    next_cursor: Some((n + 1).to_string()),
                    changes_cursor: None,
                })
            }
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("hostile plugin panics on purpose"),
            "recursion" => Ok(page(deeper(0).to_string())),
            "flood" => {
                for _ in 0..100_000 {
                    Request::get(&target).send()?;
                }
                Ok(page("flooded".into()))
            }
            "fetch" => match Request::get(&target).send() {
                Ok(response) => Ok(page(response.text())),
                Err(ConnectorError::Transient(refusal)) => Ok(page(format!("refused: {refusal}"))),
                Err(e) => Err(e),
            },
            "ambient" => {
                let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args: Vec<String> = std::env::args().collect();
                let file = std::fs::read_to_string("/etc/passwd").is_ok();
                let dir = std::fs::read_dir("/").is_ok();
                Ok(page(format!(
                    "env={env:?} args={args:?} file={file} dir={dir}"
                )))
            }
            "status" => match Request::get(&target).send() {
                Ok(response) => Ok(page(format!(
                    "{} {}",
                    response.status,
                    response.header("location").unwrap_or("-")
                ))),
                Err(ConnectorError::Transient(refusal)) => Ok(page(format!("refused: {refusal}"))),
                Err(e) => Err(e),
            },
            "records" => {
                let count: usize = number("count");
                let employees = (0..count)
                    .map(|i| Employee::new(i.to_string(), EmploymentStatus::Active))
                    .collect();
                Ok(EmployeePage {
                    employees,
                    next_cursor: None,
                    changes_cursor: None,
                })
            }
            "big" => Ok(page("x".repeat(number("bytes")))),
            "print" => {
                let text = config::get("text");
                for i in 0..number("lines") {
                    match &text {
                        Some(text) => println!("{text}"),
                        None => println!("hostile stdout line {i}"),
                    }
                    eprintln!("hostile stderr line {i}");
                }
                Ok(page("printed".into()))
            }
            "upload" => match Request::post(&target)
                .form(&[("data", "u".repeat(number("bytes")))])
                .send()
            {
                Ok(response) => Ok(page(response.text())),
                Err(ConnectorError::Transient(refusal)) => Ok(page(format!("refused: {refusal}"))),
                Err(e) => Err(e),
            },
            "flaky" => {
                if config::get("trap").as_deref() == Some("true") {
                    panic!("flaky plugin panics on purpose");
                }
                Ok(page("ok".into()))
            }
            "negotiate" => match Request::get(&target)
                .header("Accept-Encoding", "gzip")
                .header("TE", "gzip")
                .send()
            {
                Ok(response) => Ok(page(format!(
                    "{}\n{}",
                    response.header("content-encoding").unwrap_or("-"),
                    response.text()
                ))),
                Err(ConnectorError::Transient(refusal)) => Ok(page(format!("refused: {refusal}"))),
                Err(e) => Err(e),
            },
            "headers" => {
                let value = "v".repeat(number("bytes"));
                let mut request = Request::get(&target);
                for i in 0..number("count") {
                    request = request.header(&format!("x-h{i}"), value.clone());
                }
                if let Some((name, value)) = config::get("extra_header")
                    .as_deref()
                    .and_then(|h| h.split_once(": "))
                {
                    request = request.header(name, value);
                }
                match request.send() {
                    Ok(response) => Ok(page(response.text())),
                    Err(ConnectorError::Transient(refusal)) => {
                        Ok(page(format!("refused: {refusal}")))
                    }
                    Err(e) => Err(e),
                }
            }
            "log" => {
                log::info(&config::get("text").unwrap_or_default());
                Ok(page("logged".into()))
            }
            "shared" if cursor.as_deref() == Some("hog") => {
                let _held = shared::lock(&config::get("key").unwrap_or_default())?;
                // Tell the test the key is held, then spin.
                if !target.is_empty() {
                    let _ = Request::get(&target).send();
                }
                #[allow(clippy::empty_loop)]
                loop {}
            }
            "shared" if cursor.as_deref() == Some("lock") => {
                match shared::lock(&config::get("key").unwrap_or_default()) {
                    Ok(_held) => Ok(page("locked".into())),
                    Err(e) => Ok(page(format!("{e:?}"))),
                }
            }
            "shared" => {
                let value = "v".repeat(number("bytes"));
                let mut held = Vec::new();
                for i in 0..number("count") {
                    let key = format!("hoard-{i}");
                    match shared::lock(&key) {
                        Ok(h) => held.push(h),
                        Err(e) => return Ok(page(format!("{i}: {e:?}"))),
                    }
                    shared::remember(&key, &value);
                    if shared::recall(&key).is_none() {
                        return Ok(page(format!("{i}: not kept")));
                    }
                }
                Ok(page("all".into()))
            }
            other => Err(ConnectorError::InvalidConfig(format!(
                "unknown mode `{other}`"
            ))),
        }
    }
}

fn number(key: &str) -> usize {
    config::get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Recursion the optimiser cannot turn into a loop (an opaque use of each
/// frame's value after the call), on the wasm stack only.
#[inline(never)]
#[allow(unconditional_recursion, clippy::only_used_in_recursion)] // the point: a stack overflow
fn deeper(depth: u64) -> u64 {
    let below = deeper(std::hint::black_box(depth + 1));
    below.wrapping_add(std::hint::black_box(depth))
}

switchyard_sdk::export_hris!(Hostile);
