//! The host imports a plugin may call: one module per capability, each owning
//! its per-call state, its linker-facing trait implementation and its denials.
//!
//! **API boundary:** these are the only ways out of the sandbox. WASI is
//! linked with nothing granted (see `runtime`), so a plugin reaches the
//! network only through `http`, and never sees a credential.

pub mod config;
pub mod http;
pub mod log;
pub mod shared;
pub mod stdio;

/// The `types` interface has no functions; its `Host` trait is empty.
impl crate::bindings::types::Host for crate::HostState {}

/// The imports of an older contract (`$contract` is the path of its
/// generated `switchyard::connector` module): the same functions and
/// records under the older package name, delegating to the current ones.
macro_rules! older_contract_imports {
    ($($contract:ident)::+) => {
        impl $($contract)::+::config::Host for crate::HostState {
            async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
                crate::bindings::hris::switchyard::connector::config::Host::get(self, key).await
            }
        }

        impl $($contract)::+::log::Host for crate::HostState {
            async fn log(
                &mut self,
                level: $($contract)::+::log::Level,
                message: String,
            ) -> wasmtime::Result<()> {
                use $($contract)::+::log::Level as Old;
                use crate::bindings::hris::switchyard::connector::log::{Host, Level};
                let level = match level {
                    Old::Trace => Level::Trace,
                    Old::Debug => Level::Debug,
                    Old::Info => Level::Info,
                    Old::Warn => Level::Warn,
                    Old::Error => Level::Error,
                };
                Host::log(self, level, message).await
            }
        }

        impl $($contract)::+::http::Host for crate::HostState {
            async fn send(
                &mut self,
                request: $($contract)::+::http::Request,
            ) -> wasmtime::Result<Result<$($contract)::+::http::Response, String>> {
                use crate::bindings::hris::switchyard::connector::http::{Host, Request};
                let request = Request {
                    method: request.method,
                    url: request.url,
                    headers: request.headers,
                    body: request.body,
                };
                Ok(Host::send(self, request).await?.map(|r| {
                    $($contract)::+::http::Response {
                        status: r.status,
                        headers: r.headers,
                        body: r.body,
                    }
                }))
            }
        }
    };
}

older_contract_imports!(crate::bindings::v0_1::hris::switchyard::connector);
older_contract_imports!(crate::bindings::v0_2::hris::switchyard::connector);
older_contract_imports!(crate::bindings::v0_3::hris::switchyard::connector);
older_contract_imports!(crate::bindings::v0_4::hris::switchyard::connector);

/// 0.4.0's `shared`: the same functions as the current one.
impl crate::bindings::v0_4::hris::switchyard::connector::shared::Host for crate::HostState {
    async fn lock(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<(), crate::bindings::types::ConnectorError>> {
        crate::bindings::hris::switchyard::connector::shared::Host::lock(self, key).await
    }

    async fn unlock(&mut self, key: String) -> wasmtime::Result<()> {
        crate::bindings::hris::switchyard::connector::shared::Host::unlock(self, key).await
    }

    async fn recall(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        crate::bindings::hris::switchyard::connector::shared::Host::recall(self, key).await
    }

    async fn remember(&mut self, key: String, value: String) -> wasmtime::Result<()> {
        crate::bindings::hris::switchyard::connector::shared::Host::remember(self, key, value).await
    }
}
