//! The module tree follows the data flow: a module imports only from its own layer or a lower one,
//! and no two modules import each other (directly or round a loop). Reads `src/` as text, so it
//! fails the moment someone adds an upward `use crate::...`. The declared SQL is read the same way
//! for one plan shape measured to exhaust memory at scale (a grouped `COUNT(DISTINCT ...)`) and one
//! measured to be slow (a window partitioned by a key with a million values).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first (the same order as the table in `src/lib.rs`).
const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("progress", 0),
    ("stats", 0),
    ("lake", 1),
    ("layers", 2),
    ("demo", 2),
    ("outputs", 3),
    ("quality", 4),
    ("jobs", 4),
    ("learn", 5),
    ("report", 6),
    ("cli", 7),
];

fn rank(top: &str) -> u32 {
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, r)| *r).unwrap_or_else(|| {
        panic!("src/{top} is not in the layer table of tests/layers.rs: give it a layer (and one in src/lib.rs)")
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines, as path segments: src/jobs/kpi/mod.rs -> [jobs, kpi].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

/// Every `crate::a::b...` path in a file's code (comments skipped; test modules included, since a
/// test that imports upward ties the layers together just the same).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let tail = &rest[i + 7..];
            let path: String =
                tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            let segs: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .take_while(|s| s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
                .collect();
            if !segs.is_empty() {
                out.push(segs);
            }
            rest = &tail[path.len().min(tail.len())..];
        }
    }
    out
}

/// The unit a path is judged at: the top-level module and, inside `jobs`, the job.
fn unit(path: &[String]) -> String {
    match path {
        [top, job, ..] if top == "jobs" => format!("jobs::{job}"),
        [top, ..] => top.clone(),
        [] => String::new(),
    }
}

#[test]
fn no_module_imports_a_higher_layer_and_there_are_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(top) = module.first() else { continue };
        let text = std::fs::read_to_string(file).expect("read");
        for path in crate_paths(&text) {
            let target_top = &path[0];
            if LAYERS.iter().all(|(m, _)| m != target_top) {
                continue; // a re-export at the crate root, e.g. crate::Result
            }
            if rank(target_top) > rank(top) {
                upward.push(format!("{} imports crate::{}", file.display(), path.join("::")));
            }
            let (from, to) = (unit(&module), unit(&path));
            if from != to {
                graph.entry(from).or_default().insert(to);
            }
        }
    }
    assert!(upward.is_empty(), "imports from a lower layer into a higher one:\n{}", upward.join("\n"));

    // Cycles between units (top-level modules, and each job inside jobs/).
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for next in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(cycle) = visit(n, &graph, &mut Vec::new(), &mut done) {
            panic!("modules import each other round a loop: {}", cycle.join(" -> "));
        }
    }
    // The check itself must see the tree: every layer present, and a known edge found.
    assert!(graph.get("jobs::kpi").is_some_and(|t| t.contains("outputs")), "the checker found no imports: {graph:?}");
}

#[test]
fn every_module_starts_with_two_lines_on_its_job() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            text.lines().take_while(|l| l.starts_with("//!")).count() < 2
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(missing.is_empty(), "modules without a two-line //! header:\n{}", missing.join("\n"));
}

#[test]
fn the_checker_catches_an_upward_import() {
    let paths =
        crate_paths("use crate::report::html; // crate::cli in a comment\nlet x = crate::jobs::kpi::fmt_value(1);");
    assert_eq!(
        paths,
        vec![vec!["report".to_string(), "html".into()], vec!["jobs".into(), "kpi".into(), "fmt_value".into()]]
    );
    assert!(rank("report") > rank("jobs"));
    assert_eq!(unit(&paths[1]), "jobs::kpi");
}

/// Lines of a SQL text (or a TOML file holding SQL) whose code, comments aside, lower-cased and
/// without whitespace, contains `needle` (given the same way, e.g. `count(distinct`).
fn code_lines_with(text: &str, needle: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .filter(|(_, l)| {
            let code: String = l.split("--").next().unwrap_or("").to_ascii_lowercase().split_whitespace().collect();
            code.contains(needle)
        })
        .map(|(i, _)| i + 1)
        .collect()
}

fn declared_sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            declared_sql_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "sql" || e == "toml") {
            out.push(path);
        }
    }
}

/// Every `file:line` of the declared SQL (sql/, data/, jobs/) whose code contains `needle`.
fn declared_sql_lines_with(needle: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["sql", "data", "jobs"] {
        declared_sql_files(&root.join(dir), &mut files);
    }
    assert!(
        files.iter().any(|f| f.ends_with("sql/risk/deal_context.sql"))
            && files.iter().any(|f| f.ends_with("sql/marts/stage_exit.sql")),
        "the walk found the SQL files"
    );
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            code_lines_with(&text, needle).into_iter().map(move |l| format!("{}:{l}", f.display()))
        })
        .collect()
}

/// DataFusion 55's window operator is slow with many partitions: a LAG partitioned by deal over a
/// million deals' history rows took 4.3 s in the operator, the same LAG as one window in deal
/// order, the deal compared with the row before, 1.1 s ("One ordered pass" in the README). No
/// shipped SQL may partition a window.
#[test]
fn declared_sql_reads_rows_before_in_one_ordered_pass() {
    let found = declared_sql_lines_with("partitionby");
    assert!(
        found.is_empty(),
        "a window PARTITION BY in declared SQL (write it as one window in key order, see \"One ordered pass\" in the README):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_partitioned_window_check_reads_code_not_comments() {
    let text = "-- PARTITION BY in a comment\nSELECT LAG(x) OVER (PARTITION  BY d ORDER BY t) FROM h\n# partition by in toml\nSELECT 1\n";
    assert_eq!(code_lines_with(text, "partitionby"), vec![2]);
}

/// DataFusion 55 runs a grouped COUNT(DISTINCT) with a hash set per group: the stakeholder count
/// of mart.deal_context took over 24 GB on a million deals (and was killed) where grouping by deal
/// and contact first, then by deal, took 1.1 GB and 2.5 s. No shipped SQL may bring it back.
#[test]
fn declared_sql_counts_distinct_values_by_grouping() {
    let found = declared_sql_lines_with("count(distinct");
    assert!(
        found.is_empty(),
        "COUNT(DISTINCT ...) in declared SQL (group by the counted column first, then COUNT it):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_count_distinct_check_reads_code_not_comments() {
    let text = "-- not COUNT(DISTINCT x) here\nSELECT a, count( DISTINCT b) FROM t GROUP BY a\n# COUNT(DISTINCT in toml\nSELECT 1 -- COUNT(DISTINCT\n";
    assert_eq!(code_lines_with(text, "count(distinct"), vec![2]);
}
