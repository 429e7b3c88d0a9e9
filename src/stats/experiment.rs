//! Treated-vs-holdout statistics for playbook rollouts, where the randomised unit is a seller and
//! the outcome is measured on their deals: deterministic assignment, a difference in means with
//! cluster-robust (by seller) variance, CUPED adjustment, randomisation inference and the minimum
//! detectable effect. Deals of one seller are correlated, so every variance here is by cluster.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// A uniform number in [0, 1) fixed by the key (a proposal id) and the unit (a seller id): the
/// same pair always lands in the same arm, on any machine, in any run (FNV-1a 64, top 53 bits).
pub fn assignment_uniform(key: &str, unit: &str) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.bytes().chain(std::iter::once(0x1f)).chain(unit.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // One more mixing round (splitmix64's finaliser): FNV's low-entropy high bits alone would put
    // ids that differ only in their last character into neighbouring buckets.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58476d1ce4e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d049bb133111eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether `unit` is treated under the rollout keyed by `key` with `treated_share` treated.
pub fn is_treated(key: &str, unit: &str, treated_share: f64) -> bool {
    assignment_uniform(key, unit) < treated_share
}

/// One deal in a readout: its seller (the cluster), its arm, its outcome (0/1 or a value) and the
/// seller's pre-period outcome (the CUPED covariate; None when the seller had no pre-period deals).
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub cluster: String,
    pub treated: bool,
    pub y: f64,
    pub pre: Option<f64>,
}

/// The treated-minus-holdout difference with its cluster-robust interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub estimate: f64,
    pub se: f64,
    /// Degrees of freedom of the t interval: clusters in the smaller arm minus one.
    pub df: f64,
    pub low: f64,
    pub high: f64,
    pub p: f64,
    pub treated_mean: f64,
    pub holdout_mean: f64,
    pub treated_n: usize,
    pub holdout_n: usize,
    pub treated_clusters: usize,
    pub holdout_clusters: usize,
}

fn t_quantile(p: f64, df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df.max(1.0)).map(|t| t.inverse_cdf(p)).unwrap_or(f64::NAN)
}

fn t_two_sided(t: f64, df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df.max(1.0)).map(|d| 2.0 * (1.0 - d.cdf(t.abs()))).unwrap_or(f64::NAN)
}

/// Difference in means, treated minus holdout, of `value(unit)`. The variance of each arm's mean
/// is the cluster-robust (CR1) one, sum over its clusters of the squared within-cluster sums of
/// residuals over n^2, times G/(G-1); the interval is t with (smaller arm's clusters - 1) degrees
/// of freedom, conservative when clusters are few. None without two clusters in each arm.
pub fn clustered_difference(units: &[Unit], value: impl Fn(&Unit) -> f64) -> Option<Difference> {
    let arm = |treated: bool| -> Option<(f64, f64, usize, usize)> {
        let rows: Vec<(&str, f64)> =
            units.iter().filter(|u| u.treated == treated).map(|u| (u.cluster.as_str(), value(u))).collect();
        let n = rows.len();
        if n == 0 {
            return None;
        }
        let mean = rows.iter().map(|r| r.1).sum::<f64>() / n as f64;
        let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
        for (c, v) in &rows {
            *sums.entry(c).or_default() += v - mean;
        }
        let g = sums.len();
        if g < 2 {
            return None;
        }
        let var = sums.values().map(|s| s * s).sum::<f64>() / (n as f64).powi(2) * g as f64 / (g as f64 - 1.0);
        Some((mean, var, n, g))
    };
    let (tm, tv, tn, tg) = arm(true)?;
    let (hm, hv, hn, hg) = arm(false)?;
    let estimate = tm - hm;
    let se = (tv + hv).sqrt();
    let df = (tg.min(hg) - 1) as f64;
    let q = t_quantile(0.975, df);
    let p = if se > 0.0 { t_two_sided(estimate / se, df) } else { f64::NAN };
    Some(Difference {
        estimate,
        se,
        df,
        low: estimate - q * se,
        high: estimate + q * se,
        p,
        treated_mean: tm,
        holdout_mean: hm,
        treated_n: tn,
        holdout_n: hn,
        treated_clusters: tg,
        holdout_clusters: hg,
    })
}

/// CUPED: the outcome minus theta times the centred pre-period covariate, theta = cov(y, x) /
/// var(x) over all units. Units without a covariate take the mean (no adjustment). Returns theta
/// and the share of the outcome's variance removed; the estimate stays unbiased because the
/// covariate was fixed before assignment.
pub fn cuped(units: &[Unit]) -> (Vec<Unit>, f64, f64) {
    let with: Vec<(f64, f64)> = units.iter().filter_map(|u| u.pre.map(|x| (u.y, x))).collect();
    if with.len() < 3 {
        return (units.to_vec(), 0.0, 0.0);
    }
    let n = with.len() as f64;
    let (my, mx) = (with.iter().map(|p| p.0).sum::<f64>() / n, with.iter().map(|p| p.1).sum::<f64>() / n);
    let cov = with.iter().map(|(y, x)| (y - my) * (x - mx)).sum::<f64>() / (n - 1.0);
    let var_x = with.iter().map(|(_, x)| (x - mx).powi(2)).sum::<f64>() / (n - 1.0);
    if var_x <= 0.0 {
        return (units.to_vec(), 0.0, 0.0);
    }
    let theta = cov / var_x;
    let adjusted: Vec<Unit> =
        units.iter().map(|u| Unit { y: u.y - theta * (u.pre.unwrap_or(mx) - mx), ..u.clone() }).collect();
    let var = |v: &[Unit]| {
        let m = v.iter().map(|u| u.y).sum::<f64>() / v.len() as f64;
        v.iter().map(|u| (u.y - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0).max(1.0)
    };
    let (before, after) = (var(units), var(&adjusted));
    let reduction = if before > 0.0 { (1.0 - after / before).max(0.0) } else { 0.0 };
    (adjusted, theta, reduction)
}

/// Randomisation inference: the share of `draws` re-assignments of whole clusters (the same
/// number treated as in the rollout) whose |difference| is at least the observed one, with the
/// observed assignment counted once. Seeded by `seed`, so a readout is reproducible.
pub fn randomisation_p(units: &[Unit], draws: usize, seed: u64) -> Option<f64> {
    let observed = clustered_difference(units, |u| u.y)?.estimate.abs();
    let mut clusters: Vec<&str> = units.iter().map(|u| u.cluster.as_str()).collect();
    clusters.sort();
    clusters.dedup();
    let treated: usize = clusters.iter().filter(|c| units.iter().any(|u| u.cluster == **c && u.treated)).count();
    let index: BTreeMap<&str, usize> = clusters.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let (mut sums, mut counts) = (vec![0.0; clusters.len()], vec![0usize; clusters.len()]);
    for u in units {
        sums[index[u.cluster.as_str()]] += u.y;
        counts[index[u.cluster.as_str()]] += 1;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..clusters.len()).collect();
    let mut extreme = 0usize;
    for _ in 0..draws {
        order.shuffle(&mut rng);
        let (mut ts, mut tn, mut hs, mut hn) = (0.0, 0usize, 0.0, 0usize);
        for (rank, &c) in order.iter().enumerate() {
            if rank < treated {
                ts += sums[c];
                tn += counts[c];
            } else {
                hs += sums[c];
                hn += counts[c];
            }
        }
        if tn > 0 && hn > 0 && (ts / tn as f64 - hs / hn as f64).abs() >= observed - 1e-12 {
            extreme += 1;
        }
    }
    Some((1 + extreme) as f64 / (1 + draws) as f64)
}

/// The smallest true difference a two-sided 5% test would detect with 80% power, given the
/// standard error the data have now.
pub fn minimum_detectable_effect(se: f64, df: f64) -> f64 {
    (t_quantile(0.975, df) + t_quantile(0.80, df)) * se
}

/// Welch's two-sample t interval for a difference in means of independent values (sellers'
/// before/after changes in a difference-in-differences): (estimate, low, high, p).
pub fn welch(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64, f64)> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let stats = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (m, v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0), v.len() as f64)
    };
    let ((ma, va, na), (mb, vb, nb)) = (stats(a), stats(b));
    let se2 = va / na + vb / nb;
    if se2 <= 0.0 {
        return None;
    }
    let df = se2.powi(2) / ((va / na).powi(2) / (na - 1.0) + (vb / nb).powi(2) / (nb - 1.0));
    let (d, se) = (ma - mb, se2.sqrt());
    let q = t_quantile(0.975, df);
    Some((d, d - q * se, d + q * se, t_two_sided(d / se, df)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(c: &str, t: bool, y: f64) -> Unit {
        Unit { cluster: c.into(), treated: t, y, pre: None }
    }

    #[test]
    fn assignment_is_stable_and_near_its_share() {
        assert_eq!(assignment_uniform("p1", "005A"), assignment_uniform("p1", "005A"));
        assert_ne!(assignment_uniform("p1", "005A"), assignment_uniform("p2", "005A"));
        let treated = (0..10_000).filter(|i| is_treated("proposal-x", &format!("005{i:05}"), 0.8)).count();
        // Binomial(10000, 0.8): sd 40; 4 sd either side.
        assert!((7840..=8160).contains(&treated), "{treated}");
    }

    #[test]
    fn clustered_difference_by_hand() {
        // Treated: clusters a (1, 1), b (0); holdout: c (0, 0), d (1).
        let units = vec![
            unit("a", true, 1.0),
            unit("a", true, 1.0),
            unit("b", true, 0.0),
            unit("c", false, 0.0),
            unit("c", false, 0.0),
            unit("d", false, 1.0),
        ];
        let d = clustered_difference(&units, |u| u.y).unwrap();
        // Means 2/3 and 1/3. Treated residual sums: a 2/3, b -2/3 -> (8/9)/9 * 2 = 16/81.
        // Holdout: c -2/3, d 2/3 -> the same 16/81. se = sqrt(32/81).
        assert!((d.estimate - 1.0 / 3.0).abs() < 1e-12);
        assert!((d.se - (32.0f64 / 81.0).sqrt()).abs() < 1e-12);
        assert_eq!(d.df, 1.0);
        // t(0.975, 1) = 12.7062.
        assert!((d.high - (1.0 / 3.0 + 12.7062 * d.se)).abs() < 1e-3);
    }

    #[test]
    fn cuped_removes_the_variance_the_covariate_explains() {
        let units: Vec<Unit> = (0..40)
            .map(|i| {
                let x = f64::from(i % 10) / 10.0;
                Unit {
                    cluster: format!("s{}", i % 10),
                    treated: i % 10 < 5,
                    y: x + 0.01 * f64::from(i % 3),
                    pre: Some(x),
                }
            })
            .collect();
        let (adjusted, theta, reduction) = cuped(&units);
        assert!((theta - 1.0).abs() < 0.05, "{theta}");
        assert!(reduction > 0.95, "{reduction}");
        assert_eq!(adjusted.len(), units.len());
    }

    #[test]
    fn randomisation_p_of_a_perfect_split_is_small_and_of_no_effect_large() {
        let mut units = Vec::new();
        for c in 0..12 {
            for _ in 0..5 {
                units.push(unit(&format!("s{c}"), c < 6, if c < 6 { 1.0 } else { 0.0 }));
            }
        }
        // 924 ways to pick 6 of 12: only 2 are as extreme.
        let p = randomisation_p(&units, 4000, 7).unwrap();
        assert!(p < 0.01, "{p}");
        for u in &mut units {
            u.y = 0.5;
        }
        assert!(randomisation_p(&units, 500, 7).unwrap() > 0.99);
    }

    #[test]
    fn welch_matches_r() {
        // By hand: difference -3, se sqrt(2.5/5 + 10/5) = 1.5811, t = -1.8974, Welch df 5.882;
        // R's t.test(1:5, c(2,4,6,8,10)) gives p = 0.1075 and the interval -6.88 .. 0.88.
        let (d, lo, hi, p) = welch(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 4.0, 6.0, 8.0, 10.0]).unwrap();
        assert!((d + 3.0).abs() < 1e-12);
        assert!((p - 0.1075).abs() < 5e-4, "{p}");
        assert!((lo + 6.88).abs() < 0.01 && (hi - 0.88).abs() < 0.01, "{lo} {hi}");
    }
}
