//! A Python with python-redis-lock, redlock-py and redis-py, for the interop tests and the
//! benchmark's peers: `REDIS_MUTEX_PYTHON` if set, else a virtualenv under `target/` that
//! is made on first use from `tests/requirements.txt`, the one list of pins.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::server::cache_dir;

/// The environment variable naming a Python that has the packages already.
pub const PYTHON_ENV: &str = "REDIS_MUTEX_PYTHON";

const REQUIREMENTS: &str = include_str!("../requirements.txt");

/// The modules the interop tests import.
const MODULES: &str = "import redis, redis_lock, redlock";

/// A Python that can import the packages, or why there is none.
pub fn try_python() -> Result<&'static Path, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(find_or_make)
        .as_ref()
        .map(PathBuf::as_path)
        .map_err(Clone::clone)
}

/// A Python that can import the packages; panics with how to get one.
pub fn python() -> &'static Path {
    match try_python() {
        Ok(python) => python,
        Err(why) => panic!("{why}"),
    }
}

fn can_import(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", MODULES])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn find_or_make() -> Result<PathBuf, String> {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        let python = PathBuf::from(python);
        return if can_import(&python) {
            Ok(python)
        } else {
            Err(format!(
                "{PYTHON_ENV}={} cannot `{MODULES}`; install tests/requirements.txt into it",
                python.display()
            ))
        };
    }
    let venv = cache_dir().join("venv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("requirements.txt");
    let current = std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS);
    if current && can_import(&python) {
        return Ok(python);
    }
    let how_to_fix = "install Python 3 with the venv module (Debian: `apt-get install \
                      python3-venv`), or set REDIS_MUTEX_PYTHON to a python that has the \
                      packages of tests/requirements.txt";
    eprintln!(
        "making a Python virtualenv with tests/requirements.txt in {} (once)",
        venv.display()
    );
    let staging = cache_dir().join(format!("venv-{}", std::process::id()));
    std::fs::remove_dir_all(&staging).ok();
    std::fs::create_dir_all(cache_dir())
        .map_err(|e| format!("create {}: {e}", cache_dir().display()))?;
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&staging)
        .output();
    if !matches!(&made, Ok(o) if o.status.success()) {
        return Err(format!("`python3 -m venv` failed ({made:?}); {how_to_fix}"));
    }
    let requirements = staging.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).map_err(|e| e.to_string())?;
    let installed = Command::new(staging.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .output();
    if !matches!(&installed, Ok(o) if o.status.success()) {
        let detail = installed
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_else(|e| e.to_string());
        return Err(format!(
            "installing tests/requirements.txt into a virtualenv failed: {detail}; {how_to_fix}"
        ));
    }
    // Made beside its final place and renamed into it, so that a half-made one is never
    // found. Only its scripts' `#!` lines keep the path it was made at; its `bin/python`,
    // the one thing run here, finds its packages relative to itself. Another process may
    // have won the race: either copy will do.
    std::fs::remove_dir_all(&venv).ok();
    if std::fs::rename(&staging, &venv).is_err() {
        std::fs::remove_dir_all(&staging).ok();
    }
    if can_import(&python) {
        return Ok(python);
    }
    Err(format!(
        "the virtualenv in {} cannot `{MODULES}`; {how_to_fix}",
        venv.display()
    ))
}
