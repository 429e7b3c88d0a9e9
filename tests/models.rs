//! The win-probability model (Polars feature frames, linfa logistic regression): on a lake with
//! planted effects it beats the stage-only model and stays below the generator's true
//! probability; on a null lake it has nothing to learn beyond stage; every open deal gets a
//! probability; the model card is published.

mod common;

use std::path::Path;

use common::*;
use serde_json::{Map, Value};

const AS_OF: &str = "2026-09-30";

fn metrics(lake: &Path) -> (String, Vec<Map<String, Value>>) {
    let r = run(lake, &["models", "--as-of", AS_OF]);
    assert_eq!(r.code, 0, "models failed: {}\n{}", r.stderr, r.stdout);
    (r.stdout, query(lake, "SELECT * FROM output.model_metrics", None))
}

fn metric(rows: &[Map<String, Value>], model: &str, metric: &str) -> (f64, f64, f64) {
    let r = rows
        .iter()
        .find(|r| r["model"] == model && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no {model} {metric} in {rows:?}"));
    let g = |c: &str| r.get(c).and_then(Value::as_f64).unwrap_or(f64::NAN);
    (g("value"), g("low"), g("high"))
}

#[test]
fn the_win_model_beats_stage_alone_and_stays_below_the_truth() {
    let dir = tempdir();
    let lake = dir.path().join("lake");
    let r = run(&lake, &["generate", "--opportunities", "3000", "--seed", "9"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (text, rows) = metrics(&lake);
    eprintln!("{text}");
    let (model, model_lo, _) = metric(&rows, "win_model", "auc");
    let (stage, _, stage_hi) = metric(&rows, "stage_only", "auc");
    let (truth, _, truth_hi) = metric(&rows, "true_probability", "auc");
    let (same_rows, _, _) = metric(&rows, "win_model_at_stage_entries", "auc");
    // Planted signals (champions going dark, competitors, single-threading) carry information a
    // stage cannot: the fitted model ranks deals better than the stage-only model...
    assert!(model > stage + 0.02 && model_lo > stage - 0.05, "model {model} vs stage {stage} (hi {stage_hi})");
    // ...and no better than the generator's own probability on the same rows, within noise.
    assert!(same_rows <= truth_hi + 0.01, "model {same_rows} above the truth {truth} (hi {truth_hi})");
    let (b_model, _, _) = metric(&rows, "win_model", "brier");
    let (b_stage, _, _) = metric(&rows, "stage_only", "brier");
    assert!(b_model < b_stage, "Brier {b_model} vs stage-only {b_stage}");
    assert!(text.contains("best possible") && text.contains("calibration by decile"), "{text}");
    // A probability for every deal open on the run date (each has a weekly row that day).
    let probs = query(
        &lake,
        "SELECT COUNT(*) AS n, MIN(win_probability) AS lo, MAX(win_probability) AS hi FROM output.win_probability",
        None,
    );
    let open_deals = query(&lake, "SELECT COUNT(*) AS n FROM opportunity WHERE NOT is_closed", Some(AS_OF));
    assert_eq!(probs[0]["n"], open_deals[0]["n"], "{probs:?} vs {open_deals:?}");
    let (lo, hi) = (probs[0]["lo"].as_f64().unwrap(), probs[0]["hi"].as_f64().unwrap());
    assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && hi > lo);
    // The model card is an artifact of the run.
    let card = std::fs::read_dir(lake.join("output/_artifacts").join(format!("as_of={AS_OF}")))
        .expect("artifacts")
        .flatten()
        .map(|run| run.path().join("model_card_win_probability.md"))
        .find(|p| p.exists())
        .expect("a model card");
    let card = std::fs::read_to_string(card).unwrap();
    assert!(card.contains("Must not be used for") && card.contains("log1p(amount)"), "{card}");
}

#[test]
fn on_a_null_lake_the_model_learns_nothing_beyond_stage() {
    let dir = tempdir();
    let lake = dir.path().join("lake");
    let r = run(&lake, &["generate", "--opportunities", "3000", "--seed", "9", "--null-effects"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (text, rows) = metrics(&lake);
    eprintln!("{text}");
    let (model, _, _) = metric(&rows, "win_model", "auc");
    let (stage, _, _) = metric(&rows, "stage_only", "auc");
    let (truth, _, _) = metric(&rows, "true_probability", "auc");
    assert!((model - stage).abs() < 0.03, "model {model} vs stage {stage}");
    assert!((truth - stage).abs() < 0.03, "the truth is stage alone here: {truth} vs {stage}");
}
