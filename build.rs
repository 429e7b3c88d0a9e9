//! Stamps the binary with its code version (`GTM_LOOP_CODE_VERSION`): the package version and,
//! in a git checkout, `git describe --always --dirty`. Runs, manifests and decision-log records
//! carry it, so a model or a score can be traced to the code that produced it.

use std::process::Command;

fn main() {
    for path in [".git/HEAD", ".git/index", "src", "sql", "data", "jobs"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let pkg = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let git = Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let version = match git {
        Some(g) => format!("{pkg}+{g}"),
        // A source tarball without .git: the package version alone, said to be so.
        None => format!("{pkg}+nogit"),
    };
    println!("cargo:rustc-env=GTM_LOOP_CODE_VERSION={version}");
}
