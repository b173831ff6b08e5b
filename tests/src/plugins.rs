//! Builds the connector plugins in `plugins/` for `wasm32-wasip2`.
//!
//! Each plugin is built by its own cargo invocation: the SDK's role features
//! (`hris`, `lms`) must not be unified across plugins, or each component
//! would carry both worlds. Builds go to `target/plugins` (a separate target
//! directory, so a build started from inside `cargo test` never waits on the
//! outer cargo's lock) and are cached by cargo; a second call in the same
//! process returns at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Build the plugin crate `name` (a package under `plugins/` or
/// `tests/plugins/`) and return the path of its `.wasm` component.
pub fn build(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return Ok(path.clone());
    }
    let root = workspace_root();
    ensure_wasm_target(&root)?;
    let target_dir = root.join("target").join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--quiet",
            "--profile",
            "plugin",
            "--target",
            "wasm32-wasip2",
            "-p",
            name,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host build must not leak into the wasm build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .with_context(|| format!("failed to run cargo to build plugin `{name}`"))?;
    if !output.status.success() {
        bail!(
            "building plugin `{name}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let wasm = target_dir
        .join("wasm32-wasip2")
        .join("plugin")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if !wasm.is_file() {
        bail!("plugin `{name}` built, but {} is missing", wasm.display());
    }
    built.insert(name.to_owned(), wasm.clone());
    Ok(wasm)
}

/// Make sure the pinned toolchain has the `wasm32-wasip2` standard library.
///
/// `rust-toolchain.toml` lists the target, but rustup only installs listed
/// targets when it installs the toolchain itself; on a machine that already
/// had the toolchain, the first plugin build would fail with "can't find
/// crate for `std`". So the builder asks rustup (idempotent, quick when the
/// target is present) and says plainly what to do if that is not possible.
pub fn ensure_wasm_target(root: &Path) -> anyhow::Result<()> {
    static CHECKED: OnceLock<()> = OnceLock::new();
    if CHECKED.get().is_some() {
        return Ok(());
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .current_dir(root)
        .args(["--print", "sysroot"])
        .output()
        .with_context(|| format!("failed to run `{rustc} --print sysroot`"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if !sysroot.join("lib/rustlib/wasm32-wasip2").is_dir() {
        let status = Command::new("rustup")
            .current_dir(root)
            .args(["target", "add", "wasm32-wasip2"])
            .status();
        // Two suites started at once both run rustup; the one that loses
        // the race fails though the target is then there.
        let installed = sysroot.join("lib/rustlib/wasm32-wasip2").is_dir();
        match status {
            Ok(s) if s.success() => {}
            _ if installed => {}
            _ => bail!(
                "the Rust standard library for wasm32-wasip2 is missing and `rustup target add wasm32-wasip2` did not install it; run it yourself (in {})",
                root.display()
            ),
        }
    }
    let _ = CHECKED.set(());
    Ok(())
}

/// Build `name` and copy it into `dir` as `{as_name}.wasm`.
pub fn install(name: &str, dir: &Path, as_name: &str) -> anyhow::Result<PathBuf> {
    let wasm = build(name)?;
    std::fs::create_dir_all(dir)?;
    let target = dir.join(format!("{as_name}.wasm"));
    std::fs::copy(&wasm, &target)
        .with_context(|| format!("failed to copy {} to {}", wasm.display(), target.display()))?;
    Ok(target)
}

/// Build the Python plugin in `examples/{name}` (its `app.py`) for
/// `world` with componentize-py, once per process, and return the path of
/// its `.wasm` component (`target/plugins/{name}.wasm`).
pub fn build_python(name: &str, world: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return Ok(path.clone());
    }
    let root = workspace_root();
    let componentize = crate::python::tool(crate::python::COMPONENTIZE_PY, "componentize-py")?;
    let out_dir = root.join("target").join("plugins");
    std::fs::create_dir_all(&out_dir)?;
    let wasm = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
    let output = Command::new(&componentize)
        .current_dir(root.join("examples").join(name))
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", world, "componentize", "app", "-o"])
        .arg(&wasm)
        .output()
        .with_context(|| format!("failed to run {}", componentize.display()))?;
    if !output.status.success() {
        bail!(
            "componentize-py failed to build examples/{name}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    built.insert(name.to_owned(), wasm.clone());
    Ok(wasm)
}

/// Run the native unit tests of the plugin crate `name` (against the SDK's
/// mock host) with their own cargo invocation and target directory
/// (`target/plugin-tests`), and return cargo's standard output. Fails with
/// cargo's output when a test fails or the build does.
pub fn test_natively(name: &str) -> anyhow::Result<String> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&root)
        .args(["test", "--quiet", "-p", name, "--target-dir"])
        .arg(root.join("target").join("plugin-tests"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .with_context(|| format!("failed to run cargo to test plugin `{name}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "the unit tests of plugin `{name}` failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}
