//! `switchyard plugin new`: a plugin crate that builds out of any tree with
//! one command. The SDK and the contract of this binary are copied into
//! its `vendor/` (embedded here at build time), with the dependency
//! versions pinned by this repository's `Cargo.lock`, so the crate needs
//! nothing but the Rust toolchain and crates.io (or a warm cargo cache).

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

fn valid(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// Write a new plugin crate `name` of `kind` into `parent/name`; returns
/// the crate's directory.
pub fn new_plugin(parent: &Path, name: &str, kind: Kind) -> Result<PathBuf, ScaffoldError> {
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
    };
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
        let dir = new_plugin(parent.path(), "acme-lms", Kind::Lms).unwrap();
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

        assert!(matches!(
            new_plugin(parent.path(), "acme-lms", Kind::Lms),
            Err(ScaffoldError::Exists(_))
        ));
        for bad in ["Acme", "1acme", "acme_lms", "acme-", "", "../x"] {
            assert!(
                matches!(
                    new_plugin(parent.path(), bad, Kind::Hris),
                    Err(ScaffoldError::BadName(_))
                ),
                "{bad}"
            );
        }
    }
}
