//! Tests for a difference: the pooled two-proportion z test, two-sided, its normal tail from
//! `statrs`. Funnel periods, bottlenecks, KPI severity and the backtest all call this one.

/// Two-proportion z test (pooled), two-sided. None when either side is empty or nothing varies.
pub fn two_proportion(k1: i64, n1: i64, k2: i64, n2: i64) -> Option<(f64, f64)> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let pooled = (k1 + k2) as f64 / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se == 0.0 {
        return None;
    }
    let z = (k1 as f64 / n1f - k2 as f64 / n2f) / se;
    // Two-sided: P(|Z| >= |z|) = erfc(|z| / sqrt 2), from statrs (accurate to ~1e-15, where the
    // hand-written Chebyshev fit used before was good to 1.2e-7).
    Some((z, statrs::function::erf::erfc(z.abs() / std::f64::consts::SQRT_2)))
}

/// Exact two-sided binomial test of `k` successes in `n` trials against probability `p`: the sum
/// of the probabilities of every outcome no more likely than `k` (R's `binom.test`), with R's
/// relative tolerance of 1e-7 for ties. None when `n` is 0.
pub fn binomial_two_sided(k: u64, n: u64, p: f64) -> Option<f64> {
    if n == 0 || k > n || !(0.0..=1.0).contains(&p) {
        return None;
    }
    let ln = |v: f64| if v > 0.0 { v.ln() } else { f64::NEG_INFINITY };
    let ln_pmf =
        |i: u64| statrs::function::factorial::ln_binomial(n, i) + i as f64 * ln(p) + (n - i) as f64 * ln(1.0 - p);
    let observed = ln_pmf(k);
    let limit = observed + (1.0f64 + 1e-7).ln();
    let total: f64 = (0..=n).map(ln_pmf).filter(|l| *l <= limit).map(f64::exp).sum();
    Some(total.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R documentation of `binom.test` (Conover 1971, p. 97f): 682 of 925 plants against 3/4
    /// gives p-value = 0.3825; and 7 of 20 against a fair coin, P(X <= 7) + P(X >= 13) = 0.2632.
    #[test]
    fn exact_binomial_test_matches_r() {
        let p = binomial_two_sided(682, 925, 0.75).unwrap();
        assert!((p - 0.3825).abs() < 5e-5, "{p}");
        let p = binomial_two_sided(7, 20, 0.5).unwrap();
        assert!((p - 0.263_2).abs() < 5e-5, "{p}");
        assert_eq!(binomial_two_sided(10, 20, 0.5), Some(1.0));
        assert!(binomial_two_sided(0, 0, 0.5).is_none());
    }

    #[test]
    fn two_proportion_test_matches_a_worked_example() {
        // 30/100 vs 50/100: pooled 0.4; se = sqrt(0.24 * 0.02) = 0.069282; z = -0.2 / 0.069282
        // = -2.88675; two-sided p = 0.003892 (normal tables).
        let (z, p) = two_proportion(30, 100, 50, 100).unwrap();
        assert!((z + 2.886_75).abs() < 1e-4, "{z}");
        assert!((p - 0.003_892).abs() < 2e-6, "{p}");
        assert!(two_proportion(0, 0, 1, 2).is_none());
        assert!(two_proportion(0, 10, 0, 10).is_none(), "nothing varies: no test");
    }

    /// Abramowitz M, Stegun IA (1964), Handbook of Mathematical Functions, Table 26.5 (percentage
    /// points of the normal distribution): two-sided 5%, 1% and 0.1% at z = 1.959964, 2.575829,
    /// 3.290527. The p-value is symmetric in the order of the groups.
    #[test]
    fn two_sided_p_matches_the_normal_table() {
        let p = |z: f64| statrs::function::erf::erfc(z / std::f64::consts::SQRT_2);
        assert!((p(1.959_964) - 0.05).abs() < 1e-6 && (p(2.575_829) - 0.01).abs() < 1e-6);
        assert!((p(3.290_527) - 0.001).abs() < 1e-7);
        let (z1, p1) = two_proportion(30, 100, 50, 100).unwrap();
        let (z2, p2) = two_proportion(50, 100, 30, 100).unwrap();
        assert!((z1 + z2).abs() < 1e-12 && (p1 - p2).abs() < 1e-15);
    }
}
