//! `switchyard plugin`: check, inspect and list plugin files, and lift a
//! connector's quarantine.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use switchyard::audit::{Event, Kind};
use switchyard::config::{AuthConfig, Config};
use switchyard::model::ConnectorName;
use switchyard::runtime::Runtime;
use switchyard::runtime::signature::SecretKey;
use switchyard::store::Store;

use super::common::{ConfigArg, Exit, record_action};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Start a plugin: a crate that builds out of any tree with one command
    /// (the SDK and the contract copied into its `vendor/`), with unit
    /// tests that already pass against the SDK's mock host.
    New {
        /// The plugin's name (lower-case letters, digits, `-`).
        name: String,
        /// Which side it implements.
        #[arg(long, value_enum)]
        kind: switchyard::scaffold::Kind,
        /// Where to make the crate's directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The language: a Rust crate on the SDK, or a Python project built
        /// with componentize-py.
        #[arg(long, value_enum, default_value_t)]
        lang: switchyard::scaffold::Lang,
    },
    /// The conformance runner: drive the plugin against a live system (a
    /// vendor sandbox, a simulator, a SCIM server) as the host would, every
    /// operation twice, a lost answer, concurrent calls, injected errors;
    /// print a table of checks, exit 1 if any fails.
    ///
    /// Use test data: an LMS plugin creates accounts `sy-<tag>-<n>` (left
    /// suspended), an HRIS plugin writes a completion of `--course` for the
    /// first active employee.
    Test {
        /// The `.wasm` file.
        file: PathBuf,
        /// The system's base URL (the plugin's `base_url` setting becomes
        /// the runner's proxy in front of it).
        #[arg(long)]
        against: String,
        /// A further setting for the plugin, `KEY=VALUE` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// The credential, as a connector's `auth` table in TOML:
        /// `{ kind = "bearer", token = { secret = "env:TOKEN" } }`.
        #[arg(long)]
        auth: Option<String>,
        /// A course (LMS) or training type (HRIS) that exists on the
        /// system; enrolment and writeback checks are skipped without it.
        #[arg(long)]
        course: Option<String>,
        /// Print the checks as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a plugin file: is it a component, which world, which contract version.
    Check {
        /// The `.wasm` file.
        file: PathBuf,
    },
    /// Show what a plugin file is and may do: world, contract version,
    /// imports, and what the configuration grants the connectors using it.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        /// Configuration file, to show the grants of the connectors using
        /// this plugin (optional).
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List the plugins in the configured plugin directory, and refused files.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Make an ed25519 key for signing plugins: writes the secret key
    /// (PKCS#8 PEM, mode 0600) and prints the public key for `trusted_keys`.
    Keygen {
        /// Where to write the secret key (refused if it exists).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a plugin file: appends (or replaces) its signature section.
    Sign {
        /// The `.wasm` file, signed in place (atomically).
        file: PathBuf,
        /// The secret key (PKCS#8 PEM, from `plugin keygen` or
        /// `openssl genpkey -algorithm ed25519`).
        #[arg(long)]
        key: PathBuf,
    },
    /// Approve the plugin file now in the plugin directory, though it needs
    /// more than the approved version (while the daemon runs, use
    /// `POST /v1/plugins/NAME/approve` instead).
    Approve {
        #[command(flatten)]
        config: ConfigArg,
        /// The plugin name (file stem).
        plugin: String,
        /// Approve only if the file's sha256 is this (the version reviewed).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Lift a connector's quarantine (its links run again on the next sync).
    Resume {
        /// Configuration file.
        #[arg(
            long,
            short,
            env = "SWITCHYARD_CONFIG",
            default_value = "switchyard.toml"
        )]
        config: PathBuf,
        /// The connector.
        connector: ConnectorName,
    },
}

pub async fn execute(command: PluginCommand) -> anyhow::Result<Exit> {
    match command {
        PluginCommand::New {
            name,
            kind,
            dir,
            lang,
        } => new(&dir, &name, kind, lang),
        PluginCommand::Test {
            file,
            against,
            settings,
            auth,
            course,
            json,
        } => test(file, against, &settings, auth.as_deref(), course, json).await,
        PluginCommand::Check { file } => check(&file),
        PluginCommand::Inspect { file, config } => inspect(&file, config.as_deref()),
        PluginCommand::List { config } => list(&config),
        PluginCommand::Resume { config, connector } => resume(&config, &connector),
        PluginCommand::Keygen { out } => keygen(&out),
        PluginCommand::Sign { file, key } => sign(&file, &key),
        PluginCommand::Approve {
            config,
            plugin,
            sha256,
        } => approve(&config, &plugin, sha256.as_deref()),
    }
}

/// `plugin new`: exit 2 for a bad name or a directory that exists.
fn new(
    parent: &Path,
    name: &str,
    kind: switchyard::scaffold::Kind,
    lang: switchyard::scaffold::Lang,
) -> anyhow::Result<Exit> {
    use switchyard::scaffold::{Lang, ScaffoldError};
    match switchyard::scaffold::new_plugin(parent, name, kind, lang) {
        Ok(dir) => {
            println!("made {}", dir.display());
            match lang {
                Lang::Rust => {
                    println!("  cd {} && cargo test", dir.display());
                    println!("  cargo build --release --target wasm32-wasip2");
                    println!(
                        "  switchyard plugin check target/wasm32-wasip2/release/{}.wasm",
                        name.replace('-', "_")
                    );
                }
                Lang::Python => {
                    println!("  cd {}: the commands are in README.md", dir.display());
                }
            }
            Ok(Exit::Success)
        }
        Err(e @ (ScaffoldError::BadName(_) | ScaffoldError::Exists(_))) => {
            eprintln!("error: {e}");
            Ok(Exit::Invalid)
        }
        Err(e) => Err(e.into()),
    }
}

/// `plugin test`: exit 1 if a check fails, 2 for input that cannot be used.
async fn test(
    plugin: PathBuf,
    against: String,
    settings: &[String],
    auth: Option<&str>,
    course: Option<String>,
    json: bool,
) -> anyhow::Result<Exit> {
    use switchyard::conformance::{self, ConformanceError, Outcome};
    let mut parsed = std::collections::BTreeMap::new();
    for setting in settings {
        let Some((key, value)) = setting.split_once('=') else {
            eprintln!("error: --set {setting}: expected KEY=VALUE");
            return Ok(Exit::Invalid);
        };
        parsed.insert(key.trim().to_owned(), value.to_owned());
    }
    let auth = match auth {
        None => None,
        Some(text) => {
            #[derive(serde::Deserialize)]
            struct Wrapper {
                auth: switchyard::config::AuthConfig,
            }
            match toml::from_str::<Wrapper>(&format!("auth = {text}")) {
                Ok(w) => Some(w.auth),
                Err(e) => {
                    eprintln!("error: --auth is not an auth table: {e}");
                    return Ok(Exit::Invalid);
                }
            }
        }
    };
    if url::Url::parse(&against).is_err() {
        eprintln!("error: --against {against}: not a URL");
        return Ok(Exit::Invalid);
    }
    let options = conformance::Options {
        plugin,
        against,
        settings: parsed,
        auth,
        course,
    };
    let report = match conformance::run(&options).await {
        Ok(report) => report,
        Err(e @ (ConformanceError::Plugin(_) | ConformanceError::Setup(_))) => {
            eprintln!("error: {e}");
            return Ok(Exit::Invalid);
        }
    };
    if json {
        let checks: Vec<serde_json::Value> = report
            .checks
            .iter()
            .map(|c| {
                let (result, detail) = match &c.outcome {
                    Outcome::Passed(d) => ("pass", d),
                    Outcome::Failed(d) => ("fail", d),
                    Outcome::Skipped(d) => ("skip", d),
                };
                serde_json::json!({ "check": c.name, "result": result, "detail": detail })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "world": report.world.to_string(),
                "contract_version": report.contract_version,
                "passed": report.passed(),
                "checks": checks,
            })
        );
    } else {
        println!(
            "{} ({} connector, contract {}) against {}",
            options.plugin.display(),
            report.world,
            report.contract_version,
            options.against
        );
        print!("{}", report.table());
    }
    Ok(if report.passed() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// `plugin check`: exit 2 if the file is refused.
fn check(file: &Path) -> anyhow::Result<Exit> {
    let runtime = Runtime::new()?;
    match runtime.load_plugin(file) {
        Ok(p) => {
            println!(
                "{}: {} (contract {}), sha256 {}, {}",
                file.display(),
                p.world,
                p.contract_version,
                p.sha256,
                signed_by(&p)
            );
            Ok(Exit::Success)
        }
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(Exit::Invalid)
        }
    }
}

fn signed_by(plugin: &switchyard::runtime::Plugin) -> String {
    match plugin.signer {
        None => "not signed".to_owned(),
        Some(s) if s.trusted => format!("signed by {} (trusted)", s.key),
        Some(s) => format!("signed by {} (not in trusted_keys)", s.key),
    }
}

/// `plugin keygen`: exit 2 if the file exists.
fn keygen(out: &Path) -> anyhow::Result<Exit> {
    use std::io::Write as _;
    let key = SecretKey::generate()?;
    let pem = key.to_pem()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!("error: {} exists; not overwriting a key", out.display());
            return Ok(Exit::Invalid);
        }
        Err(e) => return Err(e).with_context(|| format!("failed to create {}", out.display())),
    };
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write {}", out.display()))?;
    println!("secret key written to {}", out.display());
    println!("public key (for trusted_keys): {}", key.public());
    Ok(Exit::Success)
}

/// `plugin sign`: exit 2 if the key or the file cannot be used.
fn sign(file: &Path, key: &Path) -> anyhow::Result<Exit> {
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("failed to read the key {}", key.display()))?;
    let key = match SecretKey::from_pem(&pem) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {}: {e}", key.display());
            return Ok(Exit::Invalid);
        }
    };
    let bytes =
        std::fs::read(file).with_context(|| format!("failed to read {}", file.display()))?;
    let signed = match switchyard::runtime::signature::sign(&bytes, &key) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return Ok(Exit::Invalid);
        }
    };
    // Beside the file, then renamed over it: a watching daemon never sees
    // half a file (names starting with `.` are ignored).
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".switchyard-sign")
        .tempfile_in(dir)
        .with_context(|| format!("failed to write in {}", dir.display()))?;
    std::io::Write::write_all(&mut temp, &signed)?;
    temp.as_file().sync_all()?;
    temp.persist(file)
        .with_context(|| format!("failed to replace {}", file.display()))?;
    println!("{} signed by {}", file.display(), key.public());
    Ok(Exit::Success)
}

/// `plugin approve`: exit 2 if there is no such file, it is refused, or
/// its sha256 is not the one named.
fn approve(config: &ConfigArg, plugin: &str, sha256: Option<&str>) -> anyhow::Result<Exit> {
    let config = Config::load(&config.config)?;
    let runtime = switchyard::service::plugin_runtime(&config)?;
    let file = config.plugin_dir.join(format!("{plugin}.wasm"));
    let loaded = match runtime.load_plugin(&file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("refused: {e}");
            return Ok(Exit::Invalid);
        }
    };
    if let Some(wanted) = sha256
        && wanted != loaded.sha256
    {
        eprintln!(
            "error: {} has sha256 {}, not {wanted}; nothing approved",
            file.display(),
            loaded.sha256
        );
        return Ok(Exit::Invalid);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
    let state = config.open_store().map_err(|e| {
        anyhow::anyhow!("{e:#}\n(if `switchyard run` holds the database, approve through the admin API: POST /v1/plugins/{plugin}/approve)")
    })?;
    let previous = state.plugin_approval(plugin)?;
    let needs = previous
        .as_ref()
        .map(|p| switchyard::review::differences(p, &loaded))
        .unwrap_or_default();
    let by = switchyard::audit::cli_actor();
    state.put_plugin_approval(plugin, &switchyard::review::approval_of(&loaded, &by))?;
    record_action(
        &state,
        Event::new(Kind::PluginApproved).detail(serde_json::json!({
            "plugin": plugin,
            "sha256": loaded.sha256,
            "previous_sha256": previous.map(|p| p.sha256),
            "needs": needs,
        })),
    )?;
    println!(
        "plugin `{plugin}` version {} approved{}",
        loaded.version(),
        if needs.is_empty() {
            String::new()
        } else {
            format!(
                " (needs more than the version approved before: {})",
                needs.join("; ")
            )
        }
    );
    Ok(Exit::Success)
}

/// `plugin list`: exit 2 if a file in the directory is refused.
fn list(config: &ConfigArg) -> anyhow::Result<Exit> {
    let config = Config::load(&config.config)?;
    let set = switchyard::service::plugin_runtime(&config)?.load_dir(&config.plugin_dir)?;
    for p in set.plugins.values() {
        println!(
            "{:<20} {:<15} contract {:<8} {}",
            p.name,
            p.world.to_string(),
            p.contract_version,
            p.version()
        );
    }
    for e in &set.refused {
        println!("refused: {e}");
    }
    Ok(if set.refused.is_empty() {
        Exit::Success
    } else {
        Exit::Invalid
    })
}

/// `plugin resume`: exit 2 if the configuration has no such connector.
fn resume(config: &Path, connector: &ConnectorName) -> anyhow::Result<Exit> {
    let config = Config::load(config)?;
    if !config.connectors.contains_key(connector) {
        eprintln!(
            "error: no connector named `{connector}` in {}",
            config.file.display()
        );
        return Ok(Exit::Invalid);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("failed to create {}", config.data_dir.display()))?;
    let state = config.open_store()?;
    let lifted = state.resume_connector(connector)?;
    record_action(
        &state,
        Event::new(Kind::AdminConnectorResumed)
            .connector(connector)
            .detail(serde_json::json!({ "was_quarantined": lifted.is_some() })),
    )?;
    match lifted {
        Some(q) => println!(
            "connector `{connector}` resumed (quarantined since {}: {})",
            q.at, q.reason
        ),
        None => println!("connector `{connector}` was not quarantined"),
    }
    state.flush()?;
    Ok(Exit::Success)
}

/// `plugin inspect`: the component's world, contract and imports, and what
/// the configuration grants the connectors that use it. Exit 2 if the file
/// is refused.
fn inspect(file: &Path, config: Option<&Path>) -> anyhow::Result<Exit> {
    let config = config.map(Config::load).transpose()?;
    let runtime = match &config {
        Some(c) => switchyard::service::plugin_runtime(c)?,
        None => Runtime::new()?,
    };
    let plugin = match runtime.load_plugin(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("refused: {e}");
            return Ok(Exit::Invalid);
        }
    };
    println!("file              {}", file.display());
    println!("plugin            {}", plugin.name);
    println!("sha256            {}", plugin.sha256);
    println!("world             {}", plugin.world);
    println!("contract version  {}", plugin.contract_version);
    println!("signature         {}", signed_by(&plugin));
    println!("imports");
    for import in &plugin.imports {
        let note = if import.starts_with("switchyard:connector/") {
            "host capability"
        } else if import.starts_with("wasi:") {
            "WASI (linked with an empty context: no files, env, args, sockets or clock access beyond what WASI requires)"
        } else {
            "unknown to the host: the plugin cannot be linked"
        };
        println!("  {import:<40} {note}");
    }
    let Some(config) = config else {
        println!("grants            (pass --config to show what a configuration grants it)");
        return Ok(Exit::Success);
    };
    show_approval(&config, &plugin)?;
    let users: Vec<_> = config
        .connectors
        .iter()
        .filter(|(_, c)| c.plugin == plugin.name)
        .collect();
    if users.is_empty() {
        println!(
            "grants            no connector in {} uses plugin `{}`",
            config.file.display(),
            plugin.name
        );
    }
    for (name, c) in users {
        println!("connector `{name}`");
        let allow: Vec<String> = c.allow.iter().map(ToString::to_string).collect();
        println!(
            "  may reach        {}",
            if allow.is_empty() {
                "nothing (no `allow`)".to_owned()
            } else {
                allow.join(", ")
            }
        );
        match &c.auth {
            None => println!("  credential       none"),
            Some(a) => {
                println!(
                    "  credential       {} (injected by the host; the plugin never sees it)",
                    auth_kind(a)
                );
                let receiving = c.credential_origins();
                let named = receiving
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>();
                println!(
                    "    sent to        {}{}",
                    if named.is_empty() {
                        "no origin".to_owned()
                    } else {
                        named.join(", ")
                    },
                    if c.credential_origins.is_some() {
                        " (`credential_origins`)"
                    } else {
                        " (the allowed origins that are not wildcards)"
                    }
                );
                let without: Vec<String> = c
                    .allow
                    .iter()
                    .filter(|o| !receiving.contains(o))
                    .map(|o| {
                        if receiving.iter().any(|r| o.covers(r)) {
                            format!("other hosts under {o}")
                        } else {
                            o.to_string()
                        }
                    })
                    .collect();
                if !without.is_empty() {
                    println!("    not sent to    {}", without.join(", "));
                }
            }
        }
        for (key, value) in &c.settings {
            println!("  config {key:<10} {value}");
        }
        let l = &c.limits;
        println!(
            "  limits           {} ms per call, {} MiB memory, {} requests per call, {} KiB per response, {} records per page, fuel {}",
            l.call_timeout_ms,
            l.memory_mib,
            l.max_requests,
            l.max_response_kib,
            l.max_records,
            l.fuel.map_or("unlimited".to_owned(), |f| f.to_string())
        );
        for (link, lc) in config
            .links
            .iter()
            .filter(|(_, lc)| lc.hris == *name || lc.lms == *name)
        {
            let role = if lc.hris == *name { "hris" } else { "lms" };
            println!("  used by          link `{link}` as {role}");
        }
    }
    Ok(Exit::Success)
}

/// The approved version of the plugin, and what this file needs beyond it.
fn show_approval(config: &Config, plugin: &switchyard::runtime::Plugin) -> anyhow::Result<()> {
    if !config.data_dir.is_dir() {
        println!("approval          none yet (the first version used is approved on first use)");
        return Ok(());
    }
    let state = match config.open_store() {
        Ok(s) => s,
        Err(e) => {
            println!(
                "approval          unknown: {e:#} (while `switchyard run` holds the database, see GET /v1/plugins)"
            );
            return Ok(());
        }
    };
    match state.plugin_approval(&plugin.name)? {
        None => {
            println!("approval          none yet (the first version used is approved on first use)")
        }
        Some(a) if a.sha256 == plugin.sha256 => {
            println!("approval          this version (by {}, {})", a.by, a.at)
        }
        Some(a) => {
            let more = switchyard::review::differences(&a, plugin);
            if more.is_empty() {
                println!(
                    "approval          needs no more than the approved version {} (used without approval)",
                    &a.sha256[..a.sha256.len().min(12)]
                );
            } else {
                println!(
                    "approval          HELD: needs more than the approved version {}; `switchyard plugin approve {}` to use it",
                    &a.sha256[..a.sha256.len().min(12)],
                    plugin.name
                );
                for m in more {
                    println!("  + {m}");
                }
            }
        }
    }
    Ok(())
}

fn auth_kind(auth: &AuthConfig) -> &'static str {
    match auth {
        AuthConfig::Basic { .. } => "basic",
        AuthConfig::Bearer { .. } => "bearer",
        AuthConfig::Header { .. } => "header",
        AuthConfig::Query { .. } => "query parameter",
        AuthConfig::OAuth2 { .. } => "oauth2 client credentials",
    }
}
