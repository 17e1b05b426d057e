//! A bound on silence: how long a peer may make no progress (send no byte, read no byte)
//! while the gateway waits on it. One timer per stream, made at its first wait and moved on,
//! so a stream that never has to wait costs no timer at all.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

#[derive(Debug)]
pub struct Silence {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` holds the deadline of the wait in progress.
    armed: bool,
}

impl Silence {
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            timer: None,
            armed: false,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// The peer made progress: the next wait gets a deadline of its own.
    pub fn progress(&mut self) {
        self.armed = false;
    }

    /// The stream is waiting on the peer: `Ready` once it has waited `limit` since its last
    /// progress (counted from the first wait after it).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            let deadline = Instant::now() + self.limit;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.timer.as_mut().expect("armed above").as_mut().poll(cx)
    }
}
