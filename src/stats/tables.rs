//! Two-by-two tables and their stratified summaries: risk and odds ratios with 95% intervals
//! (Katz, Woolf, and Fisher's exact conditional interval when cells are small), the
//! Mantel-Haenszel pooled odds and risk ratios with the Cochran-Mantel-Haenszel test, the
//! Breslow-Day test of homogeneity, and the ratio of two odds ratios (an interaction).
//!
//! Orientation everywhere: `a` exposed with the outcome, `b` exposed without, `c` unexposed with,
//! `d` unexposed without.

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};
use statrs::function::gamma::ln_gamma;

use super::intervals::Z95;

/// One 2x2 table of counts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Table2x2 {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    pub d: f64,
}

/// An estimate with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// A ratio from its log and the variance of that log.
    pub fn from_log(log: f64, var: f64) -> Estimate {
        let se = var.max(0.0).sqrt();
        Estimate { value: log.exp(), low: (log - Z95 * se).exp(), high: (log + Z95 * se).exp() }
    }
}

/// Two-sided p-value of a standard normal statistic.
pub fn normal_two_sided(z: f64) -> f64 {
    let n = Normal::new(0.0, 1.0).expect("standard normal");
    (2.0 * (1.0 - n.cdf(z.abs()))).clamp(0.0, 1.0)
}

fn chi2_sf(x: f64, df: f64) -> f64 {
    if !x.is_finite() {
        return 0.0;
    }
    ChiSquared::new(df).map(|c| 1.0 - c.cdf(x.max(0.0))).unwrap_or(f64::NAN)
}

impl Table2x2 {
    pub fn new(a: i64, b: i64, c: i64, d: i64) -> Table2x2 {
        Table2x2 { a: a as f64, b: b as f64, c: c as f64, d: d as f64 }
    }
    pub fn n(&self) -> f64 {
        self.a + self.b + self.c + self.d
    }
    pub fn exposed(&self) -> f64 {
        self.a + self.b
    }
    pub fn unexposed(&self) -> f64 {
        self.c + self.d
    }
    pub fn min_cell(&self) -> f64 {
        self.a.min(self.b).min(self.c).min(self.d)
    }

    /// Risk ratio (a/(a+b)) / (c/(c+d)) with Katz's log interval. None when a side is empty or has
    /// no outcome at all (the ratio is 0 or infinite and the log interval does not exist).
    pub fn risk_ratio(&self) -> Option<Estimate> {
        if self.a == 0.0 || self.c == 0.0 || self.exposed() == 0.0 || self.unexposed() == 0.0 {
            return None;
        }
        let log = (self.a / self.exposed()).ln() - (self.c / self.unexposed()).ln();
        let var = 1.0 / self.a - 1.0 / self.exposed() + 1.0 / self.c - 1.0 / self.unexposed();
        Some(Estimate::from_log(log, var))
    }

    /// Sample odds ratio ad/bc with Woolf's log interval. None with a zero cell (use `fisher`).
    pub fn odds_ratio(&self) -> Option<Estimate> {
        if self.min_cell() == 0.0 {
            return None;
        }
        let log = (self.a * self.d / (self.b * self.c)).ln();
        let var = 1.0 / self.a + 1.0 / self.b + 1.0 / self.c + 1.0 / self.d;
        Some(Estimate::from_log(log, var))
    }

    /// Rate difference a/(a+b) - c/(c+d).
    pub fn rate_difference(&self) -> Option<f64> {
        (self.exposed() > 0.0 && self.unexposed() > 0.0).then(|| self.a / self.exposed() - self.c / self.unexposed())
    }

    /// Fisher's exact test and the exact conditional interval for the odds ratio, as R's
    /// `fisher.test`: the two-sided p-value sums the tables no more likely than the one observed;
    /// the estimate is the conditional maximum-likelihood odds ratio.
    pub fn fisher(&self) -> Option<Fisher> {
        let hyper = Hypergeometric::of(self)?;
        let x = self.a.round() as i64;
        let d0 = hyper.density(0.0);
        let observed = d0[(x - hyper.lo) as usize];
        let p = d0.iter().filter(|d| **d <= observed * (1.0 + 1e-7)).sum::<f64>().min(1.0);
        let estimate = if x == hyper.lo {
            0.0
        } else if x == hyper.hi {
            f64::INFINITY
        } else {
            (solve_log(|l| hyper.mean(l) - x as f64)).exp()
        };
        let alpha = (1.0 - 0.95) / 2.0;
        let low = if x == hyper.lo { 0.0 } else { solve_log(|l| hyper.upper_tail(l, x) - alpha).exp() };
        let high = if x == hyper.hi { f64::INFINITY } else { solve_log(|l| alpha - hyper.lower_tail(l, x)).exp() };
        Some(Fisher { p, odds_ratio: Estimate { value: estimate, low, high } })
    }
}

/// Fisher's exact test of one table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fisher {
    pub p: f64,
    pub odds_ratio: Estimate,
}

/// The distribution of `a` given the table's margins, under odds ratio exp(log_or).
struct Hypergeometric {
    lo: i64,
    hi: i64,
    log_choose: Vec<f64>,
}

impl Hypergeometric {
    fn of(t: &Table2x2) -> Option<Hypergeometric> {
        let (m, n, k) = ((t.a + t.c).round() as i64, (t.b + t.d).round() as i64, (t.a + t.b).round() as i64);
        if m + n == 0 {
            return None;
        }
        let lo = (k - n).max(0);
        let hi = k.min(m);
        let lc = |n: i64, r: i64| ln_gamma(n as f64 + 1.0) - ln_gamma(r as f64 + 1.0) - ln_gamma((n - r) as f64 + 1.0);
        let log_choose = (lo..=hi).map(|x| lc(m, x) + lc(n, k - x)).collect();
        Some(Hypergeometric { lo, hi, log_choose })
    }
    /// Probabilities of each support point lo..=hi under odds ratio exp(log_or).
    fn density(&self, log_or: f64) -> Vec<f64> {
        let w: Vec<f64> =
            self.log_choose.iter().enumerate().map(|(i, c)| c + log_or * (self.lo + i as i64) as f64).collect();
        let max = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = w.iter().map(|v| (v - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.into_iter().map(|v| v / s).collect()
    }
    fn mean(&self, log_or: f64) -> f64 {
        self.density(log_or).iter().enumerate().map(|(i, p)| p * (self.lo + i as i64) as f64).sum()
    }
    fn upper_tail(&self, log_or: f64, x: i64) -> f64 {
        self.density(log_or).iter().skip((x - self.lo) as usize).sum()
    }
    fn lower_tail(&self, log_or: f64, x: i64) -> f64 {
        self.density(log_or).iter().take((x - self.lo + 1) as usize).sum()
    }
}

/// Root of an increasing function of the log odds ratio, by bisection over [-50, 50].
fn solve_log(f: impl Fn(f64) -> f64) -> f64 {
    let (mut lo, mut hi) = (-50.0f64, 50.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-12 {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// The Mantel-Haenszel summary of a stratified 2x2xK table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MantelHaenszel {
    /// Pooled odds ratio with the Robins-Breslow-Greenland interval.
    pub odds_ratio: Estimate,
    /// Pooled risk ratio with the Greenland-Robins interval.
    pub risk_ratio: Option<Estimate>,
    /// Cochran-Mantel-Haenszel chi-square (no continuity correction) and its p-value.
    pub chi2: f64,
    pub p: f64,
    /// Strata that carried information (both sides present, n >= 2).
    pub strata: usize,
    /// Σ(a - E[a]) and ΣVar(a), for the corrected statistic.
    pub deviation: f64,
    pub variance: f64,
}

/// Mantel-Haenszel pooled odds and risk ratios and the CMH test. Strata with an empty side or
/// fewer than two rows carry no information and are left out. None when nothing is left or the
/// pooled odds ratio is 0 or infinite.
pub fn mantel_haenszel(strata: &[Table2x2]) -> Option<MantelHaenszel> {
    let used: Vec<&Table2x2> =
        strata.iter().filter(|t| t.n() >= 2.0 && t.exposed() > 0.0 && t.unexposed() > 0.0).collect();
    let (mut r, mut s, mut pr, mut ps_qr, mut qs) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut rr_num, mut rr_den, mut rr_var) = (0.0, 0.0, 0.0);
    let (mut dev, mut var) = (0.0, 0.0);
    for t in &used {
        let n = t.n();
        let (rk, sk) = (t.a * t.d / n, t.b * t.c / n);
        let (pk, qk) = ((t.a + t.d) / n, (t.b + t.c) / n);
        r += rk;
        s += sk;
        pr += pk * rk;
        ps_qr += pk * sk + qk * rk;
        qs += qk * sk;
        let (n1, n0, m1, m0) = (t.exposed(), t.unexposed(), t.a + t.c, t.b + t.d);
        rr_num += t.a * n0 / n;
        rr_den += t.c * n1 / n;
        rr_var += (n1 * n0 * m1 - t.a * t.c * n) / (n * n);
        dev += t.a - n1 * m1 / n;
        var += n1 * n0 * m1 * m0 / (n * n * (n - 1.0));
    }
    if r == 0.0 || s == 0.0 {
        return None;
    }
    let log_or = (r / s).ln();
    let var_or = pr / (2.0 * r * r) + ps_qr / (2.0 * r * s) + qs / (2.0 * s * s);
    let risk_ratio =
        (rr_num > 0.0 && rr_den > 0.0).then(|| Estimate::from_log((rr_num / rr_den).ln(), rr_var / (rr_num * rr_den)));
    let chi2 = if var > 0.0 { dev * dev / var } else { 0.0 };
    Some(MantelHaenszel {
        odds_ratio: Estimate::from_log(log_or, var_or),
        risk_ratio,
        chi2,
        p: chi2_sf(chi2, 1.0),
        strata: used.len(),
        deviation: dev,
        variance: var,
    })
}

/// Breslow-Day test that every stratum shares the odds ratio `common` (the Mantel-Haenszel
/// estimate): Σ (a - A)² / Var(A), where A is the count that gives the stratum's margins odds
/// ratio `common`, on K - 1 degrees of freedom (Breslow & Day 1980, eq. 4.30; no Tarone term).
/// Returns (statistic, degrees of freedom, p); None with fewer than two usable strata.
pub fn breslow_day(strata: &[Table2x2], common: f64) -> Option<(f64, usize, f64)> {
    let mut stat = 0.0;
    let mut k = 0usize;
    for t in strata {
        let (n1, n0, m1) = (t.exposed(), t.unexposed(), t.a + t.c);
        let (lo, hi) = ((m1 - n0).max(0.0), n1.min(m1));
        if n1 == 0.0 || n0 == 0.0 || hi <= lo {
            continue;
        }
        // A (n0 - m1 + A) = common (n1 - A)(m1 - A), a quadratic in A with one root in [lo, hi].
        let qa = 1.0 - common;
        let qb = n0 - m1 + common * (n1 + m1);
        let qc = -common * n1 * m1;
        let big_a = if qa.abs() < 1e-12 {
            -qc / qb
        } else {
            let disc = (qb * qb - 4.0 * qa * qc).max(0.0).sqrt();
            let r1 = (-qb + disc) / (2.0 * qa);
            let r2 = (-qb - disc) / (2.0 * qa);
            if (lo - 1e-9..=hi + 1e-9).contains(&r1) { r1 } else { r2 }
        };
        let cells = [big_a, n1 - big_a, m1 - big_a, n0 - m1 + big_a];
        if cells.iter().any(|c| *c <= 0.0) {
            continue;
        }
        let v = 1.0 / cells.iter().map(|c| 1.0 / c).sum::<f64>();
        stat += (t.a - big_a).powi(2) / v;
        k += 1;
    }
    (k >= 2).then(|| (stat, k - 1, chi2_sf(stat, (k - 1) as f64)))
}

/// The ratio of two odds ratios (an interaction: the condition's odds ratio in one segment over the
/// rest), from their logs and log variances, with its interval and two-sided p-value.
pub fn ratio_of_odds_ratios(log1: f64, var1: f64, log2: f64, var2: f64) -> (Estimate, f64) {
    let (diff, var) = (log1 - log2, var1 + var2);
    (Estimate::from_log(diff, var), normal_two_sided(diff / var.sqrt()))
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::Table2x2;

    /// Berkeley 1973 admissions by department (Bickel, Hammel & O'Connell 1975; R's
    /// `UCBAdmissions`): exposed = male, outcome = admitted.
    pub(crate) fn berkeley() -> Vec<Table2x2> {
        [
            (512, 313, 89, 19),
            (353, 207, 17, 8),
            (120, 205, 202, 391),
            (138, 279, 131, 244),
            (53, 138, 94, 299),
            (22, 351, 24, 317),
        ]
        .iter()
        .map(|&(a, b, c, d)| Table2x2::new(a, b, c, d))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::berkeley;
    use super::*;

    fn close(got: f64, want: f64, tol: f64) {
        assert!((got - want).abs() <= tol, "got {got}, want {want} (tolerance {tol})");
    }

    #[test]
    fn mantel_haenszel_matches_r_on_ucb_admissions() {
        // R 4.x, mantelhaen.test(UCBAdmissions): common odds ratio 0.9046968, 95% CI 0.7719074 to
        // 1.0603298 (Robins-Breslow-Greenland); X-squared = 1.4269 with the continuity correction,
        // 1.5246 (p = 0.2169) without.
        let mh = mantel_haenszel(&berkeley()).unwrap();
        close(mh.odds_ratio.value, 0.9046968, 5e-8);
        close(mh.odds_ratio.low, 0.7719074, 5e-7);
        close(mh.odds_ratio.high, 1.0603298, 5e-7);
        close(mh.chi2, 1.5246, 5e-5);
        close(mh.p, 0.2169, 5e-5);
        let corrected = (mh.deviation.abs() - 0.5).powi(2) / mh.variance;
        close(corrected, 1.4269, 5e-5);
        assert_eq!(mh.strata, 6);
    }

    /// Lung cancer and smoking in eight Chinese cities (Liu 1992, Agresti 2002 table 3.3), with the
    /// PROC FREQ CMH output published for it (Stanford ED257 handout, SAS 1999): MH odds ratio
    /// 2.174, logit 2.173, MH risk ratio (column 1) 1.519, CMH statistic 280.138, Breslow-Day 5.200
    /// on 7 df (p 0.636). Exposed = smoker, outcome = lung cancer.
    fn china() -> Vec<Table2x2> {
        [
            (126, 100, 35, 61),
            (908, 688, 497, 807),
            (913, 747, 336, 598),
            (235, 172, 58, 121),
            (402, 308, 121, 215),
            (182, 156, 72, 98),
            (60, 99, 11, 43),
            (104, 89, 21, 36),
        ]
        .iter()
        .map(|&(a, b, c, d)| Table2x2::new(a, b, c, d))
        .collect()
    }

    #[test]
    fn mantel_haenszel_and_breslow_day_match_sas_on_the_chinese_smoking_study() {
        let t = china();
        let mh = mantel_haenszel(&t).unwrap();
        close(mh.odds_ratio.value, 2.174, 5e-4);
        close(mh.risk_ratio.unwrap().value, 1.519, 5e-4);
        close(mh.chi2, 280.138, 5e-3);
        let (bd, df, p) = breslow_day(&t, mh.odds_ratio.value).unwrap();
        close(bd, 5.200, 5e-3);
        assert_eq!(df, 7);
        close(p, 0.636, 5e-4);
        // The logit (Woolf) pooled estimate SAS prints beside it: inverse-variance weighted logs.
        let (mut w, mut wl) = (0.0, 0.0);
        for s in &t {
            let v = 1.0 / s.a + 1.0 / s.b + 1.0 / s.c + 1.0 / s.d;
            w += 1.0 / v;
            wl += (s.a * s.d / (s.b * s.c)).ln() / v;
        }
        close((wl / w).exp(), 2.173, 5e-4);
    }

    #[test]
    fn breslow_day_is_large_where_berkeley_departments_disagree() {
        // Department A's odds ratio (0.35) is far from the others' (about 0.8-1.3): R's woolf()
        // in ?mantelhaen.test gives p = 0.003; the Breslow-Day statistic is 18.8255 on 5 df,
        // p = 0.002071 (statsmodels StratifiedTable.test_equal_odds, DescTools::BreslowDayTest).
        let t = berkeley();
        let mh = mantel_haenszel(&t).unwrap();
        let (bd, df, p) = breslow_day(&t, mh.odds_ratio.value).unwrap();
        assert_eq!(df, 5);
        close(bd, 18.8255, 5e-4);
        close(p, 0.002071, 5e-6);
    }

    #[test]
    fn single_table_ratios_match_sas_for_berkeley_department_a() {
        // PROC FREQ, Berkeley department A (Penn State STAT 504, lesson 3): odds ratio 2.8636
        // (1.7112, 4.7921), relative risk (column 1) 2.1566 (1.4206, 3.2737), with rows male then
        // female and column 1 = rejected.
        let t = Table2x2::new(313, 512, 19, 89);
        let or = t.odds_ratio().unwrap();
        close(or.value, 2.8636, 5e-5);
        close(or.low, 1.7112, 5e-5);
        close(or.high, 4.7921, 5e-5);
        let rr = t.risk_ratio().unwrap();
        close(rr.value, 2.1566, 5e-5);
        close(rr.low, 1.4206, 5e-5);
        close(rr.high, 3.2737, 5e-5);
    }

    #[test]
    fn fisher_matches_r_on_the_tea_tasting_and_a_small_table() {
        // R, fisher.test(matrix(c(3, 1, 1, 3), 2)): p = 0.4857, conditional MLE 6.408309, interval
        // 0.2117329 to 621.9337. R finds all three with uniroot at its default tolerance; the exact
        // roots (scipy brentq at 1e-14 on the same noncentral hypergeometric equations) are
        // 6.4083197, 0.2117356 and 626.2435, which a tight solver must give.
        let tea = Table2x2::new(3, 1, 1, 3).fisher().unwrap();
        close(tea.p, 0.4857142857142856, 1e-9);
        close(tea.odds_ratio.value, 6.4083196582, 1e-7);
        close(tea.odds_ratio.low, 0.2117355954, 1e-9);
        close(tea.odds_ratio.high, 626.2435306, 1e-4);
        let rel = |got: f64, r: f64, tol: f64| assert!((got / r - 1.0).abs() < tol, "{got} vs R's {r}");
        rel(tea.odds_ratio.value, 6.408309, 1e-5);
        rel(tea.odds_ratio.low, 0.2117329, 2e-5);
        rel(tea.odds_ratio.high, 621.9337505, 0.01);
        // fisher.test(matrix(c(5, 2, 2, 8), 2)): p = 0.05841218, estimate 8.432004, interval
        // 0.7302472 to 162.8049; exact roots 8.4323582, 0.7302631, 162.7307.
        let small = Table2x2::new(5, 2, 2, 8).fisher().unwrap();
        close(small.p, 0.058_412_176_059_234_91, 1e-9);
        close(small.odds_ratio.value, 8.432358233, 1e-7);
        close(small.odds_ratio.low, 0.7302631463, 1e-9);
        close(small.odds_ratio.high, 162.7307345, 1e-4);
        rel(small.odds_ratio.value, 8.4320042515, 1e-4);
        rel(small.odds_ratio.low, 0.73024723722, 1e-4);
        rel(small.odds_ratio.high, 162.80487560806503, 0.01);
        // A zero cell: the interval is open on that side, the estimate infinite.
        let zero = Table2x2::new(4, 0, 1, 5).fisher().unwrap();
        assert!(zero.odds_ratio.value.is_infinite() && zero.odds_ratio.high.is_infinite());
        assert!(zero.odds_ratio.low > 0.0);
    }

    #[test]
    fn ratio_of_odds_ratios_is_the_difference_of_logs() {
        // By hand: OR 4 (var 0.04) over OR 1 (var 0.05): log 1.386294, se 0.3, z 4.62.
        let (e, p) = ratio_of_odds_ratios(4f64.ln(), 0.04, 0.0, 0.05);
        close(e.value, 4.0, 1e-12);
        close(e.low, (4f64.ln() - Z95 * 0.3).exp(), 1e-12);
        assert!(p < 1e-5);
    }
}
