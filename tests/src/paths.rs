//! Where things are: the repository, the test venv's Python, the binaries
//! under test, scratch directories, unique names.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The Python interpreter of the test venv, with real `celery` and `kombu`.
///
/// A missing venv fails the test with instructions; it is never skipped.
pub fn python() -> PathBuf {
    let path = std::env::var_os("CELERITY_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        path.exists(),
        "no Python venv at {} (set CELERITY_TEST_PYTHON, or run scripts/test, which creates .venv with celery)",
        path.display()
    );
    path
}

/// A Python helper script under `tests/python/`.
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests/python").join(name)
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A fresh directory for one test's files.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("celerity-test"));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The `celerity` binary built by this workspace (`CELERITY_BIN` overrides).
pub fn celerity_bin() -> PathBuf {
    let path = std::env::var_os("CELERITY_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"));
        target.join("debug/celerity")
    });
    assert!(path.exists(), "no celerity binary at {} (build the workspace, or set CELERITY_BIN)", path.display());
    path
}

/// The `celerity` binary a benchmark measures: `CELERITY_BIN`, else the
/// release build, else the debug build.
pub fn bench_celerity_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CELERITY_BIN") {
        return p.into();
    }
    let release = workspace_root().join("target/release/celerity");
    if release.exists() { release } else { workspace_root().join("target/debug/celerity") }
}
