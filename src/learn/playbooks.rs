//! Versioned playbooks: every approved version is a TOML file in the lake named by its content
//! hash (`playbooks/<hash>.toml`), a change is a list of key-level edits, and `diff` of a parent
//! and the child an approval wrote is exactly the approved proposal's edits (checked at write time).
//!
//! Keys: `scoring.<key>`, `flag.<id>.<key>`, `action.<id>.<key>` (arrays of tables are keyed by
//! their `id`, so a diff does not depend on the order of blocks). Values are TOML literals.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::jobs::risk::{self, Playbook};
use crate::lake::Lake;
use crate::outputs::decision_log::record_id;

pub const DIR: &str = "playbooks";

pub use crate::outputs::audit_log::Change;

impl Change {
    pub fn inverse(&self) -> Change {
        Change { path: self.path.clone(), before: self.after.clone(), after: self.before.clone() }
    }

    pub fn line(&self) -> String {
        match (&self.before, &self.after) {
            (Some(b), Some(a)) => format!("~ {}: {b} -> {a}", self.path),
            (None, Some(a)) => format!("+ {} = {a}", self.path),
            (Some(b), None) => format!("- {} (was {b})", self.path),
            (None, None) => format!("  {} (no change)", self.path),
        }
    }
}

/// A TOML value as a literal, the way the playbook files write them.
pub fn literal(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => {
            let t = f.to_string();
            if t.contains('.') || t.contains('e') || t.contains("inf") || t.contains("NaN") {
                t
            } else {
                format!("{t}.0")
            }
        }
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", ")),
        toml::Value::Table(t) => {
            format!("{{ {} }}", t.iter().map(|(k, v)| format!("{k} = {}", literal(v))).collect::<Vec<_>>().join(", "))
        }
    }
}

/// Every key of a playbook as `path -> literal`, without the `version` label and `description`
/// (metadata a diff reports in its header, not as a change).
pub fn flatten(text: &str) -> Result<BTreeMap<String, String>> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| Error::Config { file: "playbook".into(), message: e.to_string() })?;
    let mut out = BTreeMap::new();
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("version" | "description", _) => {}
            (_, toml::Value::Table(t)) => {
                for (k, v) in t {
                    out.insert(format!("{key}.{k}"), literal(v));
                }
            }
            (_, toml::Value::Array(items)) if items.iter().all(|i| i.is_table()) => {
                for item in items {
                    let t = item.as_table().expect("checked");
                    let id = t.get("id").and_then(|v| v.as_str()).unwrap_or("?");
                    for (k, v) in t.iter().filter(|(k, _)| *k != "id") {
                        out.insert(format!("{key}.{id}.{k}"), literal(v));
                    }
                }
            }
            _ => {
                out.insert(key.clone(), literal(value));
            }
        }
    }
    Ok(out)
}

/// The edits that turn `a` into `b`, in key order.
pub fn diff(a: &str, b: &str) -> Result<Vec<Change>> {
    let (fa, fb) = (flatten(a)?, flatten(b)?);
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| Change { path: k.clone(), before: fa.get(k).cloned(), after: fb.get(k).cloned() })
        .collect())
}

/// The text's top-level `version` label.
pub fn label(text: &str) -> String {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("version").and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The next label after `v<N>`: `v<N+1>` (a label is for people; the hash is the version).
pub fn next_label(parent: &str) -> String {
    parent
        .strip_prefix('v')
        .and_then(|n| n.parse::<u64>().ok())
        .map(|n| format!("v{}", n + 1))
        .unwrap_or_else(|| format!("{parent}+1"))
}

/// Line ranges of the blocks under `[[<array>]]` headers, with their `id`.
fn blocks(lines: &[String], array: &str) -> Vec<(String, usize, usize)> {
    let header = format!("[[{array}]]");
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == header {
            let mut end = i + 1;
            while end < lines.len() && !lines[end].trim_start().starts_with('[') {
                end += 1;
            }
            // Comment lines just above the next header belong to it.
            while end > i + 1 && lines[end - 1].trim_start().starts_with('#') {
                end -= 1;
            }
            let id = lines[i + 1..end]
                .iter()
                .find_map(|l| {
                    let (k, v) = l.split_once('=')?;
                    (k.trim() == "id").then(|| v.trim().trim_matches('"').to_string())
                })
                .unwrap_or_default();
            out.push((id, i, end));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn key_line(lines: &[String], from: usize, to: usize, key: &str) -> Option<usize> {
    (from..to).find(|&j| {
        lines[j].split_once('=').is_some_and(|(k, _)| k.trim() == key) && !lines[j].trim_start().starts_with('#')
    })
}

/// Applies the edits to a playbook's text, keeping its comments and layout, relabels it and puts
/// `header` (comment lines) on top. The result must parse as a playbook and differ from the parent
/// by exactly `changes`, or nothing is returned.
pub fn apply(text: &str, changes: &[Change], new_label: &str, header: &str) -> Result<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let bad = |c: &Change, why: &str| Error::Config {
        file: "playbook".into(),
        message: format!("cannot apply {}: {why}", c.line()),
    };
    // Whole blocks to add, by array and id, in the order their keys come.
    let mut new_blocks: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for c in changes {
        let parts: Vec<&str> = c.path.splitn(3, '.').collect();
        match parts[..] {
            ["scoring", key] => {
                let start =
                    lines.iter().position(|l| l.trim() == "[scoring]").ok_or_else(|| bad(c, "no [scoring] table"))?;
                let end =
                    (start + 1..lines.len()).find(|&j| lines[j].trim_start().starts_with('[')).unwrap_or(lines.len());
                match (key_line(&lines, start + 1, end, key), &c.after) {
                    (Some(j), Some(a)) => lines[j] = format!("{key} = {a}"),
                    (Some(j), None) => {
                        lines.remove(j);
                    }
                    (None, Some(a)) => lines.insert(start + 1, format!("{key} = {a}")),
                    (None, None) => {}
                }
            }
            [array @ ("flag" | "action"), id, key] => {
                let found = blocks(&lines, array).into_iter().find(|b| b.0 == id);
                match (found, &c.after) {
                    (Some((_, from, to)), after) => match (key_line(&lines, from + 1, to, key), after) {
                        (Some(j), Some(a)) => lines[j] = format!("{key} = {a}"),
                        (Some(j), None) => {
                            lines.remove(j);
                            // A block left with only its id goes too.
                            let (_, from, to) =
                                blocks(&lines, array).into_iter().find(|b| b.0 == id).expect("still there");
                            if (from + 1..to).all(|j| {
                                let t = lines[j].trim();
                                t.is_empty()
                                    || t.starts_with('#')
                                    || t.split_once('=').is_some_and(|(k, _)| k.trim() == "id")
                            }) {
                                lines.drain(from..to);
                            }
                        }
                        (None, Some(a)) => lines.insert(from + 2, format!("{key} = {a}")),
                        (None, None) => {}
                    },
                    (None, Some(a)) => new_blocks
                        .entry((array.to_string(), id.to_string()))
                        .or_default()
                        .push((key.to_string(), a.clone())),
                    (None, None) => return Err(bad(c, "no such block")),
                }
            }
            _ => return Err(bad(c, "only scoring.<key>, flag.<id>.<key> and action.<id>.<key> can be changed")),
        }
    }
    for ((array, id), keys) in new_blocks {
        lines.push(String::new());
        lines.push(format!("[[{array}]]"));
        lines.push(format!("id = {}", serde_json::to_string(&id).unwrap_or_default()));
        lines.extend(keys.into_iter().map(|(k, v)| format!("{k} = {v}")));
    }
    if let Some(j) = lines.iter().position(|l| l.split_once('=').is_some_and(|(k, _)| k.trim() == "version")) {
        lines[j] = format!("version = {}", serde_json::to_string(new_label).unwrap_or_default());
    }
    let mut out: String = header.lines().map(|l| format!("# {l}\n")).collect();
    out.push_str(&lines.join("\n"));
    out.push('\n');
    risk::load_text("the proposed playbook", &out)?;
    let got = diff(text, &out)?;
    let mut want = changes.to_vec();
    want.sort_by(|a, b| a.path.cmp(&b.path));
    if got != want {
        return Err(Error::Other(format!(
            "the edited playbook differs from its parent by {} instead of the proposal's {}; nothing written",
            got.iter().map(Change::line).collect::<Vec<_>>().join("; "),
            want.iter().map(Change::line).collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(out)
}

/// The content hash of a playbook's text: its version.
pub fn hash(text: &str) -> String {
    record_id(&[text])
}

/// Writes a playbook file under its hash (idempotent: the same text is the same file).
pub async fn store(lake: &Lake, text: &str) -> Result<String> {
    let h = hash(text);
    let path = format!("{DIR}/{h}.toml");
    if !lake.exists(&path).await? {
        lake.put(&path, text.as_bytes().to_vec()).await?;
    }
    Ok(h)
}

/// A stored playbook's text by its hash (the built-in seed's hash needs no file).
pub async fn text_of(lake: &Lake, version_hash: &str) -> Result<String> {
    let builtin = risk::builtin_text();
    if hash(builtin) == version_hash {
        return Ok(builtin.to_string());
    }
    let bytes = lake.get(&format!("{DIR}/{version_hash}.toml")).await.map_err(|_| {
        Error::Other(format!(
            "no playbook {version_hash} in {DIR}/ of this lake; `gtm-loop playbook history` lists the versions"
        ))
    })?;
    String::from_utf8(bytes.to_vec()).map_err(|e| Error::Other(format!("{DIR}/{version_hash}.toml is not text: {e}")))
}

/// Loads a stored playbook as the risk job reads it.
pub async fn load(lake: &Lake, version_hash: &str) -> Result<Playbook> {
    let text = text_of(lake, version_hash).await?;
    risk::load_text(&format!("{DIR}/{version_hash}.toml"), &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_then_diff_is_exactly_the_change() {
        let base = risk::builtin_text();
        let changes = vec![
            Change {
                path: "flag.champion_going_dark.weight".into(),
                before: Some("1.2".into()),
                after: Some("1.9".into()),
            },
            Change { path: "scoring.base_logit".into(), before: Some("-1.5".into()), after: Some("-1.1".into()) },
            Change { path: "action.new_play.days".into(), before: None, after: Some("7".into()) },
            Change { path: "action.new_play.kind".into(), before: None, after: Some("\"escalation\"".into()) },
            Change { path: "action.new_play.priority".into(), before: None, after: Some("95".into()) },
            Change { path: "action.new_play.template".into(), before: None, after: Some("\"{owner}: call\"".into()) },
            Change { path: "action.new_play.when".into(), before: None, after: Some("[\"too_long_in_stage\"]".into()) },
        ];
        let out = apply(base, &changes, "v2", "approved in a test").unwrap();
        let mut changes = changes;
        changes.sort_by(|a, b| a.path.cmp(&b.path));
        assert!(out.starts_with("# approved in a test\n"));
        assert_eq!(label(&out), "v2");
        assert_eq!(diff(base, &out).unwrap(), changes);
        // The comments of the seed survive, and the inverse edits give back the same keys.
        assert!(out.contains("# Next best actions"));
        let back: Vec<Change> = changes.iter().map(Change::inverse).collect();
        let undone = apply(&out, &back, "v3", "rollback").unwrap();
        assert!(diff(base, &undone).unwrap().is_empty());
        assert!(!undone.contains("new_play"));
    }

    #[test]
    fn an_edit_that_does_not_apply_is_refused() {
        let c = Change { path: "flag.nope.weight".into(), before: Some("1.0".into()), after: None };
        assert!(apply(risk::builtin_text(), &[c], "v2", "x").is_err());
        let c = Change {
            path: "flag.too_long_in_stage.weight".into(),
            before: Some("9.9".into()),
            after: Some("1.0".into()),
        };
        // The stated `before` is not what the file holds: the diff check refuses it.
        assert!(apply(risk::builtin_text(), &[c], "v2", "x").is_err());
    }
}
