//! The one place the SDK reaches the host: through the contract's imports
//! in a plugin, through the [`mock`](crate::mock) host in native unit tests
//! (feature `mock`, or the SDK's own tests; never in a wasm build).

#[cfg(not(all(any(test, feature = "mock"), not(target_arch = "wasm32"))))]
mod imp {
    use crate::__private::base::switchyard::connector::{config, http, log, shared};
    use crate::ConnectorError;
    use crate::http::Response;

    pub(crate) fn send(
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let request = http::Request {
            method,
            url,
            headers,
            body,
        };
        http::send(&request).map(|r| Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        })
    }

    pub(crate) fn config(key: &str) -> Option<String> {
        config::get(key)
    }

    pub(crate) fn log(level: &str, message: &str) {
        let level = match level {
            "debug" => log::Level::Debug,
            "info" => log::Level::Info,
            "warn" => log::Level::Warn,
            _ => log::Level::Error,
        };
        log::log(level, message);
    }

    pub(crate) fn lock(key: &str) -> Result<(), ConnectorError> {
        shared::lock(key)
    }

    pub(crate) fn unlock(key: &str) {
        shared::unlock(key);
    }

    pub(crate) fn recall(key: &str) -> Option<String> {
        shared::recall(key)
    }

    pub(crate) fn remember(key: &str, value: &str) {
        shared::remember(key, value);
    }
}

#[cfg(all(any(test, feature = "mock"), not(target_arch = "wasm32")))]
mod imp {
    pub(crate) use crate::mock::{config, lock, log, recall, remember, send, unlock};
}

pub(crate) use imp::{config, lock, log, recall, remember, send, unlock};
