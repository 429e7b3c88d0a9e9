//! Helpers for the integration tests: run the real CLI binary, write fixture files by hand.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gtm-loop")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(lake: &Path, args: &[&str]) -> Run {
    run_env(lake, args, &[])
}

pub fn run_env(lake: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(bin());
    cmd.arg("--lake")
        .arg(lake)
        .args(args)
        .env_remove("GTM_LOOP_LAKE")
        .env_remove("GTM_LOOP_ENGINE")
        .env_remove("GTM_LOOP_FAIL_AFTER_WRITE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let Output { status, stdout, stderr } = cmd.output().expect("run gtm-loop");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs the binary in `cwd` without --lake: the lake is the default demo path under `cwd`.
pub fn run_in(cwd: &Path, args: &[&str]) -> Run {
    let Output { status, stdout, stderr } = Command::new(bin())
        .current_dir(cwd)
        .args(args)
        .env_remove("GTM_LOOP_LAKE")
        .env_remove("GTM_LOOP_ENGINE")
        .env_remove("GTM_LOOP_FAIL_AFTER_WRITE")
        .output()
        .expect("run gtm-loop");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs a query and returns the rows as JSON objects (fails the test on error).
pub fn query(lake: &Path, sql: &str, as_of: Option<&str>) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut args = vec!["query", sql, "--format", "json"];
    if let Some(d) = as_of {
        args.extend(["--as-of", d]);
    }
    let r = run(lake, &args);
    assert_eq!(r.code, 0, "query failed: {sql}\n{}", r.stderr);
    r.stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line").as_object().expect("object").clone())
        .collect()
}

pub fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write fixture");
    path
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The real datasets beside the repository. Outside CI, GTM_LOOP_SKIP_SHARED_DATA lets a machine
/// without them skip these tests (loudly); under CI=true a missing folder always fails the test.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(name);
    if dir.is_dir() {
        return Some(dir);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !in_ci && std::env::var("GTM_LOOP_SKIP_SHARED_DATA").is_ok() {
        eprintln!("SKIPPED: {} not found and GTM_LOOP_SKIP_SHARED_DATA is set", dir.display());
        return None;
    }
    panic!("{} not found: these tests check figures of the real datasets", dir.display());
}

pub fn s<'a>(row: &'a serde_json::Map<String, serde_json::Value>, key: &str) -> &'a str {
    row.get(key).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("{key} not a string in {row:?}"))
}

pub fn f(row: &serde_json::Map<String, serde_json::Value>, key: &str) -> f64 {
    row.get(key).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("{key} not a number in {row:?}"))
}
