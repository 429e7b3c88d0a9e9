//! Ranking quality of a score: the area under the ROC curve.
//! Used by the walk-forward backtest of the risk score; the learning loop's models will use it too.

/// Area under the ROC curve: the probability a random bad deal-week outscores a random good one
/// (ties count half), by the rank-sum formula.
pub fn auc(scores: &[(f64, bool)]) -> Option<f64> {
    let pos = scores.iter().filter(|s| s.1).count();
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = scores.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0; // ranks i+1..=j
        rank_sum += avg_rank * sorted[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::auc;

    #[test]
    fn auc_by_hand() {
        // Bad scores 3 and 2, good scores 1 and 2: pairs (3>1, 3>2, 2>1, 2=2 half) = 3.5 of 4.
        let s = [(3.0, true), (2.0, true), (1.0, false), (2.0, false)];
        assert!((auc(&s).unwrap() - 0.875).abs() < 1e-12);
        assert_eq!(auc(&[(1.0, true)]), None);
        assert!((auc(&[(1.0, true), (2.0, false)]).unwrap() - 0.0).abs() < 1e-12);
    }
}
