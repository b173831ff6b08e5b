//! The Python tools the tests run, from one virtual environment the test
//! kit makes in `target/py-venv` (`python3 -m venv`, then `pip install` of
//! pinned versions): `scim2-server`, a real SCIM 2.0 server, and
//! `componentize-py`, which builds the Python plugin. `.ci/run` makes it
//! before the tests so that the downloads are not in a test's time.
//! Without Python 3 the tests that need it fail, saying what to install;
//! they never skip.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

use crate::plugins::workspace_root;

/// The componentize-py the Python plugin is built with.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The virtual environment.
pub fn venv() -> PathBuf {
    workspace_root().join("target").join("py-venv")
}

/// The executable `name` of the pinned `package` (`scim2-server==0.8.3`),
/// installed into [`venv`] when missing.
pub fn tool(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    static INSTALL: OnceLock<Mutex<()>> = OnceLock::new();
    let _once = INSTALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let venv = venv();
    let executable = venv.join("bin").join(name);
    if executable.exists() {
        return Ok(executable);
    }
    let install = "these tests need Python 3 with venv and pip (Debian: \
                   `apt-get install python3 python3-venv`; .ci/run installs them)";
    if !venv.join("bin").join("pip").exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .with_context(|| format!("python3 is not on PATH: {install}"))?;
        if !made.status.success() {
            bail!(
                "`python3 -m venv {}` failed: {}\n{install}",
                venv.display(),
                String::from_utf8_lossy(&made.stderr)
            );
        }
    }
    let pip = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", package])
        .output()
        .context("running the virtual environment's pip")?;
    if !pip.status.success() || !executable.exists() {
        bail!(
            "`pip install {package}` failed: {}{}",
            String::from_utf8_lossy(&pip.stdout),
            String::from_utf8_lossy(&pip.stderr)
        );
    }
    Ok(executable)
}
