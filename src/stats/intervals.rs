//! Confidence intervals for rates: Wilson's score interval for one proportion, and Newcombe's
//! hybrid score interval for the difference of two. Every published rate carries one.

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The sums a ratio-of-sums estimate needs for its interval, over its rows (one row per unit,
/// e.g. per deal): Σy, Σx, Σy², Σx², Σxy and the number of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RatioSums {
    pub y: f64,
    pub x: f64,
    pub yy: f64,
    pub xx: f64,
    pub xy: f64,
    pub rows: i64,
}

/// 95% interval of R = Σy / Σx by linearisation (the ratio estimator's standard error,
/// Cochran 1977 §6.3): var(R) ≈ n / (n - 1) · Σ(y - R x)² / (Σx)². None below two rows or for
/// Σx = 0.
pub fn ratio_interval(s: RatioSums) -> Option<(f64, f64)> {
    if s.rows < 2 || s.x == 0.0 {
        return None;
    }
    let r = s.y / s.x;
    let ss = (s.yy - 2.0 * r * s.xy + r * r * s.xx).max(0.0);
    let n = s.rows as f64;
    let se = (ss * n / (n - 1.0)).sqrt() / s.x.abs();
    Some((r - Z95 * se, r + Z95 * se))
}

/// 95% Wilson score interval for k successes in n trials (good at small n and near 0 or 1).
pub fn wilson(k: i64, n: i64) -> Option<(f64, f64)> {
    if n <= 0 {
        return None;
    }
    let z = Z95;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n) + z * z / (4.0 * n * n)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// 95% interval for p1 - p2 (x1 of n1 against x2 of n2): Newcombe's hybrid score method (method
/// 10 of Newcombe 1998), built from the two Wilson intervals. Unlike the Wald interval it stays
/// inside [-1, 1] and behaves at 0 and 1. None when either side is empty.
pub fn newcombe_difference(x1: i64, n1: i64, x2: i64, n2: i64) -> Option<(f64, f64)> {
    let (l1, u1) = wilson(x1, n1)?;
    let (l2, u2) = wilson(x2, n2)?;
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let d = p1 - p2;
    let below = ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let above = ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt();
    Some((d - below, d + above))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z95_is_the_normal_quantile() {
        use statrs::distribution::{ContinuousCDF, Normal};
        let q = Normal::new(0.0, 1.0).unwrap().inverse_cdf(0.975);
        assert!((q - Z95).abs() < 1e-9, "{q}");
    }

    #[test]
    fn wilson_interval_matches_worked_values() {
        // 81 of 263: p = 0.30798; z^2 = 3.8415; centre = (0.30798 + 3.8415/526) / (1 + 3.8415/263)
        // = 0.31528 / 1.014606 = 0.31074; half = 1.96 * sqrt(0.30798*0.69202/263 + 3.8415/(4*263^2)) / 1.014606
        // = 1.96 * sqrt(0.00081037 + 0.00001389) / 1.014606 = 0.05545; interval 0.2553 to 0.3662.
        let (lo, hi) = wilson(81, 263).unwrap();
        assert!((lo - 0.2553).abs() < 5e-4 && (hi - 0.3662).abs() < 5e-4, "{lo} {hi}");
        // 0 of 10 still has an upper bound: z^2/(n+z^2) = 3.8415/13.8415 = 0.2775.
        let (lo, hi) = wilson(0, 10).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 5e-4, "{hi}");
        assert!(wilson(0, 0).is_none());
    }

    /// Newcombe RG (1998), "Two-sided confidence intervals for the single proportion: comparison
    /// of seven methods", Statistics in Medicine 17:857-872, Table I, method 3 (score, no
    /// continuity correction), printed to four decimals.
    #[test]
    fn wilson_matches_newcombe_1998_table_1() {
        for (k, n, lo, hi) in
            [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)]
        {
            let (l, h) = wilson(k, n).unwrap();
            assert!(
                (l - lo).abs() < 5.01e-5 && (h - hi).abs() < 5.01e-5,
                "{k}/{n}: {l:.4}-{h:.4}, published {lo}-{hi}"
            );
        }
    }

    /// Newcombe RG (1998), "Interval estimation for the difference between independent
    /// proportions: comparison of eleven methods", Statistics in Medicine 17:873-890, Table II,
    /// method 10 (hybrid score, no continuity correction), printed to four decimals.
    #[test]
    fn newcombe_difference_matches_newcombe_1998_table_2() {
        for (x1, n1, x2, n2, lo, hi) in [
            (56, 70, 48, 80, 0.0524, 0.3339),
            (9, 10, 3, 10, 0.1705, 0.8090),
            (5, 56, 0, 29, -0.0381, 0.1926),
            (0, 10, 0, 20, -0.1611, 0.2775),
            (10, 10, 0, 20, 0.6791, 1.0),
        ] {
            let (l, h) = newcombe_difference(x1, n1, x2, n2).unwrap();
            assert!(
                (l - lo).abs() < 5.01e-5 && (h - hi).abs() < 5.01e-5,
                "{x1}/{n1} - {x2}/{n2}: {l:.4} to {h:.4}, published {lo} to {hi}"
            );
        }
        assert!(newcombe_difference(1, 0, 1, 2).is_none());
    }

    #[test]
    fn ratio_interval_by_hand() {
        // Rows (1,2), (2,2), (3,2): R = 1, residuals -1, 0, 1, SS = 2; var = 2 * 3 / 2 / 36 = 1/12.
        let s = RatioSums { y: 6.0, x: 6.0, yy: 14.0, xx: 12.0, xy: 12.0, rows: 3 };
        let (lo, hi) = ratio_interval(s).unwrap();
        let se = (1.0f64 / 12.0).sqrt();
        assert!((lo - (1.0 - Z95 * se)).abs() < 1e-12 && (hi - (1.0 + Z95 * se)).abs() < 1e-12);
        assert!((lo - (1.0 - 0.565_796)).abs() < 1e-5, "{lo}");
        assert_eq!(ratio_interval(RatioSums { rows: 1, ..s }), None);
    }
}
