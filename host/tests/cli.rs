//! The `switchyard` binary: exit codes and messages scripts rely on.

use std::process::Command;

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
    let out = switchyard().args(["plugin", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fake.wasm: not a WebAssembly component"), "{stderr}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["sync", "--help"],
        vec!["status", "--help"],
        vec!["plugin", "check", "--help"],
        vec!["plugin", "list", "--help"],
        vec!["dlq", "list", "--help"],
        vec!["dlq", "show", "--help"],
        vec!["dlq", "replay", "--help"],
        vec!["dlq", "drop", "--help"],
        vec!["reconcile", "--help"],
    ] {
        let out = switchyard().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"), "{args:?}");
    }
}
