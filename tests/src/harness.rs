//! Both simulators, the real plugins and a configuration in a directory:
//! everything a sync needs, started on loopback.

use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard::{Config, Service};

use crate::hris::{HrisSeed, HrisSim};
use crate::lms::{LmsSeed, LmsSim};
use crate::plugins;
use crate::proxy::FaultProxy;

/// Name of the link the harness configures.
pub const LINK: &str = "acme";

/// Running simulators and a configuration that points at them.
pub struct Harness {
    /// The HRIS simulator.
    pub hris: HrisSim,
    /// The LMS simulator.
    pub lms: LmsSim,
    /// Directory holding the configuration, plugins, secrets and state.
    pub dir: PathBuf,
    /// The configuration file.
    pub config_path: PathBuf,
    /// Fault-injecting proxies the configuration points at instead of the
    /// simulators ([`Options::fault_seed`]).
    pub faults: Option<Faults>,
    _temp: Option<tempfile::TempDir>,
}

/// Extra TOML appended to the `[links.acme]` table (policies, limits).
#[derive(Default, Clone)]
pub struct Options {
    /// Employees seeded in the HRIS.
    pub employees: usize,
    /// Page size the BambooHR plugin asks for.
    pub page_size: usize,
    /// Lines added to the link table.
    pub link_extra: String,
    /// Lines added to both connectors' `limits` tables.
    pub limits: String,
    /// Lines of a `[store]` table (none when empty).
    pub store: String,
    /// Put a [`FaultProxy`] in front of each simulator, drawing faults from
    /// this seed (off until [`FaultProxy::set_rate`]).
    pub fault_seed: Option<u64>,
}

/// The proxies in front of the simulators.
pub struct Faults {
    /// In front of the HRIS.
    pub hris: FaultProxy,
    /// In front of the LMS.
    pub lms: FaultProxy,
}

impl Faults {
    /// Set both proxies' fault rate (per thousand requests).
    pub fn set_rate(&self, per_mille: u32) {
        self.hris.set_rate(per_mille);
        self.lms.set_rate(per_mille);
    }
}

/// BambooHR requests: training record writes are writes, the rest reads
/// (the dataset listing is a `POST` that reads).
fn classify_hris(method: &str, target: &str, _body: &[u8]) -> &'static str {
    if target.contains("/training/record") && (method == "POST" || method == "PUT") {
        "hris-write"
    } else {
        "hris-read"
    }
}

/// Moodle requests, by the web service function in the query or the body.
fn classify_lms(_method: &str, target: &str, body: &[u8]) -> &'static str {
    let text = format!("{target}&{}", String::from_utf8_lossy(body));
    let function = text
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("wsfunction="))
        .unwrap_or("");
    let writes = ["create", "update", "enrol_users", "unenrol"];
    if writes.iter().any(|w| function.contains(w)) {
        "lms-write"
    } else {
        "lms-read"
    }
}

impl Harness {
    /// Start with `employees` seeded employees in a temporary directory.
    pub async fn start(employees: usize) -> anyhow::Result<Harness> {
        Self::start_with(Options {
            employees,
            page_size: 25,
            ..Options::default()
        })
        .await
    }

    /// Start with options in a temporary directory.
    pub async fn start_with(options: Options) -> anyhow::Result<Harness> {
        let temp = tempfile::tempdir()?;
        let dir = temp.path().to_owned();
        let mut harness = Self::start_in(&dir, options).await?;
        harness._temp = Some(temp);
        Ok(harness)
    }

    /// Start with the configuration written to `dir` (kept afterwards).
    pub async fn start_in(dir: &Path, options: Options) -> anyhow::Result<Harness> {
        std::fs::create_dir_all(dir)?;
        let plugin_dir = dir.join("plugins.d");
        plugins::install("bamboohr", &plugin_dir, "bamboohr")?;
        plugins::install("moodle", &plugin_dir, "moodle")?;
        let hris = HrisSim::start(HrisSeed {
            employees: options.employees,
            ..HrisSeed::default()
        })
        .await?;
        let lms = LmsSim::start(LmsSeed::default()).await?;
        let faults = match options.fault_seed {
            Some(seed) => Some(Faults {
                hris: FaultProxy::start(&hris.base_url(), seed, classify_hris).await?,
                lms: FaultProxy::start(&lms.base_url(), seed ^ 0x5eed, classify_lms).await?,
            }),
            None => None,
        };
        let (hris_url, lms_url) = match &faults {
            Some(f) => (f.hris.base_url(), f.lms.base_url()),
            None => (hris.base_url(), lms.base_url()),
        };
        // Secrets go through files, as an operator would mount them.
        let key_file = dir.join("bamboohr.key");
        let token_file = dir.join("moodle.token");
        std::fs::write(&key_file, format!("{}\n", hris.api_key()))?;
        std::fs::write(&token_file, lms.token())?;
        let page_size = if options.page_size == 0 {
            25
        } else {
            options.page_size
        };
        let config = format!(
            r#"# Written by the Switchyard test harness.
plugin_dir = "plugins.d"
data_dir = "state"

[connectors.hr]
plugin = "bamboohr"
config = {{ base_url = "{hris}", page_size = {page_size} }}
allow = ["{hris}"]
auth = {{ kind = "basic", username = {{ secret = "file:{key}" }}, password = "x" }}
[connectors.hr.limits]
{limits}

[connectors.lms]
plugin = "moodle"
config = {{ base_url = "{lms}" }}
allow = ["{lms}"]
auth = {{ kind = "query", param = "wstoken", value = {{ secret = "file:{token}" }} }}
[connectors.lms.limits]
{limits}

[links.{LINK}]
hris = "hr"
lms = "lms"
{link_extra}

[[links.{LINK}.rules]]
name = "everyone"
courses = ["CODE-OF-CONDUCT"]
due_in_days = 30

[[links.{LINK}.rules]]
name = "safety-warehouse"
courses = ["SAFETY-2026"]
when = {{ department = ["Warehouse", "Operations"] }}
due_in_days = 14
recertify_every_days = 365

[[links.{LINK}.rules]]
name = "forklift"
courses = ["FORKLIFT-CERT"]
when = {{ job_title = ["Forklift Operator"] }}
{store}"#,
            hris = hris_url,
            lms = lms_url,
            key = key_file.display(),
            token = token_file.display(),
            limits = options.limits,
            link_extra = options.link_extra,
            store = match options.store.as_str() {
                "" => String::new(),
                lines => format!("\n[store]\n{lines}\n"),
            },
        );
        let config_path = dir.join("switchyard.toml");
        std::fs::write(&config_path, config)?;
        Ok(Harness {
            hris,
            lms,
            dir: dir.to_owned(),
            config_path,
            faults,
            _temp: None,
        })
    }

    /// `switchyard sync --once` on the harness configuration, as an
    /// operator's script runs it.
    pub fn sync_cli(&self) -> std::process::Output {
        std::process::Command::new(switchyard_bin())
            .args(["sync", "--once", "--config"])
            .arg(&self.config_path)
            .output()
            .unwrap_or_else(|e| panic!("failed to run {}: {e}", switchyard_bin().display()))
    }

    /// The HRIS employees who must have an (active) LMS account: active,
    /// not terminated.
    pub fn with_access(&self) -> std::collections::BTreeSet<String> {
        self.hris
            .employees()
            .into_iter()
            .filter(|e| {
                e.status == "Active" && e.employment_history_status.as_deref() != Some("Terminated")
            })
            .map(|e| e.id)
            .collect()
    }

    /// A service opened on the harness configuration.
    pub fn service(&self) -> anyhow::Result<Service> {
        let config = Config::load(&self.config_path)?;
        Service::open(config).context("failed to open the service")
    }
}

/// The `switchyard` binary built beside the running test (`cargo test` at
/// the workspace root builds it for the host crate's own tests) or beside
/// the running binary (the benchmark), or `SWITCHYARD_BIN`.
pub fn switchyard_bin() -> PathBuf {
    if let Ok(path) = std::env::var("SWITCHYARD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // A test runs from `target/<profile>/deps`, a binary from `target/<profile>`.
    let beside = exe.parent().unwrap_or(Path::new("."));
    let candidates = [Some(beside), beside.parent()];
    let bin = candidates
        .into_iter()
        .flatten()
        .map(|dir| dir.join("switchyard"))
        .find(|bin| bin.is_file());
    match bin {
        Some(bin) => bin,
        None => panic!(
            "no switchyard binary beside {}: run `cargo build -p switchyard` (or `cargo test` at the workspace root; `--release` for the benchmark)",
            exe.display()
        ),
    }
}
