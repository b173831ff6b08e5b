//! The `switchyard` binary: exit codes and messages scripts rely on.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

#[test]
fn a_bad_config_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        "[connectors.hr]\nplugin = \"bamboohr\"\n\n[links.acme]\nhris = \"hr\"\nlms = \"missing\"\n",
    )
    .unwrap();
    let out = switchyard()
        .args(["sync", "--once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:6:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("`missing` is not defined"), "{stderr}");
}

#[test]
fn plugin_check_refuses_a_non_component_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fake.wasm");
    std::fs::write(&file, "not wasm").unwrap();
    let out = switchyard()
        .args(["plugin", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fake.wasm: not a WebAssembly component"),
        "{stderr}"
    );
}

/// The subcommands listed in a help text's `Commands:` section (but `help`).
fn subcommands_in(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command and nested subcommand has `--help` (with the global
/// `--log-format`). The tree is walked from `switchyard --help` down, so a
/// new subcommand is covered without editing this test; the explicit list
/// (the README's "Using it" commands and the rest of today's tree) only
/// checks that the walk reaches them.
#[test]
fn every_subcommand_has_help() {
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut to_visit: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = to_visit.pop() {
        let out = switchyard().args(&path).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && help.contains("Usage:"),
            "{path:?} --help: {help}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(help.contains("--log-format"), "{path:?} --help: {help}");
        for name in subcommands_in(&help) {
            let mut child = path.clone();
            child.push(name);
            to_visit.push(child);
        }
        found.push(path);
    }
    for expected in [
        "",
        "run",
        "sync",
        "trigger",
        "status",
        "reconcile",
        "plugin",
        "plugin check",
        "plugin inspect",
        "plugin list",
        "plugin resume",
        "secret",
        "secret set",
        "secret list",
        "secret rm",
        "dlq",
        "dlq list",
        "dlq show",
        "dlq replay",
        "dlq drop",
        "audit",
        "audit verify",
        "audit head",
        "audit tail",
        "audit search",
        "audit export",
        "audit forget",
        "audit prune",
    ] {
        assert!(
            found.iter().any(|path| path.join(" ") == expected),
            "`switchyard {expected} --help` was not reached; walked {found:?}"
        );
    }
}

const KEY_A: [u8; 32] = [7; 32];
const KEY_B: [u8; 32] = [9; 32];

fn b64(key: [u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A configuration with one connector and its data directory.
fn config_in(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\n[connectors.hr]\nplugin = \"bamboohr\"\nallow = [\"https://acme.example\"]\nauth = { kind = \"bearer\", token = { secret = \"store:hr-token\" } }\n",
    )
    .unwrap();
    config
}

fn secret_cmd(config: &Path, args: &[&str], key: Option<[u8; 32]>, stdin: &str) -> Output {
    let mut cmd = switchyard();
    cmd.arg("secret").args(args).arg("--config").arg(config);
    cmd.env_remove("SWITCHYARD_SECRET_KEY")
        .env_remove("SWITCHYARD_SECRET_KEY_FILE");
    if let Some(key) = key {
        cmd.env("SWITCHYARD_SECRET_KEY", b64(key));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn secret_store_set_list_rm_never_prints_values() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let value = "cli-s3cret-value-123";

    let out = secret_cmd(
        &config,
        &["set", "hr-token"],
        Some(KEY_A),
        &format!("{value}\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(value), "{}", text(&out));
    let store = dir.path().join("data").join("secrets.json");
    let on_disk = std::fs::read_to_string(&store).unwrap();
    assert!(
        !on_disk.contains(value),
        "the value is encrypted: {on_disk}"
    );

    // The value decrypts to what was given, newline trimmed.
    let key = switchyard::secrets::StoreKey::from_base64(&b64(KEY_A)).unwrap();
    let secret = switchyard::secrets::SecretStore::in_dir(&dir.path().join("data"))
        .get("hr-token", &key)
        .unwrap();
    assert_eq!(secret.expose(), value);

    // Listing needs no key and shows names only.
    let out = secret_cmd(&config, &["list"], None, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hr-token\n");

    let out = secret_cmd(&config, &["rm", "hr-token"], None, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = secret_cmd(&config, &["list"], None, "");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let out = secret_cmd(&config, &["rm", "hr-token"], None, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no secret named `hr-token`"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_wrong_or_missing_store_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let out = secret_cmd(&config, &["set", "a"], Some(KEY_A), "first-s3cret");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = secret_cmd(&config, &["set", "b"], Some(KEY_B), "second-s3cret");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("key does not match the store"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("first-s3cret"));

    let out = secret_cmd(&config, &["set", "b"], None, "second-s3cret");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("SWITCHYARD_SECRET_KEY"),
        "{}",
        text(&out)
    );

    let out = secret_cmd(&config, &["set", "b"], Some(KEY_A), "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no secret value on stdin"),
        "{}",
        text(&out)
    );
}

#[test]
fn plugin_resume_lifts_a_quarantine() {
    use switchyard::store::{ConnectorHealth, Quarantine, SledStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    {
        let state = SledStore::open(&dir.path().join("data")).unwrap();
        state
            .put_connector_health(
                &"hr".into(),
                &ConnectorHealth {
                    plugin: "bamboohr".into(),
                    sha256: "ab".repeat(32),
                    faults_in_a_row: 5,
                    quarantine: Some(Quarantine {
                        reason: "trap: boom".into(),
                        faults: 5,
                        at: "2026-01-01T00:00:00Z".parse().unwrap(),
                    }),
                },
            )
            .unwrap();
        state.flush().unwrap();
    }
    let resume = |connector: &str| {
        switchyard()
            .args(["plugin", "resume", connector, "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = resume("hr");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(
            "connector `hr` resumed (quarantined since 2026-01-01T00:00:00Z: trap: boom)"
        ),
        "{}",
        text(&out)
    );
    let out = resume("hr");
    assert!(text(&out).contains("was not quarantined"), "{}", text(&out));
    let out = resume("nope");
    assert_eq!(out.status.code(), Some(2));

    let state = SledStore::open(&dir.path().join("data")).unwrap();
    let health = state.connector_health(&"hr".into()).unwrap().unwrap();
    assert_eq!(health.quarantine, None);
    assert_eq!(health.faults_in_a_row, 0);
}

/// Waits up to `limit` for the command; kills it and fails if it runs on.
fn output_within(mut cmd: Command, limit: std::time::Duration) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("the command ran past {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    waiter.join().unwrap()
}

fn check_damage(damage: fn(&Path)) {
    use switchyard::model::{Employee, EmploymentStatus, PlannedEmployee, Snapshot};
    use switchyard::store::{SledStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        "data_dir = \"data\"\n[connectors.hr]\nplugin = \"bamboohr\"\n[connectors.lms]\nplugin = \"moodle\"\n[links.acme]\nhris = \"hr\"\nlms = \"lms\"\n",
    )
    .unwrap();
    {
        let state = SledStore::open(&dir.path().join("data")).unwrap();
        let planned: Vec<PlannedEmployee> = (0..3000)
            .map(|i| PlannedEmployee {
                snapshot: Some(Snapshot {
                    employee: Employee {
                        id: format!("{i:05}").into(),
                        employee_number: None,
                        email: Some(format!("person{i}@example.com")),
                        given_name: Some("A".repeat(200)),
                        family_name: None,
                        status: EmploymentStatus::Active,
                        raw_status: None,
                        department: None,
                        job_title: None,
                        location: None,
                        manager_id: None,
                        hire_date: None,
                        termination_date: None,
                        updated_at: None,
                        custom: vec![],
                    },
                    rev: 1,
                }),
                operations: vec![],
            })
            .collect();
        state.commit_plan(&"acme".into(), &planned, None).unwrap();
        for _ in 0..2000 {
            state
                .audit()
                .append(
                    switchyard::audit::Event::new(switchyard::audit::Kind::RunStarted).link("acme"),
                )
                .unwrap();
        }
        state.flush().unwrap();
    }
    std::fs::create_dir(dir.path().join("plugins.d")).unwrap();
    damage(&dir.path().join("data").join("db"));

    let mut cmd = switchyard();
    cmd.args(["status", "--config"]).arg(&config);
    let started = std::time::Instant::now();
    let out = output_within(cmd, std::time::Duration::from_secs(20));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let data = dir.path().join("data");
    assert!(
        text(&out).contains(&data.display().to_string()) && text(&out).contains("backup"),
        "{}",
        text(&out)
    );
}

/// Garbage written over sled's log and the log cut in half: sled reads
/// either as a shorter, older log (or panics recovering it). Every command
/// says the directory is damaged and what to do, within seconds, instead
/// of hanging, crashing or carrying on with half the state.
#[test]
fn a_damaged_database_is_an_error_naming_the_directory_not_an_empty_state() {
    check_damage(|db| {
        use std::io::{Seek, SeekFrom, Write};
        let len = std::fs::metadata(db).unwrap().len();
        let mut file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        file.seek(SeekFrom::Start(len * 2 / 3)).unwrap();
        file.write_all(&[0xA5; 4096]).unwrap();
    });
    check_damage(|db| {
        let len = std::fs::metadata(db).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        file.set_len(len / 2).unwrap();
    });
}
