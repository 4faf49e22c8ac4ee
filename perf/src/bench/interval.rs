//! How sure a percentile is: distribution-free confidence intervals for a
//! quantile from the order statistics of the sample (the binomial method).
//!
//! Of `n` independent samples, the number below the true `q`-quantile is
//! Binomial(n, q). So the `l`-th smallest sample lies below the quantile
//! with probability P(B ≥ l), and the `u`-th smallest above it with
//! probability P(B < u). The interval [x(l), x(u)] with P(B < l) ≤ α/2 and
//! P(B ≥ u) ≤ α/2 covers the quantile with probability at least 1 − α,
//! whatever the latency distribution. No such `u` exists when even the
//! largest sample is too likely to lie below the quantile: 2,000 samples
//! cannot bound a p99.9 from above at 95 % (0.999^2000 = 0.135 > 0.025;
//! it takes 3,688), and
//! the interval is then open upwards.
//!
//! Caveat, written in the report too: the method assumes independent
//! samples. Latencies come in bursts (one stall delays the requests queued
//! behind it), so the true uncertainty is larger than these intervals; an
//! interval that already overlaps another settles nothing.

/// The ranks (1-based, of the sorted sample) bounding the `q`-quantile of
/// `n` samples at confidence `conf`: `(Some(l), Some(u))`, or `None` on a
/// side the sample cannot bound (below its smallest or above its largest
/// value). `None, None` for no samples or `q` outside (0, 1).
pub fn rank_interval(n: u64, q: f64, conf: f64) -> (Option<u64>, Option<u64>) {
    if n == 0 || q <= 0.0 || q >= 1.0 || !(0.0..1.0).contains(&conf) {
        return (None, None);
    }
    let tail = (1.0 - conf) / 2.0;
    let (ln_q, ln_r) = (q.ln(), (1.0 - q).ln());
    let odds = ln_q - ln_r;
    // Lower: the largest l with P(B <= l - 1) <= tail. Walk k = 0, 1, ...
    // with ln P(B = k) in log space (P(B = 0) = (1 - q)^n underflows).
    let mut lo = None;
    let mut ln_pmf = n as f64 * ln_r;
    let mut cdf = 0.0;
    for k in 0..n {
        cdf += ln_pmf.exp();
        if cdf > tail {
            break;
        }
        lo = Some(k + 1); // P(B <= k) <= tail: rank k + 1 is below the quantile often enough.
        ln_pmf += ((n - k) as f64 / (k + 1) as f64).ln() + odds;
    }
    // Upper: the smallest u with P(B >= u) <= tail. Walk k = n, n - 1, ...
    let mut hi = None;
    let mut ln_pmf = n as f64 * ln_q;
    let mut sf = 0.0;
    for k in (1..=n).rev() {
        sf += ln_pmf.exp();
        if sf > tail {
            break;
        }
        hi = Some(k); // P(B >= k) <= tail.
        ln_pmf += (k as f64 / (n - k + 1) as f64).ln() - odds;
    }
    (lo, hi)
}

/// A confidence interval; `None` on a side means unbounded on that side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

impl Interval {
    /// The interval of `q`-quantiles of `n` samples, read at ranks by `at_rank`.
    pub fn of_quantile(n: u64, q: f64, conf: f64, at_rank: impl Fn(u64) -> f64) -> Self {
        let (lo, hi) = rank_interval(n, q, conf);
        Self { lo: lo.map(&at_rank), hi: hi.map(&at_rank) }
    }

    /// Every difference `a - b` of a value in `self` and one in `other`:
    /// the interval of a difference of two independent estimates, at
    /// least as wide as either (conservative: two 95 % intervals).
    pub fn minus(self, other: Self) -> Self {
        Self { lo: self.lo.zip(other.hi).map(|(a, b)| a - b), hi: self.hi.zip(other.lo).map(|(a, b)| a - b) }
    }

    /// Both ends times a positive factor.
    pub fn times(self, k: f64) -> Self {
        Self { lo: self.lo.map(|v| v * k), hi: self.hi.map(|v| v * k) }
    }

    /// `[+40, +70]` (signed, for differences) or `[40, 70]`; `[40, ∞)` when
    /// open above, `(−∞, 70]` when open below.
    pub fn text(self, signed: bool) -> String {
        let num = |v: f64| if signed { format!("{v:+.0}") } else { format!("{v:.0}") };
        let lo = self.lo.map_or("(−∞".to_string(), |v| format!("[{}", num(v)));
        let hi = self.hi.map_or("∞)".to_string(), |v| format!("{}]", num(v)));
        format!("{lo}, {hi}")
    }

    /// `[lo, hi]` for the JSON, `null` on an open side.
    pub fn json(self) -> serde_json::Value {
        serde_json::json!([self.lo, self.hi])
    }
}

/// Whether a target "a ≤ b" holds, judged on two intervals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// All of `a`'s interval lies at or below all of `b`'s.
    Met,
    /// All of `a`'s interval lies above all of `b`'s.
    NotMet,
    /// The intervals overlap (or are open on the deciding side): this run
    /// cannot tell.
    Unresolved,
}

impl Verdict {
    /// `a ≤ b`, with each side's 95 % interval.
    pub fn at_most(a: Interval, b: Interval) -> Self {
        match (a.hi, b.lo, a.lo, b.hi) {
            (Some(ah), Some(bl), _, _) if ah <= bl => Self::Met,
            (_, _, Some(al), Some(bh)) if al > bh => Self::NotMet,
            _ => Self::Unresolved,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "not met",
            Self::Unresolved => "not resolved",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_need_intervals_apart() {
        let iv = |lo: Option<f64>, hi: Option<f64>| Interval { lo, hi };
        let a = iv(Some(10.0), Some(20.0));
        assert_eq!(Verdict::at_most(a, iv(Some(20.0), Some(30.0))), Verdict::Met);
        assert_eq!(Verdict::at_most(a, iv(Some(1.0), Some(9.0))), Verdict::NotMet);
        assert_eq!(Verdict::at_most(a, iv(Some(15.0), Some(30.0))), Verdict::Unresolved);
        // Open above: never provably at most anything; may still be above.
        let open = iv(Some(10.0), None);
        assert_eq!(Verdict::at_most(open, iv(Some(100.0), Some(200.0))), Verdict::Unresolved);
        assert_eq!(Verdict::at_most(open, iv(Some(1.0), Some(9.0))), Verdict::NotMet);
        // Differences widen: [10, 20] - [1, 2] = [8, 19]; halving halves.
        assert_eq!(a.minus(iv(Some(1.0), Some(2.0))), iv(Some(8.0), Some(19.0)));
        assert_eq!(a.times(0.5), iv(Some(5.0), Some(10.0)));
        assert_eq!(open.minus(a), iv(Some(-10.0), None));
        assert_eq!(open.minus(a).text(true), "[-10, ∞)");
        assert_eq!(a.text(true), "[+10, +20]");
        assert_eq!(iv(None, Some(20.0)).text(false), "(−∞, 20]");
    }

    #[test]
    fn the_median_of_a_hundred_matches_the_textbook() {
        // The classical table: the 95 % interval of the median of 100
        // samples is [x(40), x(61)].
        assert_eq!(rank_interval(100, 0.5, 0.95), (Some(40), Some(61)));
        // Symmetric for a symmetric quantile, and wider at 99 %.
        let (l, u) = rank_interval(100, 0.5, 0.99);
        assert!(l.unwrap() < 40 && u.unwrap() > 61, "{l:?} {u:?}");
    }

    #[test]
    fn two_thousand_samples_cannot_bound_a_p999_from_above() {
        // The s1 scenario (100 req/s for 20 s): 0.999^2000 = 0.135 > 0.025.
        let (l, u) = rank_interval(2000, 0.999, 0.95);
        assert_eq!(u, None);
        // Below: P(A >= 6) = 0.0166 <= 0.025 < P(A >= 5) = 0.053 for the
        // number A above the quantile (Binomial(2000, 0.001)): x(1995).
        assert_eq!(l, Some(1995));
        // 3,688 samples are the fewest that bound it (0.999^n <= 0.025).
        assert_eq!(rank_interval(3687, 0.999, 0.95).1, None);
        assert_eq!(rank_interval(3688, 0.999, 0.95).1, Some(3688));
    }

    #[test]
    fn many_samples_give_a_narrow_interval_around_the_quantile() {
        let n = 1_200_000;
        let (l, u) = rank_interval(n, 0.999, 0.95);
        let (l, u) = (l.unwrap(), u.unwrap());
        let centre = (n as f64 * 0.999) as u64;
        // ±1.96 sd of Binomial(n, 0.001): sd = sqrt(1199) ≈ 34.6.
        assert!(l < centre && centre < u, "{l} {centre} {u}");
        assert!((60..=75).contains(&(centre - l)) && (60..=75).contains(&(u - centre)), "{l} {u}");
    }

    #[test]
    fn degenerate_inputs_bound_nothing() {
        assert_eq!(rank_interval(0, 0.5, 0.95), (None, None));
        assert_eq!(rank_interval(10, 1.0, 0.95), (None, None));
        assert_eq!(rank_interval(10, 0.0, 0.95), (None, None));
        assert_eq!(rank_interval(10, 0.5, 1.0), (None, None));
        // One sample: the median can be bounded on neither side at 95 %.
        assert_eq!(rank_interval(1, 0.5, 0.95), (None, None));
    }

    #[test]
    fn values_are_read_at_the_ranks() {
        let sorted: Vec<f64> = (1..=100).map(|i| i as f64 * 10.0).collect();
        let iv = Interval::of_quantile(100, 0.5, 0.95, |r| sorted[r as usize - 1]);
        assert_eq!((iv.lo, iv.hi), (Some(400.0), Some(610.0)));
    }
}
