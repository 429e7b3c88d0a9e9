//! Multiple-testing control: Holm's step-down adjustment (family-wise error) and Benjamini-Hochberg
//! (false discovery rate). Every job that tests many cells in a run adjusts its p-values here.

/// Holm-adjusted p-values, in the order given: sorted ascending, the i-th smallest (0-based) is
/// multiplied by m - i, capped at 1 and kept monotone (never below an earlier adjusted value).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].partial_cmp(&p[b]).expect("finite p"));
    let mut adjusted = vec![1.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = ((m - rank) as f64 * p[i]).min(1.0).max(running);
        adjusted[i] = running;
    }
    adjusted
}

/// Benjamini-Hochberg adjusted p-values (q-values), in the order given: the i-th smallest
/// (1-based rank i of m) becomes min over ranks j >= i of m * p(j) / j, capped at 1. A test is a
/// discovery at false discovery rate q when its adjusted value is at most q.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].partial_cmp(&p[b]).expect("finite p"));
    let mut adjusted = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = (m as f64 * p[i] / (rank + 1) as f64).min(running).min(1.0);
        adjusted[i] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_adjusts_in_order_and_keeps_monotone() {
        // p = 0.01, 0.04, 0.03 -> sorted 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max 0.06).
        let adj = holm(&[0.01, 0.04, 0.03]);
        assert!((adj[0] - 0.03).abs() < 1e-12 && (adj[1] - 0.06).abs() < 1e-12 && (adj[2] - 0.06).abs() < 1e-12);
    }

    /// Benjamini Y, Hochberg Y (1995), "Controlling the false discovery rate", JRSS B 57:289-300,
    /// section 3.2: the 15 p-values of a myocardial-infarction study. At level 0.05 the
    /// Bonferroni-type procedures (Holm among them) reject three hypotheses, the FDR procedure four.
    const BH_1995: [f64; 15] = [
        0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719, 0.6528, 0.7590,
        1.0000,
    ];

    #[test]
    fn holm_rejects_three_of_the_benjamini_hochberg_1995_example() {
        let adj = holm(&BH_1995);
        assert_eq!(adj.iter().filter(|a| **a <= 0.05).count(), 3);
        // By hand: 15 x 0.0001 = 0.0015, 14 x 0.0004 = 0.0056, 13 x 0.0019 = 0.0247, 12 x 0.0095 = 0.114.
        for (a, want) in adj.iter().zip([0.0015, 0.0056, 0.0247, 0.114]) {
            assert!((a - want).abs() < 1e-12, "{a} vs {want}");
        }
    }

    #[test]
    fn benjamini_hochberg_rejects_four_of_its_own_1995_example() {
        let q = benjamini_hochberg(&BH_1995);
        assert_eq!(q.iter().filter(|a| **a <= 0.05).count(), 4);
        // By hand: rank 4: 15 x 0.0095 / 4 = 0.035625; rank 5: min(15 x 0.0201 / 5 = 0.0603,
        // 15 x 0.0278 / 6 = 0.0695, 15 x 0.0298 / 7 = 0.06386, 15 x 0.0344 / 8 = 0.0645, ...) = 0.0603.
        assert!((q[3] - 0.035625).abs() < 1e-12 && (q[4] - 0.0603).abs() < 1e-12, "{q:?}");
        // Monotone in p, and order-preserving when the input is shuffled.
        assert!(q.windows(2).all(|w| w[0] <= w[1]));
        let shuffled = [BH_1995[4], BH_1995[0], BH_1995[14], BH_1995[3]];
        let qs = benjamini_hochberg(&shuffled);
        // m = 4 now: 0.0001 -> 4 x 0.0001 = 0.0004; 0.0095 -> min(4 x 0.0095 / 2, 4 x 0.0201 / 3) = 0.019.
        assert!((qs[1] - 0.0004).abs() < 1e-12 && (qs[3] - 0.019).abs() < 1e-12, "{qs:?}");
    }
}
