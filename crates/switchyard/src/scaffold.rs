//! `switchyard plugin new`: a plugin crate that builds out of any tree with
//! one command. The SDK and the contract of this binary are copied into
//! its `vendor/` (embedded here at build time), with the dependency
//! versions pinned by this repository's `Cargo.lock`, so the crate needs
//! nothing but the Rust toolchain and crates.io (or a warm cargo cache).
//! With `--lang python`, a Python project for componentize-py instead: the
//! contract in `wit/`, `app.py`, a mock host and unit tests in plain
//! Python.

use std::path::{Path, PathBuf};

/// Which side of a link the new plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// An HR system of record.
    Hris,
    /// A learning system.
    Lms,
}

impl Kind {
    fn feature(self) -> &'static str {
        match self {
            Kind::Hris => "hris",
            Kind::Lms => "lms",
        }
    }

    fn world(self) -> &'static str {
        match self {
            Kind::Hris => "hris-connector",
            Kind::Lms => "lms-connector",
        }
    }
}

/// The language of the new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Lang {
    /// A Rust crate on the SDK (`cargo build --target wasm32-wasip2`).
    #[default]
    Rust,
    /// A Python project built with componentize-py.
    Python,
}

/// What `new` refuses.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// A name cargo would refuse, or that would make an odd file name.
    #[error(
        "`{0}` is not a plugin name: use lower-case letters, digits and `-`, starting with a letter (at most 64)"
    )]
    BadName(String),
    /// The target exists.
    #[error("{0} exists; choose another name or directory")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The SDK's files as this binary was built with them.
const SDK: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../sdk/Cargo.toml")),
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/http.rs", include_str!("../../../sdk/src/http.rs")),
    ("src/host.rs", include_str!("../../../sdk/src/host.rs")),
    ("src/mock.rs", include_str!("../../../sdk/src/mock.rs")),
    ("src/time.rs", include_str!("../../../sdk/src/time.rs")),
];
const WIT: &str = include_str!("../../../wit/connector.wit");
const LOCK: &str = include_str!("../../../Cargo.lock");

const CARGO_TOML: &str = include_str!("../templates/rust/Cargo.toml.tmpl");
const TOOLCHAIN: &str = include_str!("../templates/rust/rust-toolchain.toml.tmpl");
const GITIGNORE: &str = include_str!("../templates/rust/gitignore.tmpl");
const README: &str = include_str!("../templates/rust/README.md.tmpl");
const LIB_HRIS: &str = include_str!("../templates/rust/lib_hris.rs.tmpl");
const LIB_LMS: &str = include_str!("../templates/rust/lib_lms.rs.tmpl");

const PY_README: &str = include_str!("../templates/python/README.md.tmpl");
const PY_GITIGNORE: &str = include_str!("../templates/python/gitignore.tmpl");
const PY_MOCK_HOST: &str = include_str!("../templates/python/mock_host.py");
const PY_APP_HRIS: &str = include_str!("../templates/python/app_hris.py");
const PY_TEST_HRIS: &str = include_str!("../templates/python/test_hris.py");
/// The Python LMS template is the SCIM example CI builds and tests.
const PY_APP_LMS: &str = include_str!("../../../examples/python-scim/app.py");
const PY_TEST_LMS: &str = include_str!("../templates/python/test_lms.py");

fn valid(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// Write a new plugin `name` of `kind` in `lang` into `parent/name`;
/// returns its directory.
pub fn new_plugin(
    parent: &Path,
    name: &str,
    kind: Kind,
    lang: Lang,
) -> Result<PathBuf, ScaffoldError> {
    if !valid(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{kind}}", kind.feature())
            .replace("{{world}}", kind.world())
    };
    let files: Vec<(PathBuf, String)> = match lang {
        Lang::Rust => {
            let lib = match kind {
                Kind::Hris => LIB_HRIS,
                Kind::Lms => LIB_LMS,
            };
            let mut files: Vec<(PathBuf, String)> = vec![
                ("Cargo.toml".into(), fill(CARGO_TOML)),
                ("Cargo.lock".into(), LOCK.to_owned()),
                ("rust-toolchain.toml".into(), TOOLCHAIN.to_owned()),
                (".gitignore".into(), GITIGNORE.to_owned()),
                ("README.md".into(), fill(README)),
                ("src/lib.rs".into(), fill(lib)),
                ("vendor/wit/connector.wit".into(), WIT.to_owned()),
            ];
            for (path, text) in SDK {
                files.push((
                    Path::new("vendor/switchyard-sdk").join(path),
                    (*text).to_owned(),
                ));
            }
            files
        }
        Lang::Python => {
            let (app, test, test_name) = match kind {
                Kind::Hris => (PY_APP_HRIS, PY_TEST_HRIS, "test_hris.py"),
                Kind::Lms => (PY_APP_LMS, PY_TEST_LMS, "test_lms.py"),
            };
            vec![
                ("README.md".into(), fill(PY_README)),
                (".gitignore".into(), PY_GITIGNORE.to_owned()),
                ("app.py".into(), fill(app)),
                ("mock_host.py".into(), PY_MOCK_HOST.to_owned()),
                (test_name.into(), test.to_owned()),
                ("wit/connector.wit".into(), WIT.to_owned()),
            ]
        }
    };
    for (path, text) in files {
        let path = dir.join(path);
        let io = |source| ScaffoldError::Io {
            path: path.clone(),
            source,
        };
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(io)?;
        }
        std::fs::write(&path, text).map_err(io)?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_crate_with_the_sdk_and_the_contract_and_refuses_bad_names() {
        let parent = tempfile::tempdir().unwrap();
        let dir = new_plugin(parent.path(), "acme-lms", Kind::Lms, Lang::Rust).unwrap();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"acme-lms\""));
        assert!(manifest.contains("features = [\"lms\"]"));
        assert!(manifest.contains("[workspace]"));
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains("target/wasm32-wasip2/release/acme_lms.wasm"));
        assert!(dir.join("vendor/switchyard-sdk/src/mock.rs").is_file());
        let wit = std::fs::read_to_string(dir.join("vendor/wit/connector.wit")).unwrap();
        assert!(wit.contains("package switchyard:connector@"));
        // The SDK's manifest inherits nothing from a workspace, so that the
        // copy builds on its own.
        let sdk = std::fs::read_to_string(dir.join("vendor/switchyard-sdk/Cargo.toml")).unwrap();
        assert!(!sdk.contains(".workspace"), "{sdk}");

        let py = new_plugin(parent.path(), "acme-hr", Kind::Hris, Lang::Python).unwrap();
        let readme = std::fs::read_to_string(py.join("README.md")).unwrap();
        assert!(readme.contains("-w hris-connector componentize app -o acme_hr.wasm"));
        assert!(py.join("wit/connector.wit").is_file());
        assert!(py.join("test_hris.py").is_file() && py.join("mock_host.py").is_file());
        let app = std::fs::read_to_string(py.join("app.py")).unwrap();
        assert!(app.starts_with("\"\"\"acme-hr: "), "{app}");

        assert!(matches!(
            new_plugin(parent.path(), "acme-lms", Kind::Lms, Lang::Rust),
            Err(ScaffoldError::Exists(_))
        ));
        for bad in ["Acme", "1acme", "acme_lms", "acme-", "", "../x"] {
            assert!(
                matches!(
                    new_plugin(parent.path(), bad, Kind::Hris, Lang::Python),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad}"
            );
        }
    }
}
