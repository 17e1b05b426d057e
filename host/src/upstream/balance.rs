//! Balancing: which of an upstream's targets a request goes to (`balance`), among those the
//! caller says are usable. Everything a pick needs is built once, when the upstream is: the
//! round-robin schedule, the cumulative weights, the hash ring. A pick allocates nothing and
//! takes no lock.
//!
//! - `round_robin`: smooth weighted round robin, as nginx does it (weights 5, 1, 1 go
//!   a a b a c a a, not a a a a a b c), walked by one shared counter.
//! - `least_connections`: the fewest requests in flight for the weight, ties taken in turn.
//! - `random`: two targets drawn by weight, the one with fewer in flight (the power of two
//!   choices: nearly least-connections' spread, at the cost of two loads).
//! - `hash`: a consistent-hash ring with 160 points per unit of weight, placed by each
//!   target's URL, so every gateway process places them alike and a target added or removed
//!   moves only its own share of keys. A request without a key is sent round robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng as _;
use wasmgate_config::Balance;
use xxhash_rust::xxh3::xxh3_64;

/// Points on the hash ring per unit of weight, and the most points a ring may have.
const RING_POINTS: usize = 160;
const MAX_RING: usize = 1 << 18;
/// The longest round-robin schedule; heavier weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 1 << 16;

#[derive(Debug)]
pub struct Balancer {
    kind: Balance,
    weights: Box<[u32]>,
    /// `round_robin`, and keyless requests under `hash`: target indices in smooth-WRR order.
    schedule: Box<[u32]>,
    next: AtomicUsize,
    /// `random`: the running sum of the weights, to draw by weight.
    cumulative: Box<[u64]>,
    /// `hash`: (point, target), sorted by point.
    ring: Box<[(u64, u32)]>,
}

impl Balancer {
    /// A balancer over targets given as (URL, weight), in config order.
    pub fn new(kind: Balance, targets: &[(&str, u32)]) -> Self {
        let weights: Box<[u32]> = targets.iter().map(|(_, w)| (*w).max(1)).collect();
        let schedule = if matches!(kind, Balance::RoundRobin | Balance::Hash) {
            smooth_schedule(&weights)
        } else {
            Box::default()
        };
        let cumulative = weights
            .iter()
            .scan(0u64, |sum, w| {
                *sum += u64::from(*w);
                Some(*sum)
            })
            .collect();
        let ring = if kind == Balance::Hash {
            hash_ring(targets, &weights)
        } else {
            Box::default()
        };
        Self {
            kind,
            weights,
            schedule,
            next: AtomicUsize::new(0),
            cumulative,
            ring,
        }
    }

    /// The hash of a request's key, for [`Balancer::pick`].
    pub fn key(bytes: &[u8]) -> u64 {
        xxh3_64(bytes)
    }

    /// A target for the next request: one for which `usable` holds, or `None` if there is
    /// none. `key` is the request's hash key under `balance = "hash"`; `load` is a target's
    /// requests in flight, read by `least_connections` and `random`.
    pub fn pick(
        &self,
        key: Option<u64>,
        usable: impl Fn(usize) -> bool,
        load: impl Fn(usize) -> usize,
    ) -> Option<usize> {
        match (self.kind, key) {
            (Balance::RoundRobin, _) | (Balance::Hash, None) => self.round_robin(&usable),
            (Balance::Hash, Some(key)) => self.on_ring(key, &usable),
            (Balance::LeastConnections, _) => self.least_loaded(&usable, &load),
            (Balance::Random, _) => self.two_choices(&usable, &load),
        }
    }

    fn round_robin(&self, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..len)
            .map(|i| self.schedule[start.wrapping_add(i) % len] as usize)
            .find(|t| usable(*t))
    }

    fn on_ring(&self, key: u64, usable: &impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.ring.len();
        let start = self.ring.partition_point(|(point, _)| *point < key);
        (0..len)
            .map(|i| self.ring[(start + i) % len].1 as usize)
            .find(|t| usable(*t))
    }

    /// Whether `a` carries less load than `b` for their weights.
    fn lighter(&self, a: usize, b: usize, load: &impl Fn(usize) -> usize) -> bool {
        let (la, lb) = (load(a) as u64, load(b) as u64);
        la * u64::from(self.weights[b]) < lb * u64::from(self.weights[a])
    }

    fn least_loaded(
        &self,
        usable: &impl Fn(usize) -> bool,
        load: &impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let n = self.weights.len();
        // Scanning from a turning start takes tied targets in turn. The best so far keeps its
        // load and weight, so each target is read once.
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let mut best: Option<(usize, u64, u64)> = None;
        for i in 0..n {
            let t = if start + i < n {
                start + i
            } else {
                start + i - n
            };
            if !usable(t) {
                continue;
            }
            let (l, w) = (load(t) as u64, u64::from(self.weights[t]));
            if best.is_none_or(|(_, bl, bw)| l * bw < bl * w) {
                best = Some((t, l, w));
            }
        }
        best.map(|(t, _, _)| t)
    }

    fn two_choices(
        &self,
        usable: &impl Fn(usize) -> bool,
        load: &impl Fn(usize) -> usize,
    ) -> Option<usize> {
        let total = *self.cumulative.last()?;
        let mut rng = rand::rng();
        let mut draw = || {
            let x = rng.random_range(0..total);
            self.cumulative.partition_point(|sum| *sum <= x)
        };
        let (a, b) = (draw(), draw());
        match (usable(a), usable(b)) {
            (true, true) => Some(if self.lighter(b, a, load) { b } else { a }),
            (true, false) => Some(a),
            (false, true) => Some(b),
            // Both drawn are out: the least loaded of those left.
            (false, false) => self.least_loaded(usable, load),
        }
    }
}

/// nginx's smooth weighted round robin, unrolled into one cycle: each step every target gains
/// its weight, the richest is chosen and pays the total. Weights are first divided by their
/// greatest common divisor, and scaled down if their sum is still past [`MAX_SCHEDULE`].
fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().fold(0u32, |g, w| gcd(g, *w)).max(1);
    let mut w: Vec<i64> = weights.iter().map(|x| i64::from(x / g)).collect();
    let sum: u64 = w.iter().map(|x| *x as u64).sum();
    if sum > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x * MAX_SCHEDULE as i64 / sum as i64).max(1);
        }
    }
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    (0..total)
        .map(|_| {
            let mut best = 0;
            for i in 0..w.len() {
                current[i] += w[i];
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            best as u32
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn hash_ring(targets: &[(&str, u32)], weights: &[u32]) -> Box<[(u64, u32)]> {
    let sum: usize = weights.iter().map(|w| *w as usize).sum();
    let per_weight = (MAX_RING / sum.max(1)).clamp(1, RING_POINTS);
    let mut ring = Vec::with_capacity(sum * per_weight);
    let mut name = Vec::new();
    for (t, ((url, _), weight)) in targets.iter().zip(weights).enumerate() {
        for i in 0..(*weight as usize * per_weight) {
            name.clear();
            name.extend_from_slice(url.as_bytes());
            name.push(b'#');
            name.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            ring.push((xxh3_64(&name), t as u32));
        }
    }
    ring.sort_unstable();
    ring.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(weights: &[u32]) -> Vec<(String, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("http://10.0.0.{i}:80"), *w))
            .collect()
    }

    fn idle(_: usize) -> usize {
        0
    }

    fn balancer(kind: Balance, weights: &[u32]) -> Balancer {
        let t = targets(weights);
        let refs: Vec<(&str, u32)> = t.iter().map(|(u, w)| (u.as_str(), *w)).collect();
        Balancer::new(kind, &refs)
    }

    #[test]
    fn round_robin_is_smooth_and_by_weight() {
        let b = balancer(Balance::RoundRobin, &[5, 1, 1]);
        let order: Vec<usize> = (0..7)
            .map(|_| b.pick(None, |_| true, idle).unwrap())
            .collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        // Weights with a common divisor make the same short cycle.
        assert_eq!(balancer(Balance::RoundRobin, &[300, 100]).schedule.len(), 4);
        // Targets that are out are skipped; none usable is none.
        let b = balancer(Balance::RoundRobin, &[1, 1, 1]);
        let picks: Vec<usize> = (0..4)
            .map(|_| b.pick(None, |t| t != 1, idle).unwrap())
            .collect();
        assert!(picks.iter().all(|t| *t != 1), "{picks:?}");
        assert_eq!(b.pick(None, |_| false, idle), None);
        // Heavy weights are scaled into a bounded schedule, still in proportion.
        let b = balancer(Balance::RoundRobin, &[1000; 256]);
        assert_eq!(b.schedule.len(), 256);
        let b = balancer(Balance::RoundRobin, &[1000, 999, 1]);
        assert!(b.schedule.len() as u64 <= MAX_SCHEDULE);
    }

    #[test]
    fn least_connections_weighs_load_by_weight() {
        let b = balancer(Balance::LeastConnections, &[1, 1, 2]);
        // Loads 1, 0, 1 (2 has twice the weight): 1 is lightest.
        assert_eq!(b.pick(None, |_| true, |t| [1, 0, 1][t]), Some(1));
        // 1/1, 1/1, 1/2: the heavy target now.
        assert_eq!(b.pick(None, |_| true, |t| [1, 1, 1][t]), Some(2));
        assert_eq!(b.pick(None, |t| t != 2, |t| [0, 1, 0][t]), Some(0));
    }

    #[test]
    fn random_draws_by_weight_and_prefers_the_lighter() {
        let b = balancer(Balance::Random, &[3, 1]);
        let mut counts = [0usize; 2];
        for _ in 0..8000 {
            counts[b.pick(None, |_| true, idle).unwrap()] += 1;
        }
        // Two draws by weight 3:1, the lighter kept; with no load, the first: 3:1.
        let share = counts[0] as f64 / 8000.0;
        assert!((0.70..0.80).contains(&share), "{counts:?}");
        let busy = |t: usize| [5, 0][t];
        let to_idle = (0..1000)
            .filter(|_| b.pick(None, |_| true, busy) == Some(1))
            .count();
        // Target 1 wins whenever it is drawn at all: 1 - (3/4)^2 of the time.
        assert!((380..500).contains(&to_idle), "{to_idle}");
        assert_eq!(b.pick(None, |t| t == 1, idle), Some(1));
        assert_eq!(b.pick(None, |_| false, idle), None);
    }

    #[test]
    fn a_consistent_hash_moves_only_the_new_targets_share() {
        let three = balancer(Balance::Hash, &[1, 1, 1]);
        let four = balancer(Balance::Hash, &[1, 1, 1, 1]);
        let keys: Vec<u64> = (0..10_000)
            .map(|i| Balancer::key(format!("user-{i}").as_bytes()))
            .collect();
        let mut moved = 0;
        for k in &keys {
            let (before, after) = (
                three.pick(Some(*k), |_| true, idle).unwrap(),
                four.pick(Some(*k), |_| true, idle).unwrap(),
            );
            if before != after {
                assert_eq!(after, 3, "a key only ever moves to the new target");
                moved += 1;
            }
        }
        assert!((2000..3000).contains(&moved), "{moved} of 10000 moved");
        // The same key, the same target; one that is out sends its keys to the next point.
        let k = keys[0];
        let home = three.pick(Some(k), |_| true, idle).unwrap();
        assert_eq!(three.pick(Some(k), |_| true, idle), Some(home));
        let other = three.pick(Some(k), |t| t != home, idle).unwrap();
        assert_ne!(other, home);
        // No key: round robin.
        let spread: std::collections::HashSet<usize> = (0..3)
            .map(|_| three.pick(None, |_| true, idle).unwrap())
            .collect();
        assert_eq!(spread.len(), 3);
    }
}
