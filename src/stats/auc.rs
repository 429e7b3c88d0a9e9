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

/// Scores sorted once, so that the AUC of any re-weighting of them (a bootstrap resample is a
/// weighting by how often each row was drawn) costs one pass instead of a sort.
pub struct RankedScores {
    /// Row indices in ascending score order.
    order: Vec<usize>,
    /// Where each run of tied scores ends in `order` (exclusive).
    tie_ends: Vec<usize>,
    labels: Vec<bool>,
}

impl RankedScores {
    pub fn new(scores: &[(f64, bool)]) -> RankedScores {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[a].0.total_cmp(&scores[b].0));
        let mut tie_ends = Vec::new();
        for k in 1..=order.len() {
            if k == order.len() || scores[order[k]].0 != scores[order[k - 1]].0 {
                tie_ends.push(k);
            }
        }
        RankedScores { order, tie_ends, labels: scores.iter().map(|s| s.1).collect() }
    }

    /// The AUC of the rows counted `weight[i]` times each: the share of (positive, negative)
    /// pairs ranked the right way round, ties counting half. Equals `auc` on the rows repeated.
    pub fn weighted_auc(&self, weight: &[f64]) -> Option<f64> {
        let (mut below_neg, mut pairs, mut total_pos) = (0.0, 0.0, 0.0);
        let mut start = 0;
        for &end in &self.tie_ends {
            let (mut pos, mut neg) = (0.0, 0.0);
            for &i in &self.order[start..end] {
                if self.labels[i] {
                    pos += weight[i];
                } else {
                    neg += weight[i];
                }
            }
            pairs += pos * (below_neg + 0.5 * neg);
            below_neg += neg;
            total_pos += pos;
            start = end;
        }
        (total_pos > 0.0 && below_neg > 0.0).then(|| pairs / (total_pos * below_neg))
    }
}

#[cfg(test)]
mod tests {
    use super::{RankedScores, auc};

    #[test]
    fn auc_by_hand() {
        // Bad scores 3 and 2, good scores 1 and 2: pairs (3>1, 3>2, 2>1, 2=2 half) = 3.5 of 4.
        let s = [(3.0, true), (2.0, true), (1.0, false), (2.0, false)];
        assert!((auc(&s).unwrap() - 0.875).abs() < 1e-12);
        assert_eq!(auc(&[(1.0, true)]), None);
        assert!((auc(&[(1.0, true), (2.0, false)]).unwrap() - 0.0).abs() < 1e-12);
    }

    #[test]
    fn weighted_auc_is_the_auc_of_the_repeated_rows() {
        let s = [(3.0, true), (2.0, true), (1.0, false), (2.0, false), (0.5, true), (2.0, false)];
        let ranked = RankedScores::new(&s);
        assert!((ranked.weighted_auc(&[1.0; 6]).unwrap() - auc(&s).unwrap()).abs() < 1e-12);
        // Row 0 drawn twice, row 4 never, row 5 three times.
        let w = [2.0, 1.0, 1.0, 1.0, 0.0, 3.0];
        let repeated: Vec<(f64, bool)> =
            s.iter().zip(w).flat_map(|(r, k)| std::iter::repeat_n(*r, k as usize)).collect();
        assert!((ranked.weighted_auc(&w).unwrap() - auc(&repeated).unwrap()).abs() < 1e-12);
        // By hand: positives 3 (x2), 2; negatives 1, 2 (x4). Pairs 3>all: 2*5 = 10; 2 vs 1: 1,
        // 2 = 2 (x4): 2. (10 + 1 + 2) / (3 * 5).
        assert!((ranked.weighted_auc(&w).unwrap() - 13.0 / 15.0).abs() < 1e-12);
        assert_eq!(ranked.weighted_auc(&[0.0, 0.0, 1.0, 1.0, 0.0, 1.0]), None);
    }
}
