//! The plugin directory, watched: drop a `*.wasm` in and it is live.
//!
//! A file is considered when its size and modification time have stayed
//! the same for `plugin_settle` (so a copy in progress is not picked up), and
//! loaded only if it validates (a component, a supported contract version,
//! a connector world). Compilation runs on the blocking pool
//! (`spawn_blocking`), through the compiled-code cache in the data directory
//! (`cache/`, keyed by the file's sha256 and the engine's compatibility
//! hash; see `Runtime::load_plugin_bytes`).
//!
//! - A new or changed file that validates replaces the plugin of that name.
//!   The daemon then assembles a new `Service` and swaps it in atomically:
//!   a link run in progress finishes on the version it started with, the
//!   next run uses the new one.
//! - A file that fails is refused with its reason (log, admin API, event)
//!   and the version already serving, if any, keeps serving.
//! - A file that validates but needs more than the approved version of its
//!   plugin (a newer contract, a new import, another signer: see
//!   [`crate::review`]) is held: the version serving keeps serving, and the
//!   status shows what more it needs until an operator approves it
//!   ([`PluginDir::approve`]).
//! - A removed file stops serving: the connectors using it are paused until
//!   a file of that name is back.
//!
//! Files whose name starts with `.` are ignored, so `cp x.wasm dir/.x.wasm &&
//! mv dir/.x.wasm dir/x.wasm` (a rename within one file system is atomic)
//! installs a plugin without ever exposing a partial file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::review::Review;
use crate::runtime::{Plugin, PluginError, Runtime, World};
use crate::store::Store;

/// What the watcher knows of one plugin name.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// Plugin name (file stem).
    pub name: String,
    /// `serving`, `held` (a new file waits for approval; the `serving`
    /// version, if any, keeps serving), `refused` (nothing serving, the
    /// file was refused) or `removed` (the file is gone; its connectors are
    /// paused).
    pub status: &'static str,
    /// The version serving, if any.
    pub serving: Option<ServingVersion>,
    /// The last file refused under this name, if it was not replaced by a
    /// good one since.
    pub refused: Option<Refusal>,
    /// A file that needs more than the approved version, waiting.
    pub held: Option<HeldVersion>,
}

/// A version waiting for an operator's approval.
#[derive(Debug, Clone, Serialize)]
pub struct HeldVersion {
    /// sha256 of the file.
    pub sha256: String,
    /// Short version.
    pub version: String,
    /// What it needs beyond the approved version.
    pub needs: Vec<String>,
    /// The key that signed it, if any.
    pub signer: Option<String>,
    /// Since when (RFC 3339).
    pub at: String,
}

/// A loaded plugin version.
#[derive(Debug, Clone, Serialize)]
pub struct ServingVersion {
    /// sha256 of the file.
    pub sha256: String,
    /// Short version (first 12 hex digits of the sha256).
    pub version: String,
    /// `hris-connector` or `lms-connector`.
    pub world: String,
    /// Contract version it was built against.
    pub contract_version: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// The key that signed it (`ed25519:<base64>`), if it is signed.
    pub signer: Option<String>,
}

/// A refused file.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// sha256 of the refused file (if it could be read).
    pub sha256: Option<String>,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
}

/// A change the watcher made.
#[derive(Debug, Clone)]
pub enum Change {
    /// A plugin that was not serving now is.
    Loaded {
        plugin: String,
        sha256: String,
        world: String,
    },
    /// A new version replaced the serving one.
    Replaced {
        plugin: String,
        old_sha256: String,
        new_sha256: String,
    },
    /// A file was refused (the previous version, if any, keeps serving).
    Refused {
        plugin: String,
        sha256: Option<String>,
        reason: String,
        still_serving: Option<String>,
    },
    /// A file was removed; its plugin no longer serves.
    Removed { plugin: String, sha256: String },
    /// A file needs more than the approved version; it waits for an
    /// operator (the previous version, if any, keeps serving).
    Held {
        plugin: String,
        sha256: String,
        needs: Vec<String>,
        still_serving: Option<String>,
    },
}

impl Change {
    /// Whether the set of serving plugins changed.
    pub fn changes_serving(&self) -> bool {
        !matches!(self, Change::Refused { .. } | Change::Held { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    len: u64,
    modified: Option<SystemTime>,
}

struct Watched {
    /// Last stat seen and since when it has not changed.
    seen: Stat,
    seen_since: Instant,
    /// The stat last evaluated (loaded or refused): nothing to do until it
    /// changes.
    evaluated: Option<Stat>,
}

#[derive(Default)]
struct Inner {
    files: BTreeMap<String, Watched>,
    serving: BTreeMap<String, (Arc<Plugin>, String)>,
    refused: BTreeMap<String, Refusal>,
    removed: BTreeMap<String, String>,
    held: BTreeMap<String, (Arc<Plugin>, Vec<String>, String)>,
}

/// The watched plugin directory and the plugins it serves.
pub struct PluginDir {
    dir: PathBuf,
    cache: PathBuf,
    settle: Duration,
    /// The world each plugin name must implement, from the links that use
    /// it, and which connector and link say so.
    expected: Arc<BTreeMap<String, (World, String)>>,
    /// Where approvals are kept.
    state: Arc<dyn Store>,
    inner: Mutex<Inner>,
}

/// What the configuration expects of each plugin name. A name that links
/// use in both roles expects nothing: one connector names the wrong
/// plugin, and once the file is loaded the service pauses only that
/// connector (with its line in the configuration), not every user of the
/// plugin.
fn expected_worlds(config: &Config) -> BTreeMap<String, (World, String)> {
    let mut expected: BTreeMap<String, (World, String)> = BTreeMap::new();
    let mut conflicting = Vec::new();
    for (link_name, link) in &config.links {
        for (connector, world) in [(&link.hris, World::Hris), (&link.lms, World::Lms)] {
            if let Some(c) = config.connectors.get(connector) {
                let (seen, _) = expected.entry(c.plugin.clone()).or_insert_with(|| {
                    (
                        world,
                        format!("connector `{connector}` of link `{link_name}`"),
                    )
                });
                if *seen != world {
                    conflicting.push(c.plugin.clone());
                }
            }
        }
    }
    for plugin in conflicting {
        expected.remove(&plugin);
    }
    expected
}

enum Evaluated {
    /// The file changed while being read: look again later.
    Unsettled,
    /// Same bytes as the version serving.
    Same,
    Loaded(Box<Plugin>),
    Refused(Option<String>, PluginError),
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn stat(path: &Path) -> Option<Stat> {
    let meta = std::fs::metadata(path).ok()?;
    meta.is_file().then(|| Stat {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// The `*.wasm` files of `dir` (not hidden), by plugin name.
fn list(dir: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".wasm") else {
            continue;
        };
        if stem.is_empty() || name.starts_with('.') {
            continue;
        }
        files.insert(stem.to_owned(), path);
    }
    Ok(files)
}

impl PluginDir {
    /// Watch the configuration's plugin directory; compiled code is cached
    /// in `cache`. A file is refused unless it implements the world the
    /// configuration's links need of that plugin name.
    pub fn new(config: &Config, cache: PathBuf, state: Arc<dyn Store>) -> PluginDir {
        PluginDir {
            dir: config.plugin_dir.clone(),
            cache,
            settle: config.daemon.plugin_settle,
            expected: Arc::new(expected_worlds(config)),
            state,
            inner: Mutex::default(),
        }
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plugins serving now, by name.
    pub fn serving(&self) -> BTreeMap<String, Arc<Plugin>> {
        self.lock()
            .serving
            .iter()
            .map(|(n, (p, _))| (n.clone(), p.clone()))
            .collect()
    }

    /// Why a plugin is not serving (appended to "plugin `x` is not available").
    pub fn why_missing(&self, plugin: &str) -> String {
        let inner = self.lock();
        if let Some((held, needs, _)) = inner.held.get(plugin) {
            format!(": held: {}", crate::review::held_reason(held, needs))
        } else if let Some(r) = inner.refused.get(plugin) {
            format!(": {}", r.reason)
        } else if inner.removed.contains_key(plugin) {
            format!(": {plugin}.wasm was removed from {}", self.dir.display())
        } else {
            format!(": no {plugin}.wasm in {}", self.dir.display())
        }
    }

    /// Status of every plugin name seen.
    pub fn status(&self) -> Vec<PluginInfo> {
        let inner = self.lock();
        let mut names: Vec<&String> = inner
            .serving
            .keys()
            .chain(inner.refused.keys())
            .chain(inner.removed.keys())
            .chain(inner.held.keys())
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let serving = inner.serving.get(name).map(|(p, at)| ServingVersion {
                    sha256: p.sha256.clone(),
                    version: p.version().to_owned(),
                    world: p.world.to_string(),
                    contract_version: p.contract_version.clone(),
                    loaded_at: at.clone(),
                    signer: p.signer.map(|s| s.key.to_string()),
                });
                let held = inner.held.get(name).map(|(p, needs, at)| HeldVersion {
                    sha256: p.sha256.clone(),
                    version: p.version().to_owned(),
                    needs: needs.clone(),
                    signer: p.signer.map(|s| s.key.to_string()),
                    at: at.clone(),
                });
                let status = match (&serving, &held, inner.removed.contains_key(name)) {
                    (_, Some(_), _) => "held",
                    (Some(_), None, _) => "serving",
                    (None, None, true) => "removed",
                    (None, None, false) => "refused",
                };
                PluginInfo {
                    name: name.clone(),
                    status,
                    serving,
                    refused: inner.refused.get(name).cloned(),
                    held,
                }
            })
            .collect()
    }

    /// Whether a file is waiting to settle.
    pub fn has_pending(&self) -> bool {
        self.lock()
            .files
            .values()
            .any(|w| w.evaluated != Some(w.seen))
    }

    /// Look at the directory once and apply what changed. On the first scan
    /// (`initial`) files are loaded without waiting for them to settle.
    pub async fn scan(&self, runtime: &Runtime, initial: bool) -> Vec<Change> {
        let mut changes = Vec::new();
        let files = match list(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cannot read the plugin directory: {e}");
                return changes;
            }
        };
        // Removed files.
        {
            let mut inner = self.lock();
            let gone: Vec<String> = inner
                .files
                .keys()
                .filter(|n| !files.contains_key(*n))
                .cloned()
                .collect();
            for name in gone {
                inner.files.remove(&name);
                inner.refused.remove(&name);
                inner.held.remove(&name);
                if let Some((plugin, _)) = inner.serving.remove(&name) {
                    inner.removed.insert(name.clone(), plugin.sha256.clone());
                    changes.push(Change::Removed {
                        plugin: name,
                        sha256: plugin.sha256.clone(),
                    });
                }
            }
        }
        // Files to evaluate: new or changed, and settled.
        let mut ready = Vec::new();
        for (name, path) in files {
            let Some(now) = stat(&path) else { continue };
            let mut inner = self.lock();
            let watched = inner.files.entry(name.clone()).or_insert_with(|| Watched {
                seen: now,
                seen_since: Instant::now(),
                evaluated: None,
            });
            if watched.seen != now {
                watched.seen = now;
                watched.seen_since = Instant::now();
            }
            if watched.evaluated != Some(now)
                && (initial || watched.seen_since.elapsed() >= self.settle)
            {
                let serving_sha = inner.serving.get(&name).map(|(p, _)| p.sha256.clone());
                ready.push((name, path, now, serving_sha));
            }
        }
        // Distinct files compile in parallel, each on the blocking pool.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut outcomes: Vec<_> = futures::stream::iter(ready)
            .map(|(name, path, now, serving_sha)| {
                let runtime = runtime.clone();
                let cache = self.cache.clone();
                let expected = self.expected.get(&name).cloned();
                async move {
                    let outcome = {
                        let path = path.clone();
                        let serving_sha = serving_sha.clone();
                        tokio::task::spawn_blocking(move || {
                            evaluate(
                                &runtime,
                                &path,
                                &cache,
                                now,
                                serving_sha.as_deref(),
                                expected,
                            )
                        })
                        .await
                    };
                    (name, path, now, serving_sha, outcome)
                }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        outcomes.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, path, now, serving_sha, outcome) in outcomes {
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => Evaluated::Refused(
                    None,
                    PluginError::Link {
                        path: path.clone(),
                        reason: format!("the compile task failed: {e}"),
                    },
                ),
            };
            // A version that needs more than the approved one waits.
            let review = match &outcome {
                Evaluated::Loaded(plugin) => Some(crate::review::review(&*self.state, plugin)),
                _ => None,
            };
            let mut inner = self.lock();
            match outcome {
                Evaluated::Unsettled => {}
                Evaluated::Same => {
                    if let Some(w) = inner.files.get_mut(&name) {
                        w.evaluated = Some(now);
                    }
                    inner.refused.remove(&name);
                    inner.held.remove(&name);
                }
                Evaluated::Loaded(plugin) if !matches!(review, Some(Ok(Review::Approved))) => {
                    if let Some(w) = inner.files.get_mut(&name) {
                        w.evaluated = Some(now);
                    }
                    inner.refused.remove(&name);
                    let needs = match review {
                        Some(Ok(Review::Held(needs))) => needs,
                        Some(Err(e)) => vec![format!("(the approval could not be checked: {e:#})")],
                        _ => Vec::new(),
                    };
                    changes.push(Change::Held {
                        plugin: name.clone(),
                        sha256: plugin.sha256.clone(),
                        needs: needs.clone(),
                        still_serving: serving_sha.clone(),
                    });
                    inner
                        .held
                        .insert(name.clone(), (Arc::from(plugin), needs, now_rfc3339()));
                }
                Evaluated::Loaded(plugin) => {
                    if let Some(w) = inner.files.get_mut(&name) {
                        w.evaluated = Some(now);
                    }
                    inner.refused.remove(&name);
                    inner.removed.remove(&name);
                    inner.held.remove(&name);
                    let plugin = Arc::<Plugin>::from(plugin);
                    changes.push(match &serving_sha {
                        Some(old) => Change::Replaced {
                            plugin: name.clone(),
                            old_sha256: old.clone(),
                            new_sha256: plugin.sha256.clone(),
                        },
                        None => Change::Loaded {
                            plugin: name.clone(),
                            sha256: plugin.sha256.clone(),
                            world: plugin.world.to_string(),
                        },
                    });
                    inner.serving.insert(name.clone(), (plugin, now_rfc3339()));
                }
                Evaluated::Refused(sha256, error) => {
                    if let Some(w) = inner.files.get_mut(&name) {
                        w.evaluated = Some(now);
                    }
                    inner.held.remove(&name);
                    let reason = error.to_string();
                    inner.refused.insert(
                        name.clone(),
                        Refusal {
                            sha256: sha256.clone(),
                            reason: reason.clone(),
                            at: now_rfc3339(),
                        },
                    );
                    changes.push(Change::Refused {
                        plugin: name.clone(),
                        sha256,
                        reason,
                        still_serving: serving_sha,
                    });
                }
            }
        }
        changes
    }
}

impl PluginDir {
    /// Approve the held version of `plugin` (recording `by` in its
    /// approval): it serves from now on. With `sha256`, only if that is
    /// the version held (the one the operator reviewed).
    pub fn approve(
        &self,
        plugin: &str,
        sha256: Option<&str>,
        by: &str,
    ) -> anyhow::Result<Approval> {
        let mut inner = self.lock();
        let Some((held, _, _)) = inner.held.get(plugin).cloned() else {
            return Ok(Approval::NothingHeld);
        };
        if let Some(wanted) = sha256
            && wanted != held.sha256
        {
            return Ok(Approval::OtherVersionHeld(held.sha256.clone()));
        }
        self.state
            .put_plugin_approval(plugin, &crate::review::approval_of(&held, by))?;
        inner.held.remove(plugin);
        inner.removed.remove(plugin);
        let change = match inner.serving.get(plugin) {
            Some((old, _)) => Change::Replaced {
                plugin: plugin.to_owned(),
                old_sha256: old.sha256.clone(),
                new_sha256: held.sha256.clone(),
            },
            None => Change::Loaded {
                plugin: plugin.to_owned(),
                sha256: held.sha256.clone(),
                world: held.world.to_string(),
            },
        };
        inner
            .serving
            .insert(plugin.to_owned(), (held, now_rfc3339()));
        Ok(Approval::Approved(change))
    }
}

/// What [`PluginDir::approve`] did.
#[derive(Debug)]
pub enum Approval {
    /// The held version serves now.
    Approved(Change),
    /// Nothing is held under that name.
    NothingHeld,
    /// Another version (this sha256) is held than the one named.
    OtherVersionHeld(String),
}

/// Read, check the file did not change meanwhile, and load (blocking).
fn evaluate(
    runtime: &Runtime,
    path: &Path,
    cache: &Path,
    expected: Stat,
    serving_sha: Option<&str>,
    world: Option<(World, String)>,
) -> Evaluated {
    let bytes = match runtime.read_plugin(path) {
        Ok(b) => b,
        Err(e) => return Evaluated::Refused(None, e),
    };
    if stat(path) != Some(expected) || bytes.len() as u64 != expected.len {
        return Evaluated::Unsettled;
    }
    let sha256 = hex::encode(Sha256::digest(&bytes));
    if serving_sha == Some(sha256.as_str()) {
        return Evaluated::Same;
    }
    match runtime.load_plugin_bytes(path, &bytes, Some(cache)) {
        Ok(plugin) => match world {
            Some((world, used_by)) if plugin.world != world => Evaluated::Refused(
                Some(sha256),
                PluginError::WrongWorld {
                    path: path.to_owned(),
                    found: plugin.world,
                    needed: world,
                    used_by,
                },
            ),
            _ => Evaluated::Loaded(Box::new(plugin)),
        },
        Err(e) => Evaluated::Refused(Some(sha256), e),
    }
}
