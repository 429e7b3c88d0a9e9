//! Tests for a difference: the pooled two-proportion z test, two-sided.
//! Funnel period comparisons, bottlenecks, KPI severity and the backtest all call this one.

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
    Some((z, erfc(z.abs() / std::f64::consts::SQRT_2)))
}

/// Complementary error function (Numerical Recipes' erfcc Chebyshev fit: fractional error below
/// 1.2e-7 everywhere), enough for p-values.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_proportion_test_matches_a_worked_example() {
        // 30/100 vs 50/100: pooled 0.4; se = sqrt(0.24 * 0.02) = 0.069282; z = -0.2 / 0.069282
        // = -2.88675; two-sided p = 0.003892 (normal tables).
        let (z, p) = two_proportion(30, 100, 50, 100).unwrap();
        assert!((z + 2.886_75).abs() < 1e-4, "{z}");
        assert!((p - 0.003_892).abs() < 2e-6, "{p}");
        assert!(two_proportion(0, 0, 1, 2).is_none());
        assert!((erfc(0.0) - 1.0).abs() < 1e-7 && (erfc(1.0) - 0.157_299_2).abs() < 2e-7);
    }
}
