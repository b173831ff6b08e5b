//! The plugin runtime: one wasmtime `Engine`, plugins compiled once and
//! pre-instantiated, and a fresh `Store` with limits for every call.
//!
//! **Invariant:** only this module (and `capability`) knows about wasmtime.
//! Everything else sees [`Plugin`], [`Connector`] and the records of `model`.
//!
//! **Invariant:** a plugin call cannot hurt the host. Each call runs in its
//! own store under a wall-clock deadline (epoch interruption for wasm code,
//! a timeout around everything), a linear-memory budget, and instance/table
//! caps, an optional fuel budget, and limits on what it returns. A violation
//! fails that call with `ConnectorError::PluginFault` naming the connector,
//! the plugin and its version; consecutive faults are counted per connector
//! (see [`Connector::consecutive_faults`]) for quarantine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracing::Instrument;
use wasmtime::component::{Component, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capability::http::{Egress, ExchangeLog, HttpState};
use crate::capability::log::LogState;
use crate::capability::stdio::Captured;
use crate::config::{ConnectorConfig, Limits};
use crate::model::{self, ConnectorError};
use crate::secrets::Credential;

pub(crate) mod bindings {
    //! Host bindings generated from `wit/`: the current contract (`hris`,
    //! `lms`) and each older version the host still loads (`v0_1`).
    pub mod hris {
        wasmtime::component::bindgen!({
            world: "hris-connector",
            path: "../wit",
            imports: { default: async | trappable },
            exports: { default: async },
        });
    }
    pub mod lms {
        wasmtime::component::bindgen!({
            world: "lms-connector",
            path: "../wit",
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "switchyard:connector/types": super::hris::switchyard::connector::types,
                "switchyard:connector/http": super::hris::switchyard::connector::http,
                "switchyard:connector/log": super::hris::switchyard::connector::log,
                "switchyard:connector/config": super::hris::switchyard::connector::config,
            },
        });
    }
    pub use hris::switchyard::connector::types;

    /// Contract 0.1.0 (`wit/since_v0.1.0`). Its records are the current
    /// ones (0.2.0 only added to `types`), so `types` maps onto the current
    /// module and calls need no conversion; its imports are registered under
    /// their 0.1.0 names and delegate to the current implementations
    /// (`capability`). It has no `webhook-source`.
    pub mod v0_1 {
        pub mod hris {
            wasmtime::component::bindgen!({
                world: "hris-connector",
                path: "../wit/since_v0.1.0",
                imports: { default: async | trappable },
                exports: { default: async },
                with: {
                    "switchyard:connector/types@0.1.0": crate::runtime::bindings::types,
                },
            });
        }
        pub mod lms {
            wasmtime::component::bindgen!({
                world: "lms-connector",
                path: "../wit/since_v0.1.0",
                imports: { default: async | trappable },
                exports: { default: async },
                with: {
                    "switchyard:connector/types@0.1.0": crate::runtime::bindings::types,
                    "switchyard:connector/http@0.1.0": super::hris::switchyard::connector::http,
                    "switchyard:connector/log@0.1.0": super::hris::switchyard::connector::log,
                    "switchyard:connector/config@0.1.0": super::hris::switchyard::connector::config,
                },
            });
        }
    }
}

use bindings::types as wit;

/// The contract package and the versions of it this host loads.
pub const CONTRACT_PACKAGE: &str = "switchyard:connector";
/// Supported contract versions (semver-compatible with these).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.1.0", "0.2.0"];

/// Bound on the wasm call stack of a plugin.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Epoch tick: the granularity of wasm deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);

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
    pre: Pre,
}

enum Pre {
    Hris(Versioned<bindings::hris::HrisConnectorPre<HostState>, bindings::v0_1::hris::HrisConnectorPre<HostState>>),
    Lms(Versioned<bindings::lms::LmsConnectorPre<HostState>, bindings::v0_1::lms::LmsConnectorPre<HostState>>),
}

/// A pre-instantiated plugin of the current contract or of an older one.
enum Versioned<Current, V0_1> {
    /// Built against the current contract (`wit/`).
    Current(Current),
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
            Versioned::V0_1(pre) => {
                let $instance = pre.instantiate_async(&mut *$store).await?;
                $call
            }
        }
    };
}

impl Plugin {
    /// Short version label: the first 12 hex digits of the file's sha256.
    pub fn version(&self) -> &str {
        &self.sha256[..12]
    }

    /// Whether the plugin exports `webhook-source` (contract 0.2.0 and later).
    pub fn takes_webhooks(&self) -> bool {
        matches!(&self.pre, Pre::Hris(Versioned::Current(_)) | Pre::Lms(Versioned::Current(_)))
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
        Ok(desired <= 100_000)
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

/// The engine, the linker with the host's imports, and the shared HTTP client.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    /// The engine's compatibility hash (hex): part of compiled-code cache keys.
    compatibility: Arc<str>,
    linker: Arc<Linker<HostState>>,
    http: reqwest::Client,
    budgets: Arc<crate::capability::http::OriginBudgets>,
}

impl Runtime {
    /// A runtime with its epoch ticker running.
    pub fn new() -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // Engine-wide; a store without a configured budget gets `u64::MAX`.
        config.consume_fuel(true);
        config.max_wasm_stack(MAX_WASM_STACK);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::hris::HrisConnector::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
            &mut linker,
            |s| s,
        )?;
        // Contract 0.1.0 imports the same functions under 0.1.0 names.
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
        })
    }

    /// Share a request budget for `origin` among every connector of this
    /// runtime (see `config::OriginBudget`).
    pub fn limit_origin(&self, origin: &crate::config::Origin, per_second: u32, burst: u32) {
        self.budgets.limit(origin, per_second, burst);
    }

    /// Compile and check one plugin file. CPU-heavy: call it off the async
    /// runtime (`spawn_blocking`) in a server.
    pub fn load_plugin(&self, path: &Path) -> Result<Plugin, PluginError> {
        self.load_plugin_cached(path, None)
    }

    /// [`Runtime::load_plugin`], reusing compiled code from `cache` (a
    /// directory the host owns) when it holds this file's.
    pub fn load_plugin_cached(&self, path: &Path, cache: Option<&Path>) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Unreadable {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        self.load_plugin_bytes(path, &bytes, cache)
    }

    /// Compile (or take from `cache`) and check plugin bytes read from
    /// `path`. CPU-heavy when not cached.
    pub fn load_plugin_bytes(&self, path: &Path, bytes: &[u8], cache: Option<&Path>) -> Result<Plugin, PluginError> {
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
        let v0_1 = semver::Version::parse(&contract_version).is_ok_and(|v| v.major == 0 && v.minor == 1);
        let pre = match (world, v0_1) {
            (World::Hris, false) => Pre::Hris(Versioned::Current(
                bindings::hris::HrisConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Hris, true) => Pre::Hris(Versioned::V0_1(
                bindings::v0_1::hris::HrisConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Lms, false) => Pre::Lms(Versioned::Current(
                bindings::lms::LmsConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
            (World::Lms, true) => Pre::Lms(Versioned::V0_1(
                bindings::v0_1::lms::LmsConnectorPre::new(instance_pre).map_err(link_err)?,
            )),
        };
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
    fn compile_cached(&self, path: &Path, bytes: &[u8], sha256: &str, dir: &Path) -> Result<Component, PluginError> {
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
                        Err(e) => tracing::warn!(cache = %entry.display(), "cache entry refused, recompiling: {e:#}"),
                    }
                }
                None => tracing::warn!(cache = %entry.display(), "cache entry is corrupt, recompiling"),
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

    /// [`Runtime::load_dir`] with a compiled-code cache directory.
    pub fn load_dir_cached(&self, dir: &Path, cache: Option<&Path>) -> anyhow::Result<PluginSet> {
        let mut set = PluginSet::default();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read plugin directory {}: {e}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        paths.sort();
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
        Ok(set)
    }

    /// A connector: a plugin bound to its settings, grants and credential.
    pub fn connector(
        &self,
        name: &str,
        config: &ConnectorConfig,
        plugin: Arc<Plugin>,
        credential: Option<Credential>,
    ) -> Connector {
        Connector {
            name: name.to_owned(),
            plugin,
            runtime: self.clone(),
            settings: Arc::new(config.settings.clone()),
            limits: config.limits.clone(),
            egress: Arc::new(Egress::new(config.allow.clone(), credential, self.budgets.clone())),
            faults: Arc::new(FaultCount::default()),
            audit: None,
        }
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
    let payload = component.serialize().map_err(|e| anyhow::anyhow!("failed to serialize: {e:#}"))?;
    if let Some(dir) = entry.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    }
    let mut bytes = Vec::with_capacity(CACHE_MAGIC.len() + 32 + payload.len());
    bytes.extend_from_slice(CACHE_MAGIC);
    bytes.extend_from_slice(&Sha256::digest(&payload));
    bytes.extend_from_slice(&payload);
    let temp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, &bytes).with_context(|| format!("failed to write {}", temp.display()))?;
    std::fs::rename(&temp, entry).with_context(|| format!("failed to rename {}", temp.display()))?;
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
                reason: "it exports both the HRIS and the LMS interfaces; a plugin implements one side".into(),
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

/// A plugin bound to one connector's settings, grants and credential.
#[derive(Clone)]
pub struct Connector {
    /// Connector name from the configuration.
    pub name: String,
    /// The plugin it runs.
    pub plugin: Arc<Plugin>,
    runtime: Runtime,
    settings: Arc<BTreeMap<String, String>>,
    limits: Limits,
    egress: Arc<Egress>,
    faults: Arc<FaultCount>,
    audit: Option<crate::audit::Audit>,
}

/// Consecutive plugin faults of a connector, shared by its clones.
#[derive(Debug, Default)]
struct FaultCount {
    consecutive: AtomicU32,
    last: std::sync::Mutex<Option<String>>,
}

type Call<T> = wasmtime::Result<Result<T, wit::ConnectorError>>;

/// What a call returns, measured against the output limits.
trait Output {
    /// Records returned (employees, completions).
    fn records(&self) -> usize {
        0
    }
    /// Approximate size in bytes (the strings it carries).
    fn approx_bytes(&self) -> usize;
}

impl Output for () {
    fn approx_bytes(&self) -> usize {
        0
    }
}

impl Output for String {
    fn approx_bytes(&self) -> usize {
        self.len()
    }
}

impl Output for Option<model::LmsUser> {
    fn records(&self) -> usize {
        usize::from(self.is_some())
    }
    fn approx_bytes(&self) -> usize {
        self.as_ref().map_or(0, |u| u.id.len() + opt_len(&u.email))
    }
}

fn opt_len(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

impl Output for model::EmployeePage {
    fn records(&self) -> usize {
        self.employees.len()
    }
    fn approx_bytes(&self) -> usize {
        let employees: usize = self
            .employees
            .iter()
            .map(|e| {
                e.id.len()
                    + [
                        &e.employee_number,
                        &e.email,
                        &e.given_name,
                        &e.family_name,
                        &e.raw_status,
                        &e.department,
                        &e.job_title,
                        &e.location,
                        &e.manager_id,
                        &e.hire_date,
                        &e.termination_date,
                        &e.updated_at,
                    ]
                    .into_iter()
                    .map(opt_len)
                    .sum::<usize>()
                    + e.custom.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                    + 16
            })
            .sum();
        employees + opt_len(&self.next_cursor) + opt_len(&self.changes_cursor)
    }
}

impl Output for model::CompletionPage {
    fn records(&self) -> usize {
        self.completions.len()
    }
    fn approx_bytes(&self) -> usize {
        let completions: usize = self
            .completions
            .iter()
            .map(|c| {
                c.employee_id.len()
                    + c.course_id.len()
                    + c.attempt_id.len()
                    + c.completed_at.len()
                    + opt_len(&c.expires_at)
                    + 16
            })
            .sum();
        completions + opt_len(&self.next_cursor)
    }
}

impl Output for Vec<model::WebhookEvent> {
    fn records(&self) -> usize {
        self.len()
    }
    fn approx_bytes(&self) -> usize {
        self.iter()
            .map(|event| match event {
                model::WebhookEvent::Completion(c) => {
                    c.employee_id.len() + c.course_id.len() + c.attempt_id.len() + c.completed_at.len() + opt_len(&c.expires_at) + 16
                }
                model::WebhookEvent::EmployeeChanged(e) => model::EmployeePage {
                    employees: vec![e.clone()],
                    next_cursor: None,
                    changes_cursor: None,
                }
                .approx_bytes(),
            })
            .sum()
    }
}

impl Connector {
    /// Plugin faults in a row: reset by a call that does not fault.
    pub fn consecutive_faults(&self) -> u32 {
        self.faults.consecutive.load(Ordering::SeqCst)
    }

    /// The last fault's message, if any call of this connector faulted.
    pub fn last_fault(&self) -> Option<String> {
        self.faults.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Continue counting from a persisted number of faults in a row.
    pub fn restore_consecutive_faults(&self, faults: u32) {
        self.faults.consecutive.store(faults, Ordering::SeqCst);
    }

    /// The limits of this connector.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn store(&self, stdout: &Captured, stderr: &Captured, exchanges: &ExchangeLog) -> Store<HostState> {
        let state = HostState {
            // Nothing granted: no preopened directories, environment,
            // arguments, stdin, sockets or name lookup. Output is captured.
            wasi: WasiCtx::builder()
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .build(),
            table: ResourceTable::new(),
            memory: MemoryBudget {
                limit: (self.limits.memory_mib as usize) << 20,
                used: 0,
                exceeded: false,
            },
            http: HttpState::new(
                self.runtime.http.clone(),
                self.egress.clone(),
                &self.limits,
                &self.name,
                exchanges.clone(),
            ),
            log: LogState::new(&self.name, &self.plugin.name),
            settings: self.settings.clone(),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.memory);
        // Cannot fail: fuel is enabled on the engine.
        let _ = store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        let ticks = self.limits.call_timeout_ms / EPOCH_TICK.as_millis() as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        store
    }

    /// Run one call in a fresh store, under the deadline, and classify
    /// whatever goes wrong.
    async fn call<T: Output>(
        &self,
        operation: &'static str,
        f: impl AsyncFnOnce(&mut Store<HostState>) -> Call<T>,
    ) -> Result<T, ConnectorError> {
        let span = tracing::info_span!("plugin_call", connector = %self.name, plugin = %self.plugin.name, version = self.plugin.version(), operation);
        let deadline = Duration::from_millis(self.limits.call_timeout_ms);
        let (stdout, stderr) = (Captured::default(), Captured::default());
        let exchanges = ExchangeLog::default();
        let run = async {
            let mut store = self.store(&stdout, &stderr, &exchanges);
            let result = f(&mut store).await;
            let data = store.data();
            (result, data.memory.exceeded, data.http.limit_hit.clone())
        };
        let started = std::time::Instant::now();
        // Requests are logged as they finish, so a call cut off by its
        // deadline still has its requests audited.
        let outcome = tokio::time::timeout(deadline, run).instrument(span).await;
        let elapsed = started.elapsed();
        let (exchanges, dropped) = exchanges.take();
        stdout.drain(&self.name, &self.plugin.name, "stdout");
        stderr.drain(&self.name, &self.plugin.name, "stderr");
        let result = match outcome {
            Err(_) => Err(format!("deadline of {deadline:?} exceeded")),
            Ok((Err(trap), memory_exceeded, _)) => {
                Err(classify(&trap, memory_exceeded, deadline, self.limits.fuel))
            }
            Ok((_, _, Some(limit))) => Err(limit),
            Ok((Ok(Err(e)), _, _)) => Ok(Err(ConnectorError::from(e))),
            Ok((Ok(Ok(v)), _, _)) => match self.check_output(&v) {
                Ok(()) => Ok(Ok(v)),
                Err(limit) => Err(limit),
            },
        };
        let failure = match &result {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(what) => Some(format!("plugin fault: {what}")),
        };
        self.audit_call(operation, exchanges, dropped, failure);
        crate::daemon::metrics::plugin_call(&self.name, &self.plugin.name, operation, elapsed, result.as_ref().err().map(String::as_str));
        match result {
            Ok(result) => {
                self.faults.consecutive.store(0, Ordering::SeqCst);
                result
            }
            Err(what) => {
                let message = format!(
                    "connector `{}` (plugin {} {}): {operation}: {what}",
                    self.name,
                    self.plugin.name,
                    self.plugin.version()
                );
                let faults = self.faults.consecutive.fetch_add(1, Ordering::SeqCst) + 1;
                *self.faults.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
                tracing::warn!(faults_in_a_row = faults, "{message}");
                Err(ConnectorError::PluginFault(message))
            }
        }
    }

    /// Audit what a call did: each HTTP request, and the failure if it
    /// failed. Paths and error texts of a call for one employee are
    /// personal (erasable). An audit write that fails is logged, not fatal:
    /// the call happened either way.
    fn audit_call(
        &self,
        operation: &str,
        exchanges: Vec<crate::capability::http::Exchange>,
        dropped: u32,
        failure: Option<String>,
    ) {
        let Some(audit) = &self.audit else {
            return;
        };
        let context = crate::audit::CallContext::current();
        let mut events = Vec::with_capacity(exchanges.len() + 1);
        for x in exchanges {
            let detail = serde_json::json!({
                "function": operation,
                "method": x.method,
                "origin": x.origin,
                "query": x.query,
                "status": x.status,
                "duration_ms": x.duration_ms,
                "bytes_out": x.bytes_out,
                "bytes_in": x.bytes_in,
            });
            events.push(
                context
                    .event("http.request")
                    .connector(&self.name)
                    .detail(detail)
                    .personal(serde_json::json!({ "path": x.path, "error": x.error })),
            );
        }
        if let Some(error) = failure {
            let detail = serde_json::json!({
                "function": operation,
                "plugin": self.plugin.name,
                "version": self.plugin.version(),
                "sha256": self.plugin.sha256,
                "requests_not_recorded": dropped,
            });
            events.push(
                context
                    .event("plugin.call-failed")
                    .connector(&self.name)
                    .detail(detail)
                    .personal(serde_json::json!({ "error": error })),
            );
        }
        if let Err(e) = audit.append_all(events) {
            tracing::error!(connector = %self.name, "failed to write the audit log: {e:#}");
        }
    }

    /// Send this connector's audit records (HTTP requests, failed calls)
    /// to `audit`.
    pub fn set_audit(&mut self, audit: crate::audit::Audit) {
        self.audit = Some(audit);
    }

    /// The output limits: records per page and approximate bytes per call.
    fn check_output(&self, output: &impl Output) -> Result<(), String> {
        let records = output.records();
        let max_records = self.limits.max_records as usize;
        if records > max_records {
            return Err(format!(
                "output limit exceeded: {records} records returned, limit `max_records` is {max_records}"
            ));
        }
        let bytes = output.approx_bytes();
        let max_bytes = (self.limits.max_output_kib as usize) << 10;
        if bytes > max_bytes {
            return Err(format!(
                "output limit exceeded: about {} KiB returned, limit `max_output_kib` is {}",
                bytes >> 10,
                self.limits.max_output_kib
            ));
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn hris(
        &self,
    ) -> Result<
        &Versioned<bindings::hris::HrisConnectorPre<HostState>, bindings::v0_1::hris::HrisConnectorPre<HostState>>,
        ConnectorError,
    > {
        match &self.plugin.pre {
            Pre::Hris(pre) => Ok(pre),
            Pre::Lms(_) => Err(ConnectorError::InvalidConfig(format!(
                "connector `{}` runs plugin `{}`, an lms-connector, where an hris-connector is needed",
                self.name, self.plugin.name
            ))),
        }
    }

    #[allow(clippy::type_complexity)]
    fn lms(
        &self,
    ) -> Result<
        &Versioned<bindings::lms::LmsConnectorPre<HostState>, bindings::v0_1::lms::LmsConnectorPre<HostState>>,
        ConnectorError,
    > {
        match &self.plugin.pre {
            Pre::Lms(pre) => Ok(pre),
            Pre::Hris(_) => Err(ConnectorError::InvalidConfig(format!(
                "connector `{}` runs plugin `{}`, an hris-connector, where an lms-connector is needed",
                self.name, self.plugin.name
            ))),
        }
    }

    /// `fetch-employees`.
    pub async fn fetch_employees(
        &self,
        cursor: Option<&str>,
    ) -> Result<model::EmployeePage, ConnectorError> {
        let pre = self.hris()?;
        self.call("fetch-employees", async |store| {
            with_instance!(pre, store, |instance| {
                let page = instance
                    .switchyard_connector_employee_source()
                    .call_fetch_employees(&mut *store, cursor)
                    .await?;
                Ok(page.map(Into::into))
            })
        })
        .await
    }

    /// `push-completion`.
    pub async fn push_completion(
        &self,
        completion: &model::Completion,
        idempotency_key: &str,
        supersedes: Option<&str>,
    ) -> Result<(), ConnectorError> {
        let pre = self.hris()?;
        let completion = wit::Completion::from(completion.clone());
        self.call("push-completion", async |store| {
            with_instance!(pre, store, |instance| {
                instance
                    .switchyard_connector_completion_sink()
                    .call_push_completion(&mut *store, &completion, idempotency_key, supersedes)
                    .await
            })
        })
        .await
    }

    /// `upsert-user`: returns the LMS user id.
    pub async fn upsert_user(
        &self,
        employee: &model::Employee,
        lms_user_id: Option<&str>,
        idempotency_key: &str,
    ) -> Result<String, ConnectorError> {
        let pre = self.lms()?;
        let employee = wit::Employee::from(employee.clone());
        self.call("upsert-user", async |store| {
            with_instance!(pre, store, |instance| {
                instance
                    .switchyard_connector_user_provisioning()
                    .call_upsert_user(&mut *store, &employee, lms_user_id, idempotency_key)
                    .await
            })
        })
        .await
    }

    /// `set-active`.
    pub async fn set_active(
        &self,
        lms_user_id: &str,
        active: bool,
        idempotency_key: &str,
    ) -> Result<(), ConnectorError> {
        let pre = self.lms()?;
        self.call("set-active", async |store| {
            with_instance!(pre, store, |instance| {
                instance
                    .switchyard_connector_user_provisioning()
                    .call_set_active(&mut *store, lms_user_id, active, idempotency_key)
                    .await
            })
        })
        .await
    }

    /// `find-user`: the LMS account of an HRIS employee id, as the LMS holds it.
    pub async fn find_user(&self, employee_id: &str) -> Result<Option<model::LmsUser>, ConnectorError> {
        let pre = self.lms()?;
        self.call("find-user", async |store| {
            with_instance!(pre, store, |instance| {
                let user = instance
                    .switchyard_connector_user_provisioning()
                    .call_find_user(&mut *store, employee_id)
                    .await?;
                Ok(user.map(|u| {
                    u.map(|u| model::LmsUser {
                        id: u.id,
                        active: u.active,
                        email: u.email,
                    })
                }))
            })
        })
        .await
    }

    /// `unenroll`.
    pub async fn unenroll(
        &self,
        lms_user_id: &str,
        course_id: &str,
        idempotency_key: &str,
    ) -> Result<(), ConnectorError> {
        let pre = self.lms()?;
        self.call("unenroll", async |store| {
            with_instance!(pre, store, |instance| {
                instance
                    .switchyard_connector_enrollment()
                    .call_unenroll(&mut *store, lms_user_id, course_id, idempotency_key)
                    .await
            })
        })
        .await
    }

    /// `enroll`.
    pub async fn enroll(
        &self,
        lms_user_id: &str,
        course_id: &str,
        due: Option<&str>,
        idempotency_key: &str,
    ) -> Result<(), ConnectorError> {
        let pre = self.lms()?;
        self.call("enroll", async |store| {
            with_instance!(pre, store, |instance| {
                instance
                    .switchyard_connector_enrollment()
                    .call_enroll(&mut *store, lms_user_id, course_id, due, idempotency_key)
                    .await
            })
        })
        .await
    }

    /// `fetch-completions`.
    pub async fn fetch_completions(
        &self,
        cursor: Option<&str>,
    ) -> Result<model::CompletionPage, ConnectorError> {
        let pre = self.lms()?;
        self.call("fetch-completions", async |store| {
            with_instance!(pre, store, |instance| {
                let page = instance
                    .switchyard_connector_completion_source()
                    .call_fetch_completions(&mut *store, cursor)
                    .await?;
                Ok(page.map(Into::into))
            })
        })
        .await
    }
}

impl Connector {
    /// `parse-webhook`: translate a delivery whose signature the host has
    /// verified. A plugin built against a contract without `webhook-source`
    /// (0.1.x) gets `unsupported` without a call.
    pub async fn parse_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<model::WebhookEvent>, ConnectorError> {
        let events = |events: Vec<wit::WebhookEvent>| events.into_iter().map(Into::into).collect();
        match &self.plugin.pre {
            Pre::Hris(Versioned::Current(pre)) => {
                self.call("parse-webhook", async |store| {
                    let instance = pre.instantiate_async(&mut *store).await?;
                    let parsed = instance
                        .switchyard_connector_webhook_source()
                        .call_parse_webhook(&mut *store, headers, body)
                        .await?;
                    Ok(parsed.map(events))
                })
                .await
            }
            Pre::Lms(Versioned::Current(pre)) => {
                self.call("parse-webhook", async |store| {
                    let instance = pre.instantiate_async(&mut *store).await?;
                    let parsed = instance
                        .switchyard_connector_webhook_source()
                        .call_parse_webhook(&mut *store, headers, body)
                        .await?;
                    Ok(parsed.map(events))
                })
                .await
            }
            Pre::Hris(Versioned::V0_1(_)) | Pre::Lms(Versioned::V0_1(_)) => Err(ConnectorError::Unsupported(format!(
                "connector `{}` runs plugin {} {}, built against contract {}, which has no webhook-source (0.2.0 or later)",
                self.name,
                self.plugin.name,
                self.plugin.version(),
                self.plugin.contract_version
            ))),
        }
    }
}

/// Name what stopped a call.
fn classify(error: &wasmtime::Error, memory_exceeded: bool, deadline: Duration, fuel: Option<u64>) -> String {
    if memory_exceeded {
        return format!("memory limit exceeded: {error:#}");
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!("deadline of {deadline:?} exceeded (interrupted)"),
        Some(wasmtime::Trap::OutOfFuel) => match fuel {
            Some(fuel) => format!("fuel budget exhausted: limit `fuel` is {fuel}"),
            None => "fuel exhausted".to_owned(),
        },
        Some(wasmtime::Trap::StackOverflow) => format!("stack overflow (wasm stack limit of {} KiB)", MAX_WASM_STACK >> 10),
        Some(trap) => format!("trap: {trap}: {error:#}"),
        None => format!("{error:#}"),
    }
}

// ---- conversions between the generated bindings and `model` ----

impl From<wit::ConnectorError> for ConnectorError {
    fn from(e: wit::ConnectorError) -> Self {
        match e {
            wit::ConnectorError::Transient(m) => ConnectorError::Transient(m),
            wit::ConnectorError::RateLimited(s) => ConnectorError::RateLimited(s),
            wit::ConnectorError::Unauthorized(m) => ConnectorError::Unauthorized(m),
            wit::ConnectorError::InvalidConfig(m) => ConnectorError::InvalidConfig(m),
            wit::ConnectorError::Rejected(m) => ConnectorError::Rejected(m),
            wit::ConnectorError::Unsupported(m) => ConnectorError::Unsupported(m),
        }
    }
}

impl From<wit::EmploymentStatus> for model::EmploymentStatus {
    fn from(s: wit::EmploymentStatus) -> Self {
        match s {
            wit::EmploymentStatus::Pending => Self::Pending,
            wit::EmploymentStatus::Active => Self::Active,
            wit::EmploymentStatus::OnLeave => Self::OnLeave,
            wit::EmploymentStatus::Inactive => Self::Inactive,
            wit::EmploymentStatus::Terminated => Self::Terminated,
        }
    }
}

impl From<model::EmploymentStatus> for wit::EmploymentStatus {
    fn from(s: model::EmploymentStatus) -> Self {
        match s {
            model::EmploymentStatus::Pending => Self::Pending,
            model::EmploymentStatus::Active => Self::Active,
            model::EmploymentStatus::OnLeave => Self::OnLeave,
            model::EmploymentStatus::Inactive => Self::Inactive,
            model::EmploymentStatus::Terminated => Self::Terminated,
        }
    }
}

impl From<wit::Employee> for model::Employee {
    fn from(e: wit::Employee) -> Self {
        model::Employee {
            id: e.id,
            employee_number: e.employee_number,
            email: e.email,
            given_name: e.given_name,
            family_name: e.family_name,
            status: e.status.into(),
            raw_status: e.raw_status,
            department: e.department,
            job_title: e.job_title,
            location: e.location,
            manager_id: e.manager_id,
            hire_date: e.hire_date,
            termination_date: e.termination_date,
            updated_at: e.updated_at,
            custom: e.custom,
        }
    }
}

impl From<model::Employee> for wit::Employee {
    fn from(e: model::Employee) -> Self {
        wit::Employee {
            id: e.id,
            employee_number: e.employee_number,
            email: e.email,
            given_name: e.given_name,
            family_name: e.family_name,
            status: e.status.into(),
            raw_status: e.raw_status,
            department: e.department,
            job_title: e.job_title,
            location: e.location,
            manager_id: e.manager_id,
            hire_date: e.hire_date,
            termination_date: e.termination_date,
            updated_at: e.updated_at,
            custom: e.custom,
        }
    }
}

impl From<wit::EmployeePage> for model::EmployeePage {
    fn from(p: wit::EmployeePage) -> Self {
        model::EmployeePage {
            employees: p.employees.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
            changes_cursor: p.changes_cursor,
        }
    }
}

impl From<wit::CompletionStatus> for model::CompletionStatus {
    fn from(s: wit::CompletionStatus) -> Self {
        match s {
            wit::CompletionStatus::Completed => Self::Completed,
            wit::CompletionStatus::Passed => Self::Passed,
            wit::CompletionStatus::Failed => Self::Failed,
        }
    }
}

impl From<model::CompletionStatus> for wit::CompletionStatus {
    fn from(s: model::CompletionStatus) -> Self {
        match s {
            model::CompletionStatus::Completed => Self::Completed,
            model::CompletionStatus::Passed => Self::Passed,
            model::CompletionStatus::Failed => Self::Failed,
        }
    }
}

impl From<wit::Completion> for model::Completion {
    fn from(c: wit::Completion) -> Self {
        model::Completion {
            employee_id: c.employee_id,
            course_id: c.course_id,
            attempt_id: c.attempt_id,
            status: c.status.into(),
            completed_at: c.completed_at,
            score: c.score,
            expires_at: c.expires_at,
        }
    }
}

impl From<model::Completion> for wit::Completion {
    fn from(c: model::Completion) -> Self {
        wit::Completion {
            employee_id: c.employee_id,
            course_id: c.course_id,
            attempt_id: c.attempt_id,
            status: c.status.into(),
            completed_at: c.completed_at,
            score: c.score,
            expires_at: c.expires_at,
        }
    }
}

impl From<wit::WebhookEvent> for model::WebhookEvent {
    fn from(e: wit::WebhookEvent) -> Self {
        match e {
            wit::WebhookEvent::Completion(c) => Self::Completion(c.into()),
            wit::WebhookEvent::EmployeeChanged(e) => Self::EmployeeChanged(e.into()),
        }
    }
}

impl From<wit::CompletionPage> for model::CompletionPage {
    fn from(p: wit::CompletionPage) -> Self {
        model::CompletionPage {
            completions: p.completions.into_iter().map(Into::into).collect(),
            next_cursor: p.next_cursor,
            more: p.more,
        }
    }
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
        assert!(!supported("0.3.0"));
        assert!(!supported("1.0.0"));
        assert!(!supported(""));
    }
}
