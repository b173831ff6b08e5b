//! The plugin runtime: one wasmtime `Engine`, plugins compiled once and
//! pre-instantiated, and a fresh `Store` with limits for every call.
//!
//! **Invariant:** only this crate knows about wasmtime. Everything else sees
//! [`Plugin`], [`Connector`] and the records of `switchyard-model`.
//!
//! **Invariant:** a plugin call cannot hurt the host. Each call runs in its
//! own store under a wall-clock deadline (epoch interruption for wasm code,
//! a timeout around everything), a linear-memory budget, and instance/table
//! caps, an optional fuel budget, and limits on what it returns. A violation
//! fails that call with `ConnectorError::PluginFault` naming the connector,
//! the plugin and its version; consecutive faults are counted per connector
//! (see [`Connector::consecutive_faults`]) for quarantine.

//!
//! # Layout
//!
//! - this file: [`Runtime`] (engine, linker, plugin loading with the
//!   compiled-code cache, world and contract detection), [`Plugin`];
//! - `connector.rs`: [`Connector`] and every call into a plugin;
//! - [`capability`]: one module per host import (`http`, `log`, `config`,
//!   captured stdio), each owning its linker wiring, state and denials;
//! - [`bindings`]: the generated bindings, one file per contract version,
//!   and conversions to and from `switchyard-model`;
//! - [`grants`]: what a connector may reach and its limits;
//! - [`secret`]: credentials as the runtime injects them;
//! - [`observe`]: what a finished call reports, and to whom.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capability::http::HttpState;
use crate::capability::log::LogState;

pub mod bindings;
pub mod capability;
pub mod grants;
pub mod observe;
pub mod secret;
pub mod signature;

pub use grants::{Grants, Limits, Origin, OriginBudget};
pub use observe::{CallContext, CallObserver, CallOutcome, FinishedCall};
pub use secret::{Credential, Secret};

/// The contract package and the versions of it this host loads.
pub const CONTRACT_PACKAGE: &str = "switchyard:connector";
/// Supported contract versions (semver-compatible with these).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"];

/// Bound on the wasm call stack of a plugin.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Epoch tick: the granularity of wasm deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Plugin calls that run at once, across every connector: each holds one
/// slot of the instance pool for its store's life. A call beyond them
/// waits for a slot (before its deadline starts).
pub const CALL_SLOTS: u32 = 128;

/// How instances are allocated: a pool of [`CALL_SLOTS`] slots reserved
/// once (virtual memory for each slot's linear memories, tables and async
/// stack), so that a call's fresh instance reuses a slot and its
/// copy-on-write memory image instead of mapping and unmapping memory.
/// Memory a call touched is reset when its store is dropped, so calls do
/// not see each other's data. Public so that the benchmark's raw floor
/// uses the same allocator.
pub fn instance_pool() -> wasmtime::InstanceAllocationStrategy {
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(CALL_SLOTS)
        .total_stacks(CALL_SLOTS)
        // A component of the contract has a handful of core instances (the
        // program and wit-component's shims), one memory and a few tables.
        .total_core_instances(CALL_SLOTS * 8)
        .total_memories(CALL_SLOTS * 2)
        .total_tables(CALL_SLOTS * 8)
        .max_memories_per_module(2)
        .max_memories_per_component(4)
        // What the store's limiter allows; the pool caps what a slot holds.
        .max_tables_per_module(4)
        .table_elements(TABLE_ELEMENTS)
        // Slots kept warm beyond those in use: each may hold up to
        // `KEEP_RESIDENT` of reset pages, so this bounds the pool's RSS to
        // (calls at once + this) x `KEEP_RESIDENT`.
        .max_unused_warm_slots(WARM_SLOTS);
    if pagemap_scan_works() {
        // A slot's memory is reset when its call ends: the pages the call
        // dirtied (found with PAGEMAP_SCAN) are restored from the image or
        // zeroed in place, up to this much, instead of being unmapped and
        // faulted in again by the next call. Without PAGEMAP_SCAN keeping
        // memory resident would mean clearing all of it every call, which
        // costs more than unmapping it.
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT);
    }
    wasmtime::InstanceAllocationStrategy::Pooling(pool)
}

/// Whether the kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7 and later),
/// found by asking wasmtime for it on a one-slot pool.
fn pagemap_scan_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(1)
            .total_core_instances(1)
            .total_memories(1)
            .total_tables(1)
            .total_stacks(1)
            .pagemap_scan(wasmtime::Enabled::Yes);
        let mut config = wasmtime::Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        Engine::new(&config).is_ok()
    })
}

/// Elements of any one table of a plugin (the pool reserves them).
const TABLE_ELEMENTS: usize = 20_000;

/// Bytes of a slot's linear memory reset in place rather than unmapped.
const KEEP_RESIDENT: usize = 4 << 20;

/// Bytes of a slot's table reset in place rather than unmapped.
const TABLE_KEEP_RESIDENT: usize = 256 << 10;

/// Unused slots kept warm (see [`instance_pool`]).
const WARM_SLOTS: u32 = 8;

/// Which contract version's bindings a plugin is called through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Contract {
    /// 0.1.x: no `webhook-source`, no `list-training-records`.
    V0_1,
    /// 0.2.x: no `list-training-records`.
    V0_2,
    /// 0.3.x: no `shared` import.
    V0_3,
    /// 0.4.x: no `batch-provisioning`.
    V0_4,
    /// The current contract (`wit/`).
    Current,
}

/// Which side of a link a plugin implements, read from its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `hris-connector`: employee-source + completion-sink.
    Hris,
    /// `lms-connector`: user-provisioning + enrollment + completion-source.
    Lms,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Hris => "hris-connector",
            World::Lms => "lms-connector",
        })
    }
}

/// A plugin file that was refused, and why.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("{}: cannot read plugin: {reason}", path.display())]
    Unreadable {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a WebAssembly component (a core module, or not wasm at all).
    #[error("{}: not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file larger than `max_plugin_mib`, refused before it was read.
    #[error("{}: the file is {size} bytes, larger than the limit `max_plugin_mib` of {limit_mib} MiB", path.display())]
    TooLarge {
        /// File.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit.
        limit_mib: u64,
    },
    /// A component that implements no connector world.
    #[error("{}: implements no Switchyard connector world ({reason})", path.display())]
    NoWorld {
        /// File.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A contract version this host does not support.
    #[error("{}: contract version {found} is not supported (this host supports {})", path.display(), SUPPORTED_VERSIONS.join(", "))]
    UnsupportedVersion {
        /// File.
        path: PathBuf,
        /// Version found.
        found: String,
    },
    /// A valid connector of the other world than the configuration needs
    /// of this plugin name (the daemon's plugin directory checks this).
    #[error("{}: implements {found}, but {used_by} needs {needed}", path.display())]
    WrongWorld {
        /// File.
        path: PathBuf,
        /// The world the file implements.
        found: World,
        /// The world needed.
        needed: World,
        /// Which connector of which link needs it.
        used_by: String,
    },
    /// Not signed, and the configuration sets `require_signed`.
    #[error("{}: not signed, and `require_signed` is set (sign it with `switchyard plugin sign`)", path.display())]
    Unsigned {
        /// File.
        path: PathBuf,
    },
    /// Signed by a key that is not in `trusted_keys`, and the
    /// configuration sets `require_signed`.
    #[error("{}: signed by {key}, which is not in `trusted_keys`", path.display())]
    UntrustedSigner {
        /// File.
        path: PathBuf,
        /// The key that signed it.
        key: signature::PublicKey,
    },
    /// A signature that is damaged or does not match the file.
    #[error("{}: {reason}", path.display())]
    BadSignature {
        /// File.
        path: PathBuf,
        /// Why.
        reason: signature::SignatureError,
    },
    /// Imports something the host does not provide.
    #[error("{}: cannot be linked: {reason}", path.display())]
    Link {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A compiled, pre-instantiated plugin.
pub struct Plugin {
    /// File stem: the name connectors refer to.
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// sha256 of the file, hex.
    pub sha256: String,
    /// The world it implements.
    pub world: World,
    /// Contract version it was built against.
    pub contract_version: String,
    /// What the component imports (interface names), for `plugin inspect`.
    pub imports: Vec<String>,
    /// Who signed the file, if it is signed (see [`signature`]).
    pub signer: Option<signature::Signer>,
    pre: Pre,
}

/// An HRIS plugin, pre-instantiated through its contract's bindings.
type HrisPre = Versioned<
    bindings::hris::HrisConnectorPre<HostState>,
    bindings::v0_4::hris::HrisConnectorPre<HostState>,
    bindings::v0_3::hris::HrisConnectorPre<HostState>,
    bindings::v0_2::hris::HrisConnectorPre<HostState>,
    bindings::v0_1::hris::HrisConnectorPre<HostState>,
>;

/// An LMS plugin, pre-instantiated through its contract's bindings.
type LmsPre = Versioned<
    bindings::lms::LmsConnectorPre<HostState>,
    bindings::v0_4::lms::LmsConnectorPre<HostState>,
    bindings::v0_3::lms::LmsConnectorPre<HostState>,
    bindings::v0_2::lms::LmsConnectorPre<HostState>,
    bindings::v0_1::lms::LmsConnectorPre<HostState>,
>;

enum Pre {
    Hris(HrisPre),
    Lms(LmsPre),
}

/// A pre-instantiated plugin of the current contract or of an older one.
enum Versioned<Current, V0_4, V0_3, V0_2, V0_1> {
    /// Built against the current contract (`wit/`).
    Current(Current),
    /// Built against contract 0.4.x (`wit/since_v0.4.0`).
    V0_4(V0_4),
    /// Built against contract 0.3.x (`wit/since_v0.3.0`).
    V0_3(V0_3),
    /// Built against contract 0.2.x (`wit/since_v0.2.0`).
    V0_2(V0_2),
    /// Built against contract 0.1.x (`wit/since_v0.1.0`).
    V0_1(V0_1),
}

/// Instantiate `$pre` (a `&Versioned`) in `$store` and evaluate `$call`
/// with the instance bound to `$instance`: the same code for every contract
/// version, whose generated bindings are distinct types with the same
/// methods.
macro_rules! with_instance {
    ($pre:expr, $store:ident, |$instance:ident| $call:expr) => {
        match $pre {
            Versioned::Current(pre) => {
                let $instance = pre.instantiate_async(&mut *$store).await?;
                $call
            }
            Versioned::V0_4(pre) => {
                let $instance = pre.instantiate_async(&mut *$store).await?;
                $call
            }
            Versioned::V0_3(pre) => {
                let $instance = pre.instantiate_async(&mut *$store).await?;
                $call
            }
            Versioned::V0_2(pre) => {
                let $instance = pre.instantiate_async(&mut *$store).await?;
                $call
            }
            Versioned::V0_1(pre) => {
                let $instance = pre.instantiate_async(&mut *$store).await?;
                $call
            }
        }
    };
}

mod connector;
pub use connector::{Connector, ItemResults, MAX_BATCH};

impl Plugin {
    /// Short version label: the first 12 hex digits of the file's sha256.
    pub fn version(&self) -> &str {
        &self.sha256[..12]
    }

    /// Whether the plugin exports `webhook-source` (contract 0.2.0 and later).
    pub fn takes_webhooks(&self) -> bool {
        matches!(
            &self.pre,
            Pre::Hris(
                Versioned::Current(_)
                    | Versioned::V0_4(_)
                    | Versioned::V0_3(_)
                    | Versioned::V0_2(_)
            ) | Pre::Lms(
                Versioned::Current(_)
                    | Versioned::V0_4(_)
                    | Versioned::V0_3(_)
                    | Versioned::V0_2(_)
            )
        )
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("world", &self.world)
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// Per-store state: what a plugin's imports can reach during one call.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryBudget,
    pub(crate) http: HttpState,
    pub(crate) log: LogState,
    pub(crate) settings: Arc<BTreeMap<String, String>>,
    pub(crate) shared: capability::shared::SharedState,
    /// Calls of the contract's imports (`http`, `log`, `config`) so far.
    pub(crate) host_calls: u32,
}

/// Calls of the contract's imports one plugin call may make: beyond it the
/// call traps (a plugin that asks the host for the same thing in a loop
/// costs the host, not only its own fuel).
pub const MAX_HOST_CALLS: u32 = 100_000;

/// The trap of a call that made more than [`MAX_HOST_CALLS`] host calls.
#[derive(Debug, thiserror::Error)]
#[error("limit of {MAX_HOST_CALLS} host calls (http, log, config) per call reached")]
pub(crate) struct HostCallLimit;

impl HostState {
    /// Count one call of an import; past the limit the plugin call traps.
    pub(crate) fn host_call(&mut self) -> wasmtime::Result<()> {
        self.host_calls = self.host_calls.saturating_add(1);
        if self.host_calls > MAX_HOST_CALLS {
            return Err(wasmtime::Error::new(HostCallLimit));
        }
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the total linear memory of all memories in a store, and the number
/// of instances, tables and table elements.
struct MemoryBudget {
    limit: usize,
    used: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryBudget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        if self.used.saturating_add(growth) > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} MiB exceeded",
                self.limit >> 20
            )));
        }
        self.used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

impl PluginError {
    /// The file refused.
    pub fn path(&self) -> &Path {
        match self {
            PluginError::Unreadable { path, .. }
            | PluginError::TooLarge { path, .. }
            | PluginError::NotAComponent { path, .. }
            | PluginError::NoWorld { path, .. }
            | PluginError::UnsupportedVersion { path, .. }
            | PluginError::WrongWorld { path, .. }
            | PluginError::Unsigned { path }
            | PluginError::UntrustedSigner { path, .. }
            | PluginError::BadSignature { path, .. }
            | PluginError::Link { path, .. } => path,
        }
    }
}

/// The engine, the linker with the host's imports, and the shared HTTP client.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    /// The engine's compatibility hash (hex): part of compiled-code cache keys.
    compatibility: Arc<str>,
    linker: Arc<Linker<HostState>>,
    http: reqwest::Client,
    budgets: Arc<crate::capability::http::OriginBudgets>,
    /// Largest plugin file read (checked before reading).
    max_plugin_bytes: u64,
    /// Which files are accepted (`require_signed`, `trusted_keys`).
    signing: Arc<signature::SigningPolicy>,
    /// One permit per slot of the instance pool (see [`CALL_SLOTS`]).
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
}

/// The default of [`Runtime::with_max_plugin_mib`].
pub const DEFAULT_MAX_PLUGIN_MIB: u64 = 64;

impl Runtime {
    /// A runtime with its epoch ticker running.
    pub fn new() -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // Engine-wide; a store without a configured budget gets `u64::MAX`.
        config.consume_fuel(true);
        config.max_wasm_stack(MAX_WASM_STACK);
        config.allocation_strategy(instance_pool());
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            // The pool reserves its address space up front; where that is
            // refused (a tight `ulimit -v`), instances are mapped per call.
            Err(e) => {
                tracing::warn!(
                    "the plugin instance pool could not be reserved, plugin calls map their memory each time (slower): {e:#}"
                );
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
                Engine::new(&config)?
            }
        };

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::hris::HrisConnector::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        // Older contracts import the same functions under their own names.
        bindings::v0_4::hris::HrisConnector::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_3::hris::HrisConnector::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_2::hris::HrisConnector::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        bindings::v0_1::hris::HrisConnector::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;

        // The ticker holds only a weak reference: it ends with the engine.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("switchyard-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;

        let http = crate::capability::http::client()?;
        let compatibility = {
            use std::hash::Hash as _;
            let mut hasher = Sha256Hasher(Sha256::new());
            engine.precompile_compatibility_hash().hash(&mut hasher);
            hex::encode(&hasher.0.finalize()[..16])
        };
        Ok(Runtime {
            compatibility: Arc::from(compatibility),
            engine,
            linker: Arc::new(linker),
            http,
            budgets: Arc::default(),
            max_plugin_bytes: DEFAULT_MAX_PLUGIN_MIB << 20,
            signing: Arc::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(CALL_SLOTS as usize)),
        })
    }

    /// Refuse plugin files larger than `mib` MiB, before reading them
    /// (`max_plugin_mib` in the configuration).
    pub fn with_max_plugin_mib(mut self, mib: u64) -> Runtime {
        self.max_plugin_bytes = mib.saturating_mul(1 << 20);
        self
    }

    /// Accept only the plugin files `policy` accepts; checked before a
    /// file is compiled.
    pub fn with_signing(mut self, policy: signature::SigningPolicy) -> Runtime {
        self.signing = Arc::new(policy);
        self
    }

    /// Read a plugin file, refusing one larger than the limit before
    /// reading it (a huge or sparse file costs no memory), and reading no
    /// more than the limit should it grow meanwhile.
    pub fn read_plugin(&self, path: &Path) -> Result<Vec<u8>, PluginError> {
        use std::io::Read as _;
        let unreadable = |e: std::io::Error| PluginError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let size = file.metadata().map_err(unreadable)?.len();
        let too_large = |size: u64| PluginError::TooLarge {
            path: path.to_owned(),
            size,
            limit_mib: self.max_plugin_bytes >> 20,
        };
        if size > self.max_plugin_bytes {
            return Err(too_large(size));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(self.max_plugin_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > self.max_plugin_bytes {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Share a request budget for `origin` among every connector of this
    /// runtime (see `config::OriginBudget`).
    pub fn limit_origin(&self, origin: &Origin, per_second: u32, burst: u32) {
        self.budgets.limit(origin, per_second, burst);
    }

    /// Compile and check one plugin file. CPU-heavy: call it off the async
    /// runtime (`spawn_blocking`) in a server.
    pub fn load_plugin(&self, path: &Path) -> Result<Plugin, PluginError> {
        self.load_plugin_cached(path, None)
    }

    /// [`Runtime::load_plugin`], reusing compiled code from `cache` (a
    /// directory the host owns) when it holds this file's.
    pub fn load_plugin_cached(
        &self,
        path: &Path,
        cache: Option<&Path>,
    ) -> Result<Plugin, PluginError> {
        let bytes = self.read_plugin(path)?;
        self.load_plugin_bytes(path, &bytes, cache)
    }

    /// Compile (or take from `cache`) and check plugin bytes read from
    /// `path`. CPU-heavy when not cached.
    pub fn load_plugin_bytes(
        &self,
        path: &Path,
        bytes: &[u8],
        cache: Option<&Path>,
    ) -> Result<Plugin, PluginError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let sha256 = hex::encode(Sha256::digest(bytes));
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::NotAComponent {
                path: path.to_owned(),
                reason: "the file does not start with the wasm magic number".into(),
            });
        }
        // Before compiling: an unsigned or tampered file costs no CPU.
        let signer = self.signing.check(bytes).map_err(|refusal| match refusal {
            signature::Refusal::Unsigned => PluginError::Unsigned {
                path: path.to_owned(),
            },
            signature::Refusal::Untrusted(key) => PluginError::UntrustedSigner {
                path: path.to_owned(),
                key,
            },
            // Sections that cannot be walked: truncated or not wasm.
            signature::Refusal::Invalid(signature::SignatureError::Malformed(reason)) => {
                PluginError::NotAComponent {
                    path: path.to_owned(),
                    reason,
                }
            }
            signature::Refusal::Invalid(reason) => PluginError::BadSignature {
                path: path.to_owned(),
                reason,
            },
        })?;
        let component = match cache {
            Some(dir) => self.compile_cached(path, bytes, &sha256, dir)?,
            None => self.compile(path, bytes)?,
        };
        let (world, contract_version) = detect_world(path, &self.engine, &component)?;
        let link_err = |e: wasmtime::Error| PluginError::Link {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link_err)?;
        let minor = semver::Version::parse(&contract_version)
            .ok()
            .filter(|v| v.major == 0)
            .map(|v| v.minor);
        let contract = match minor {
            Some(1) => Contract::V0_1,
            Some(2) => Contract::V0_2,
            Some(3) => Contract::V0_3,
            Some(4) => Contract::V0_4,
            _ => Contract::Current,
        };
        let pre = match (world, contract) {
            (World::Hris, Contract::Current) => Pre::Hris(Versioned::Current(
                bindings::hris::HrisConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Hris, Contract::V0_4) => Pre::Hris(Versioned::V0_4(
                bindings::v0_4::hris::HrisConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Hris, Contract::V0_3) => Pre::Hris(Versioned::V0_3(
                bindings::v0_3::hris::HrisConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Hris, Contract::V0_2) => Pre::Hris(Versioned::V0_2(
                bindings::v0_2::hris::HrisConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Hris, Contract::V0_1) => Pre::Hris(Versioned::V0_1(
                bindings::v0_1::hris::HrisConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Lms, Contract::Current) => Pre::Lms(Versioned::Current(
                bindings::lms::LmsConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Lms, Contract::V0_4) => Pre::Lms(Versioned::V0_4(
                bindings::v0_4::lms::LmsConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Lms, Contract::V0_3) => Pre::Lms(Versioned::V0_3(
                bindings::v0_3::lms::LmsConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Lms, Contract::V0_2) => Pre::Lms(Versioned::V0_2(
                bindings::v0_2::lms::LmsConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Lms, Contract::V0_1) => Pre::Lms(Versioned::V0_1(
                bindings::v0_1::lms::LmsConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
        };
        bindings::typecheck::check_exports(&self.engine, &component, world, contract).map_err(
            |reason| PluginError::Link {
                path: path.to_owned(),
                reason,
            },
        )?;
        let imports = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        Ok(Plugin {
            name,
            path: path.to_owned(),
            sha256,
            world,
            contract_version,
            imports,
            signer,
            pre,
        })
    }

    fn compile(&self, path: &Path, bytes: &[u8]) -> Result<Component, PluginError> {
        Component::new(&self.engine, bytes).map_err(|e| PluginError::NotAComponent {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        })
    }

    /// The compiled-code cache: `{sha256 of the plugin}-{engine
    /// compatibility hash}.cwasm`, each file `CACHE_MAGIC`, the sha256 of the
    /// payload, then the payload (`Component::serialize`). An entry is used
    /// only if its digest matches and wasmtime accepts it; anything else is
    /// recompiled and rewritten (temporary file, then rename).
    fn compile_cached(
        &self,
        path: &Path,
        bytes: &[u8],
        sha256: &str,
        dir: &Path,
    ) -> Result<Component, PluginError> {
        let entry = dir.join(format!("{sha256}-{}.cwasm", self.compatibility));
        if let Ok(cached) = std::fs::read(&entry) {
            match cached_payload(&cached) {
                Some(payload) => {
                    // SAFETY: the payload was written by `Component::serialize`
                    // of this host into the data directory, its digest matches,
                    // its key includes the engine's compatibility hash, and
                    // wasmtime checks its header against this engine again.
                    match unsafe { Component::deserialize(&self.engine, payload) } {
                        Ok(component) => {
                            tracing::debug!(plugin = %path.display(), cache = %entry.display(), "compiled plugin taken from the cache");
                            return Ok(component);
                        }
                        Err(e) => {
                            tracing::warn!(cache = %entry.display(), "cache entry refused, recompiling: {e:#}")
                        }
                    }
                }
                None => {
                    tracing::warn!(cache = %entry.display(), "cache entry is corrupt, recompiling")
                }
            }
        }
        let component = self.compile(path, bytes)?;
        if let Err(e) = write_cache_entry(&entry, &component) {
            tracing::warn!(cache = %entry.display(), "cannot write the compiled-code cache: {e:#}");
        }
        Ok(component)
    }

    /// Load every `*.wasm` in `dir`. Refused files are returned beside the
    /// loaded ones; they never stop the others from loading.
    pub fn load_dir(&self, dir: &Path) -> anyhow::Result<PluginSet> {
        self.load_dir_cached(dir, None)
    }

    /// Load only the plugins named (`{name}.wasm` in `dir`): a command
    /// compiles what its connectors use, and no other file in the
    /// directory is read. A name without a file is left out (the caller
    /// reports it missing).
    pub fn load_named<'a>(
        &self,
        dir: &Path,
        names: impl IntoIterator<Item = &'a str>,
        cache: Option<&Path>,
    ) -> anyhow::Result<PluginSet> {
        if !dir.is_dir() {
            anyhow::bail!(
                "cannot read plugin directory {}: not a directory",
                dir.display()
            );
        }
        let paths = names
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|name| dir.join(format!("{name}.wasm")))
            .filter(|path| path.is_file());
        Ok(self.load_paths(paths, cache))
    }

    /// [`Runtime::load_dir`] with a compiled-code cache directory.
    pub fn load_dir_cached(&self, dir: &Path, cache: Option<&Path>) -> anyhow::Result<PluginSet> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read plugin directory {}: {e}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        paths.sort();
        Ok(self.load_paths(paths, cache))
    }

    /// Load each file; refused ones are kept beside the loaded ones.
    fn load_paths(
        &self,
        paths: impl IntoIterator<Item = PathBuf>,
        cache: Option<&Path>,
    ) -> PluginSet {
        let mut set = PluginSet::default();
        for path in paths {
            match self.load_plugin_cached(&path, cache) {
                Ok(plugin) => {
                    tracing::info!(plugin = %plugin.name, world = %plugin.world, version = plugin.version(), "plugin loaded");
                    set.plugins.insert(plugin.name.clone(), Arc::new(plugin));
                }
                Err(e) => {
                    tracing::warn!("plugin refused: {e}");
                    set.refused.push(e);
                }
            }
        }
        set
    }
}

/// Marks a compiled-code cache entry (format version 1).
const CACHE_MAGIC: &[u8] = b"switchyard-cwasm-1\n";

/// The payload of a cache entry whose digest matches.
fn cached_payload(entry: &[u8]) -> Option<&[u8]> {
    let rest = entry.strip_prefix(CACHE_MAGIC)?;
    let (digest, payload) = rest.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == digest).then_some(payload)
}

fn write_cache_entry(entry: &Path, component: &Component) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let payload = component
        .serialize()
        .map_err(|e| anyhow::anyhow!("failed to serialize: {e:#}"))?;
    if let Some(dir) = entry.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let mut bytes = Vec::with_capacity(CACHE_MAGIC.len() + 32 + payload.len());
    bytes.extend_from_slice(CACHE_MAGIC);
    bytes.extend_from_slice(&Sha256::digest(&payload));
    bytes.extend_from_slice(&payload);
    let temp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, &bytes).with_context(|| format!("failed to write {}", temp.display()))?;
    std::fs::rename(&temp, entry)
        .with_context(|| format!("failed to rename {}", temp.display()))?;
    Ok(())
}

/// A `Hasher` feeding sha256, to turn the engine's compatibility hash into
/// a stable hex string.
struct Sha256Hasher(Sha256);

impl std::hash::Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

/// The plugins of a directory.
#[derive(Default)]
pub struct PluginSet {
    /// Loaded plugins by name.
    pub plugins: BTreeMap<String, Arc<Plugin>>,
    /// Files that were refused.
    pub refused: Vec<PluginError>,
}

/// Read the world and contract version from a component's exports.
fn detect_world(
    path: &Path,
    engine: &Engine,
    component: &Component,
) -> Result<(World, String), PluginError> {
    let ty = component.component_type();
    let mut interfaces = Vec::new();
    let mut versions = Vec::new();
    let mut others = Vec::new();
    for (name, item) in ty.exports(engine) {
        let ours = name
            .strip_prefix(CONTRACT_PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'));
        match (ours, item.ty) {
            (Some(rest), ComponentItem::ComponentInstance(_)) => {
                let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
                interfaces.push(interface.to_owned());
                versions.push(version.to_owned());
            }
            _ => others.push(name.to_owned()),
        }
    }
    if interfaces.is_empty() {
        let reason = if others.is_empty() {
            "it exports nothing".to_owned()
        } else {
            format!("it exports {}", others.join(", "))
        };
        return Err(PluginError::NoWorld {
            path: path.to_owned(),
            reason,
        });
    }
    versions.sort();
    versions.dedup();
    let version = versions.join(", ");
    if versions.len() != 1 || !supported(&versions[0]) {
        return Err(PluginError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
        });
    }
    let has = |i: &str| interfaces.iter().any(|x| x == i);
    let hris = ["employee-source", "completion-sink"];
    let lms = ["user-provisioning", "enrollment", "completion-source"];
    let world = match (hris.iter().all(|i| has(i)), lms.iter().all(|i| has(i))) {
        (true, false) => World::Hris,
        (false, true) => World::Lms,
        (true, true) => {
            return Err(PluginError::NoWorld {
                path: path.to_owned(),
                reason:
                    "it exports both the HRIS and the LMS interfaces; a plugin implements one side"
                        .into(),
            });
        }
        (false, false) => {
            return Err(PluginError::NoWorld {
                path: path.to_owned(),
                reason: format!(
                    "it exports {} but hris-connector needs {} and lms-connector needs {}",
                    interfaces.join(", "),
                    hris.join(" + "),
                    lms.join(" + ")
                ),
            });
        }
    };
    Ok((world, version))
}

/// Whether a contract version is semver-compatible with one we support.
fn supported(version: &str) -> bool {
    let Ok(found) = semver::Version::parse(version) else {
        return false;
    };
    SUPPORTED_VERSIONS.iter().any(|s| {
        semver::Version::parse(s).is_ok_and(|s| {
            s.major == found.major
                && (s.major != 0 || s.minor == found.minor)
                && found >= semver::Version::new(s.major, s.minor, 0)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::supported;

    #[test]
    fn contract_versions() {
        assert!(supported("0.1.0"));
        assert!(supported("0.1.7"));
        assert!(supported("0.2.0"));
        assert!(supported("0.2.3"));
        assert!(supported("0.3.0"));
        assert!(supported("0.4.0"));
        assert!(supported("0.5.0"));
        assert!(!supported("0.6.0"));
        assert!(!supported("1.0.0"));
        assert!(!supported(""));
    }
}
