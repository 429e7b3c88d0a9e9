//! Mantel-Haenszel pooling when one unit (a deal) contributes rows to several strata (the stages it
//! entered): the pooled odds and risk ratios with a cluster-robust variance, from per-deal
//! signatures (which stratum each of its rows is in, exposed or not, outcome or not) and how many
//! deals share each signature.
//!
//! The variance is the sandwich of the Mantel-Haenszel estimating equation (large-strata
//! asymptotics): each row's centred influence on ΣR and ΣS is summed per deal, and the deals'
//! sums squared. With one row per deal it agrees with Robins-Breslow-Greenland on large strata.

use std::collections::BTreeMap;

use crate::stats::{Estimate, Table2x2, breslow_day, normal_two_sided};

/// One row of a deal: its stratum, exposed, outcome.
pub type Row = (i64, bool, bool);

/// A deal signature (its rows) and how many deals have exactly those rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub rows: Vec<Row>,
    pub deals: f64,
}

/// A pooled estimate over strata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pooled {
    pub odds_ratio: Estimate,
    pub risk_ratio: Option<Estimate>,
    /// Cluster-robust Wald test of log OR = 0.
    pub p: f64,
    pub log_or: f64,
    pub var_log_or: f64,
    /// Breslow-Day p-value of homogeneity over strata (None with fewer than two).
    pub homogeneity_p: Option<f64>,
    pub strata: usize,
}

/// Cells per stratum, summed over signatures.
pub fn cells(sigs: &[Signature]) -> BTreeMap<i64, Table2x2> {
    let mut out: BTreeMap<i64, Table2x2> = BTreeMap::new();
    for s in sigs {
        for &(k, x, y) in &s.rows {
            let t = out.entry(k).or_default();
            match (x, y) {
                (true, true) => t.a += s.deals,
                (true, false) => t.b += s.deals,
                (false, true) => t.c += s.deals,
                (false, false) => t.d += s.deals,
            }
        }
    }
    out
}

/// Deals with at least one exposed row, and with at least one unexposed row.
pub fn deals_by_side(sigs: &[Signature]) -> (f64, f64) {
    let exposed = sigs.iter().filter(|s| s.rows.iter().any(|r| r.1)).map(|s| s.deals).sum();
    let unexposed = sigs.iter().filter(|s| s.rows.iter().any(|r| !r.1)).map(|s| s.deals).sum();
    (exposed, unexposed)
}

/// The Mantel-Haenszel pooled odds and risk ratios over the strata of `sigs`, with cluster-robust
/// intervals. `collapse` pools every row into one stratum (the naive comparison). None when the
/// pooled odds ratio is 0 or infinite, or no stratum has both sides.
pub fn pooled(sigs: &[Signature], collapse: bool) -> Option<Pooled> {
    let key = |k: i64| if collapse { 0 } else { k };
    let mut strata: BTreeMap<i64, Table2x2> = BTreeMap::new();
    for (k, t) in cells(sigs) {
        let e = strata.entry(key(k)).or_default();
        e.a += t.a;
        e.b += t.b;
        e.c += t.c;
        e.d += t.d;
    }
    let usable = |t: &Table2x2| t.exposed() > 0.0 && t.unexposed() > 0.0 && t.n() >= 2.0;
    let (mut r_or, mut s_or, mut r_rr, mut s_rr) = (0.0, 0.0, 0.0, 0.0);
    for t in strata.values().filter(|t| usable(t)) {
        let n = t.n();
        r_or += t.a * t.d / n;
        s_or += t.b * t.c / n;
        r_rr += t.a * t.unexposed() / n;
        s_rr += t.c * t.exposed() / n;
    }
    if r_or == 0.0 || s_or == 0.0 {
        return None;
    }
    let (psi_or, psi_rr) = (r_or / s_or, if s_rr > 0.0 { r_rr / s_rr } else { f64::NAN });
    let (mut v_or, mut v_rr) = (0.0, 0.0);
    for s in sigs {
        let (mut phi_or, mut phi_rr) = (0.0, 0.0);
        for &(k, x, y) in &s.rows {
            let t = &strata[&key(k)];
            if !usable(t) {
                continue;
            }
            let n = t.n();
            let (n1, n0) = (t.exposed(), t.unexposed());
            let (rk, sk) = (t.a * t.d / n, t.b * t.c / n);
            let if_r = f64::from(u8::from(x && y)) * t.d / n + f64::from(u8::from(!x && !y)) * t.a / n - 2.0 * rk / n;
            let if_s = f64::from(u8::from(x && !y)) * t.c / n + f64::from(u8::from(!x && y)) * t.b / n - 2.0 * sk / n;
            phi_or += if_r - psi_or * if_s;
            let (rk, sk) = (t.a * n0 / n, t.c * n1 / n);
            let if_r = f64::from(u8::from(x && y)) * n0 / n + f64::from(u8::from(!x)) * t.a / n - 2.0 * rk / n;
            let if_s = f64::from(u8::from(!x && y)) * n1 / n + f64::from(u8::from(x)) * t.c / n - 2.0 * sk / n;
            phi_rr += if_r - psi_rr * if_s;
        }
        v_or += s.deals * phi_or * phi_or;
        v_rr += s.deals * phi_rr * phi_rr;
    }
    let var_log_or = v_or / (s_or * s_or) / (psi_or * psi_or);
    let risk_ratio = (psi_rr.is_finite() && psi_rr > 0.0)
        .then(|| Estimate::from_log(psi_rr.ln(), v_rr / (s_rr * s_rr) / (psi_rr * psi_rr)));
    let used: Vec<Table2x2> = strata.values().filter(|t| usable(t)).copied().collect();
    let homogeneity_p = if collapse { None } else { breslow_day(&used, psi_or).map(|(_, _, p)| p) };
    let log_or = psi_or.ln();
    Some(Pooled {
        odds_ratio: Estimate::from_log(log_or, var_log_or),
        risk_ratio,
        p: normal_two_sided(log_or / var_log_or.sqrt()),
        log_or,
        var_log_or,
        homogeneity_p,
        strata: used.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::mantel_haenszel;

    /// The Berkeley admissions tables (the fixture the 2x2 tests use) as signatures: one row per
    /// applicant, department = stratum.
    fn berkeley() -> Vec<Signature> {
        let mut out = Vec::new();
        for (k, t) in crate::stats::tables::fixtures::berkeley().iter().enumerate() {
            for (x, y, n) in [(true, true, t.a), (true, false, t.b), (false, true, t.c), (false, false, t.d)] {
                out.push(Signature { rows: vec![(k as i64, x, y)], deals: n });
            }
        }
        out
    }

    #[test]
    fn one_row_per_unit_agrees_with_robins_breslow_greenland() {
        let sigs = berkeley();
        let p = pooled(&sigs, false).unwrap();
        let tables: Vec<Table2x2> = cells(&sigs).into_values().collect();
        let mh = mantel_haenszel(&tables).unwrap();
        assert!((p.odds_ratio.value - mh.odds_ratio.value).abs() < 1e-12);
        assert!((p.risk_ratio.unwrap().value - mh.risk_ratio.unwrap().value).abs() < 1e-12);
        // Large strata: the sandwich and the RBG widths agree to within a few percent.
        let w_robust = p.odds_ratio.high.ln() - p.odds_ratio.low.ln();
        let w_rbg = mh.odds_ratio.high.ln() - mh.odds_ratio.low.ln();
        assert!((w_robust / w_rbg - 1.0).abs() < 0.03, "{w_robust} vs {w_rbg}");
        let w_rr = p.risk_ratio.unwrap().high.ln() - p.risk_ratio.unwrap().low.ln();
        let w_gr = mh.risk_ratio.unwrap().high.ln() - mh.risk_ratio.unwrap().low.ln();
        assert!((w_rr / w_gr - 1.0).abs() < 0.03, "{w_rr} vs {w_gr}");
    }

    #[test]
    fn a_unit_counted_in_two_strata_does_not_narrow_the_interval() {
        // Every applicant appears twice, in department k and in a copy k + 10 with the same row:
        // the same information, so the robust interval must stay as wide as with one copy, while
        // treating the rows as independent would narrow it by sqrt(2).
        let once = berkeley();
        let twice: Vec<Signature> = once
            .iter()
            .map(|s| {
                let (k, x, y) = s.rows[0];
                Signature { rows: vec![(k, x, y), (k + 10, x, y)], deals: s.deals }
            })
            .collect();
        let a = pooled(&once, false).unwrap();
        let b = pooled(&twice, false).unwrap();
        assert!((a.odds_ratio.value - b.odds_ratio.value).abs() < 1e-12);
        assert!((a.var_log_or / b.var_log_or - 1.0).abs() < 1e-9, "{} vs {}", a.var_log_or, b.var_log_or);
        let naive: Vec<Table2x2> = cells(&twice).into_values().collect();
        let naive = mantel_haenszel(&naive).unwrap();
        let w_naive = naive.odds_ratio.high.ln() - naive.odds_ratio.low.ln();
        let w_b = b.odds_ratio.high.ln() - b.odds_ratio.low.ln();
        assert!((w_b / w_naive - 2f64.sqrt()).abs() < 0.05, "{w_b} vs {w_naive}");
    }

    #[test]
    fn collapsing_the_strata_gives_the_crude_table() {
        // Berkeley crude: 1198 of 2691 men admitted, 557 of 1835 women: OR 1.84 (the Simpson's
        // paradox the departments reverse), RR 1.467.
        let p = pooled(&berkeley(), true).unwrap();
        assert!((p.odds_ratio.value - (1198.0 * 1278.0) / (1493.0 * 557.0)).abs() < 1e-9);
        assert!((p.risk_ratio.unwrap().value - (1198.0 / 2691.0) / (557.0 / 1835.0)).abs() < 1e-9);
        assert!(p.homogeneity_p.is_none());
    }
}
