//! The measures: population stability index and Jensen–Shannon divergence between two
//! histograms over the same bins, and the two-proportion z statistic.

/// Smoothing added to every bin's share, so an empty bin on one side gives a large but finite
/// term instead of infinity.
pub const EPSILON: f64 = 1e-4;

/// Shares of `counts` with [`EPSILON`] added to each bin and renormalized.
fn shares(counts: &[u64]) -> Vec<f64> {
    let total: f64 = counts.iter().map(|&c| c as f64).sum();
    let raw: Vec<f64> = counts
        .iter()
        .map(|&c| if total > 0.0 { c as f64 / total } else { 0.0 } + EPSILON)
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.into_iter().map(|p| p / sum).collect()
}

/// Population stability index of `live` against `reference` (same bins): Σ (l − r) ln(l / r)
/// over epsilon-smoothed shares. 0 when equal; 0.1 is a commonly used "look", 0.25 "act".
pub fn psi(reference: &[u64], live: &[u64]) -> f64 {
    let (r, l) = (shares(reference), shares(live));
    r.iter()
        .zip(&l)
        .map(|(&r, &l)| (l - r) * (l / r).ln())
        .sum::<f64>()
        .max(0.0)
}

/// Jensen–Shannon divergence (base 2, so in `[0, 1]`) of two histograms over the same bins.
pub fn jensen_shannon(reference: &[u64], live: &[u64]) -> f64 {
    let (r, l) = (shares(reference), shares(live));
    let kl = |p: &[f64], m: &[f64]| -> f64 {
        p.iter()
            .zip(m)
            .map(|(&p, &m)| if p > 0.0 { p * (p / m).log2() } else { 0.0 })
            .sum()
    };
    let m: Vec<f64> = r.iter().zip(&l).map(|(a, b)| 0.5 * (a + b)).collect();
    (0.5 * kl(&r, &m) + 0.5 * kl(&l, &m)).clamp(0.0, 1.0)
}

/// The pooled two-proportion z statistic of `live_hits / live_n` against `ref_hits / ref_n`
/// (positive when the live rate is higher); 0 when either side is empty or the pooled rate
/// is 0 or 1.
pub fn two_proportion_z(ref_hits: u64, ref_n: u64, live_hits: u64, live_n: u64) -> f64 {
    clustered_z([ref_hits, ref_n, ref_n], [live_hits, live_n, live_n])
}

/// The two-proportion z when trials come in units (`[hits, trials, units]`) whose trials
/// move together: the shares are per trial, the variance per unit — exact when each unit is
/// one trial, conservative (as if a unit's trials were one) otherwise.
pub fn clustered_z(reference: [u64; 3], live: [u64; 3]) -> f64 {
    let [h1, n1, u1] = reference;
    let [h2, n2, u2] = live;
    if n1 == 0 || n2 == 0 || u1 == 0 || u2 == 0 {
        return 0.0;
    }
    let (p1, p2) = (h1 as f64 / n1 as f64, h2 as f64 / n2 as f64);
    let p = (h1 + h2) as f64 / (n1 + n2) as f64;
    let se = (p * (1.0 - p) * (1.0 / u1 as f64 + 1.0 / u2 as f64)).sqrt();
    if se > 0.0 { (p2 - p1) / se } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        // Equal distributions: nothing.
        assert!(psi(&[10, 20, 30], &[20, 40, 60]) < 1e-9);
        assert!(jensen_shannon(&[10, 20, 30], &[1, 2, 3]) < 1e-9);
        // A textbook PSI: shares (0.5, 0.5) against (0.3, 0.7).
        let v = psi(&[50, 50], &[30, 70]);
        let want = (0.3 - 0.5) * (0.3f64 / 0.5).ln() + (0.7 - 0.5) * (0.7f64 / 0.5).ln();
        assert!((v - want).abs() < 1e-3, "{v} vs {want}");
        // Disjoint supports: JS is (almost) 1 bit, PSI large but finite.
        assert!(jensen_shannon(&[100, 0], &[0, 100]) > 0.99);
        assert!(psi(&[100, 0], &[0, 100]).is_finite());
        // 10% vs 12% on 10,000 each: z ≈ 4.5.
        let z = two_proportion_z(1000, 10_000, 1200, 10_000);
        assert!((z - 4.5).abs() < 0.1, "{z}");
        assert_eq!(two_proportion_z(0, 0, 5, 10), 0.0);
        // Trials in lists of twenty: the same shares, judged on the lists.
        let lists = clustered_z([1000, 10_000, 500], [1200, 10_000, 500]);
        assert!(lists > 0.0 && lists < z / 4.0, "{lists} vs {z}");
        assert_eq!(
            clustered_z([1000, 10_000, 10_000], [1200, 10_000, 10_000]),
            z
        );
    }

    proptest! {
        #[test]
        fn measures_are_bounded_and_symmetric_where_they_should_be(
            a in proptest::collection::vec(0u64..1000, 1..12),
            seed in proptest::collection::vec(0u64..1000, 12),
        ) {
            let b: Vec<u64> = seed[..a.len()].to_vec();
            let p = psi(&a, &b);
            let j = jensen_shannon(&a, &b);
            prop_assert!(p >= 0.0 && p.is_finite());
            prop_assert!((0.0..=1.0).contains(&j));
            // PSI is symmetric by construction; JS too.
            prop_assert!((p - psi(&b, &a)).abs() < 1e-9);
            prop_assert!((j - jensen_shannon(&b, &a)).abs() < 1e-9);
            // Scaling a histogram changes nothing.
            let a2: Vec<u64> = a.iter().map(|x| x * 3).collect();
            prop_assert!((psi(&a, &b) - psi(&a2, &b)).abs() < 1e-6);
        }
    }
}
