//! An upstream's targets as it sends to them: each [`Endpoint`] (one target address) carries
//! everything known about it (requests in flight, health, ejection, its HTTP/2 connections,
//! counts, the last error), and a [`Set`] is the targets an upstream balances over now. A
//! set is replaced whole when discovery finds other targets; an endpoint that stays is kept,
//! with its state and warm connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::balance::Balancer;
use super::tls::TlsTarget;
use super::{h2, health, outlier};
use crate::config::Balance;
use crate::wire::Target;

/// One target, and what the upstream knows of it.
#[derive(Debug)]
pub struct Endpoint {
    /// Unique in the process: the key of its connections in the pools.
    pub id: u64,
    /// Its URL, as configured or discovered.
    pub url: Arc<str>,
    pub target: Target,
    pub tls: Option<TlsTarget>,
    pub weight: u32,
    in_flight: AtomicUsize,
    pub outlier: outlier::State,
    pub health: health::State,
    /// For an HTTP/2 upstream: one connection slot per worker, and one for health checks.
    pub h2: Option<h2::Slots>,
    pub counts: Counts,
    last_error: Mutex<Option<String>>,
}

/// What became of the requests sent to an endpoint.
#[derive(Debug, Default)]
pub struct Counts {
    /// Answered, not with a 5xx.
    pub ok: AtomicU64,
    /// Answered with a 5xx.
    pub error_status: AtomicU64,
    /// No answer: connect errors, resets, timeouts, malformed responses.
    pub failed: AtomicU64,
}

impl Endpoint {
    pub fn new(
        url: Arc<str>,
        target: Target,
        tls: Option<TlsTarget>,
        weight: u32,
        h2: Option<h2::Slots>,
    ) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Self {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            url,
            target,
            tls,
            weight,
            in_flight: AtomicUsize::new(0),
            outlier: outlier::State::default(),
            health: health::State::default(),
            h2,
            counts: Counts::default(),
            last_error: Mutex::new(None),
        }
    }

    /// Requests sent to it and not yet done with.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight to it until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub fn set_last_error(&self, e: String) {
        *self.last_error.lock() = Some(e);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// One request's place in its endpoint's load, given back on drop.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The targets an upstream balances over now, and its balancer over them.
#[derive(Debug)]
pub struct Set {
    pub endpoints: Box<[Arc<Endpoint>]>,
    pub balancer: Balancer,
}

impl Set {
    pub fn new(kind: Balance, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let weighted: Vec<(&str, u32)> = endpoints.iter().map(|e| (&*e.url, e.weight)).collect();
        Self {
            balancer: Balancer::new(kind, &weighted),
            endpoints: endpoints.into_boxed_slice(),
        }
    }
}
