//! Lakes on S3 for real: the same cadence runs against `s3://` through object_store, on a real
//! S3-compatible server (moto in server mode) that this test starts on loopback and stops, and
//! the server going down mid-run: a clear storage error (exit code 5), nothing published, and the
//! next run succeeding once the server is back. Credentials are never printed.
//!
//! Needs the `cloud` feature and a Python with moto (`GTM_LOOP_MOTO_PYTHON`; `.ci/run` installs it
//! in its virtualenv). Under CI=true a missing one fails the test; elsewhere it skips, loudly.

mod common;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::*;

const SECRET: &str = "s3cr3t-never-printed-7f3a";

fn moto_python() -> Option<String> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !cfg!(feature = "cloud") {
        assert!(
            !in_ci,
            "CI=true but the tests were built without the `cloud` feature: run cargo test --features cloud"
        );
        eprintln!("SKIPPED: the S3 tests need `cargo test --features cloud`");
        return None;
    }
    match std::env::var("GTM_LOOP_MOTO_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if in_ci => panic!("CI=true but GTM_LOOP_MOTO_PYTHON (a Python with moto[server]) is not set"),
        Err(_) => {
            eprintln!("SKIPPED: set GTM_LOOP_MOTO_PYTHON to a Python with moto[server] to run the S3 tests");
            None
        }
    }
}

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(python: &str, bucket: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/moto_server.py");
        let mut child = Command::new(python)
            .args([script, &port.to_string(), bucket])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the moto server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "moto server did not start");
        Server { child, port }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// Waits until the port accepts (up) or refuses (down) connections.
    fn wait(&self, up: bool) {
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() == up {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("the server did not go {}", if up { "up" } else { "down" });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(port: u16) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT".into(), format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        // A dead server should fail the run in seconds.
        ("GTM_LOOP_STORE_RETRIES".into(), "2".into()),
        ("GTM_LOOP_STORE_RETRY_SECS".into(), "5".into()),
    ]
}

fn gtm(lake: &str, args: &[&str], env: &[(String, String)]) -> Run {
    let out = Command::new(bin())
        .arg("--lake")
        .arg(lake)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("GTM_LOOP_LAKE")
        .output()
        .expect("run gtm-loop");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!r.stdout.contains(SECRET) && !r.stderr.contains(SECRET), "a credential was printed: {}", r.stderr);
    r
}

fn rows(lake: &str, sql: &str, env: &[(String, String)]) -> Vec<String> {
    let r = gtm(lake, &["query", sql, "--format", "csv"], env);
    assert_eq!(r.code, 0, "{sql}: {}", r.stderr);
    r.stdout.lines().skip(1).map(str::to_string).collect()
}

#[test]
fn cadence_runs_on_s3_publish_whole_and_survive_the_server_dying_mid_run() {
    let Some(python) = moto_python() else { return };
    let server = Server::start(&python, "gtm");
    let env = env(server.port);
    let lake = "s3://gtm/lakes/demo";
    let g = gtm(lake, &["generate", "--opportunities", "400", "--end", "2026-07-31", "--days", "400"], &env);
    assert_eq!(g.code, 0, "{}", g.stderr);

    let first = gtm(lake, &["run", "weekly", "--as-of", "2026-07-19"], &env);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let published = "SELECT as_of_date, COUNT(*) AS n FROM output.deal_risk GROUP BY 1 ORDER BY 1";
    let before = rows(lake, published, &env);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].starts_with("2026-07-19,"), "{before:?}");

    // The next week, with the server going down once its first step has committed.
    let mut child = Command::new(bin())
        .args(["--lake", lake, "run", "weekly", "--as-of", "2026-07-26"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = String::new();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        stderr.push_str(&line);
        if line.contains("step 1/4 data_quality ok") {
            server.signal("-USR1");
            server.wait(false);
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "a storage failure exits with 5:\n{stderr}");
    assert!(stderr.contains("storage failure"), "{stderr}");
    assert!(
        stderr.contains("nothing of this run is published") || stderr.contains("Nothing of this run was published"),
        "{stderr}"
    );
    assert!(!stderr.contains(SECRET), "a credential was printed");

    // Back up: the failed week is not visible, the last good outputs are.
    server.signal("-USR2");
    server.wait(true);
    assert_eq!(rows(lake, published, &env), before, "nothing of the failed run is visible");
    let list = gtm(lake, &["runs", "list"], &env);
    let line = list.stdout.lines().find(|l| l.contains(" 2026-W30 ")).expect("the failed week is listed");
    assert!(!line.ends_with("committed") && (line.contains("killed") || line.contains("failed")), "{}", list.stdout);

    // The next run takes over the dead run's lock (said on stderr) and succeeds.
    let again = gtm(lake, &["run", "weekly", "--as-of", "2026-07-26"], &env);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains("taking over the lake's lock from a run that is no longer alive"),
        "{}",
        again.stderr
    );
    let after = rows(lake, published, &env);
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0], before[0], "the earlier week is unchanged");

    // gc deletes what the dead run left; the published outputs stay.
    let gc = gtm(lake, &["gc", "--min-age-secs", "0"], &env);
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(gc.stdout.contains("job manifest(s) of runs that never committed"), "{}", gc.stdout);
    assert_eq!(rows(lake, published, &env), after);

    // Wrong credentials: a clear error, never the secret.
    let mut bad = env.clone();
    bad.retain(|(k, _)| k != "AWS_ENDPOINT");
    bad.push(("AWS_ENDPOINT".into(), "http://127.0.0.1:9".into()));
    let refused = gtm(lake, &["runs", "list"], &bad);
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(refused.stderr.contains("storage failure"), "{}", refused.stderr);
}
