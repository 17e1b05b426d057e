//! Where the rate-limit and kv capabilities keep their state (`[state]`): this process's
//! memory (the capabilities' own stores), or Redis, shared by every gateway pointed at it.
//! The Redis backend is chosen at start, for the process's life.

mod approx;
mod redis;

pub use self::approx::Approx;
pub use self::redis::{GcraVerdict, Redis, Unavailable};
