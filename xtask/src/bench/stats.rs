//! Medians, spreads and summaries of the runs, and how their numbers are written.

use super::wrk::Run;

pub(super) fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

pub(super) fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .copied()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

#[derive(Debug, Clone)]
pub(super) struct Summary {
    pub(super) rps: f64,
    pub(super) rps_range: (f64, f64),
    pub(super) p50: f64,
    pub(super) p50_range: (f64, f64),
    pub(super) p99: f64,
    pub(super) p99_range: (f64, f64),
    pub(super) cpu: Option<f64>,
    pub(super) rss_kib: Option<u64>,
    pub(super) errors: u64,
    pub(super) requests: u64,
    /// redis-server's CPU seconds per 10k requests and checks per request (medians).
    pub(super) redis: Option<(f64, f64)>,
}

pub(super) fn summarize(runs: &[Run]) -> Summary {
    let col = |f: fn(&Run) -> f64| runs.iter().map(f).collect::<Vec<_>>();
    let (rps, p50, p99) = (col(|r| r.rps), col(|r| r.p50_us), col(|r| r.p99_us));
    let cpus: Vec<f64> = runs.iter().filter_map(|r| r.cpu_s_per_10k).collect();
    let redis: Vec<(f64, f64)> = runs.iter().filter_map(|r| r.redis).collect();
    Summary {
        rps: median(&rps),
        rps_range: min_max(&rps),
        p50: median(&p50),
        p50_range: min_max(&p50),
        p99: median(&p99),
        p99_range: min_max(&p99),
        cpu: (!cpus.is_empty()).then(|| median(&cpus)),
        rss_kib: runs.iter().filter_map(|r| r.rss_kib).max(),
        errors: runs.iter().map(|r| r.errors).sum(),
        requests: runs.iter().map(|r| r.requests).sum(),
        redis: (!redis.is_empty()).then(|| {
            let col = |f: fn(&(f64, f64)) -> f64| redis.iter().map(f).collect::<Vec<_>>();
            (median(&col(|r| r.0)), median(&col(|r| r.1)))
        }),
    }
}

pub(super) fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

pub(super) fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}×", a / b)
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}
