//! Host calls a plugin made that the host refused (a header it may not set, a variable past the
//! cap, a key too long...). A plugin can make thousands of them in one call, so the host never
//! logs them as they happen: each is counted in the call's store, by kind, keeping the first
//! one's detail; after the call the counts join the request's, and when the request is over
//! each plugin's refusals of each kind make one log line with their count.
//!
//! Counting costs a lookup among the few kinds seen in the call and an add; only the first
//! refusal of a kind builds its detail. The log line is written after the call returns, so
//! it never runs on the plugin's deadline.

use std::sync::Arc;

use crate::pipeline::RequestId;

/// What kind of host call was refused: the `kind` of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request or response header, or a queued response header change.
    Header,
    /// `set-var`: a variable too large, or one past the number a request may carry.
    SetVar,
    Method,
    /// `set-path` or `set-query`.
    Path,
    Status,
    /// A body read not declared in the registration, or a body too large to set.
    Body,
    Kv,
    RateLimit,
    /// `set-upstream`: a name the config has no upstream of.
    Upstream,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::SetVar => "set_var",
            Self::Method => "method",
            Self::Path => "path",
            Self::Status => "status",
            Self::Body => "body",
            Self::Kv => "kv",
            Self::RateLimit => "rate_limit",
            Self::Upstream => "upstream",
        }
    }
}

/// Longest detail kept for the first refusal of a kind.
const MAX_DETAIL: usize = 256;

#[derive(Debug)]
struct Tally {
    kind: Refusal,
    count: u64,
    first: Box<str>,
}

/// One plugin's refusals, by kind. Empty (and unallocated) while the plugin behaves.
#[derive(Debug, Default)]
pub struct Refusals(Vec<Tally>);

impl Refusals {
    /// Counts one refusal; `detail` is only called for the first of its kind.
    pub fn note(&mut self, kind: Refusal, detail: impl FnOnce() -> String) {
        match self.0.iter_mut().find(|t| t.kind == kind) {
            Some(t) => t.count += 1,
            None => {
                let detail = detail();
                let first = wasmgate_rules::log::cut(&detail, MAX_DETAIL).into();
                self.0.push(Tally {
                    kind,
                    count: 1,
                    first,
                });
            }
        }
    }

    /// Passes `result` through, counting it when it is an error.
    pub fn check<T, E: Copy>(
        &mut self,
        kind: Refusal,
        result: Result<T, E>,
        detail: impl FnOnce(E) -> String,
    ) -> Result<T, E> {
        if let Err(e) = &result {
            let e = *e;
            self.note(kind, || detail(e));
        }
        result
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves `other`'s counts into these.
    fn absorb(&mut self, other: &mut Refusals) {
        for t in other.0.drain(..) {
            match self.0.iter_mut().find(|mine| mine.kind == t.kind) {
                Some(mine) => mine.count += t.count,
                None => self.0.push(t),
            }
        }
    }

    /// One line per kind. `request` is `None` for refusals made during `init`.
    pub fn log(&self, route: &str, plugin: &str, request: Option<RequestId>) {
        for t in &self.0 {
            tracing::warn!(
                route,
                plugin,
                request_id = request.map(tracing::field::display),
                kind = t.kind.as_str(),
                count = t.count,
                first = %t.first,
                "plugin output refused"
            );
        }
    }
}

/// The refusals of one request, by plugin; logged when the request is dropped, so every way a
/// request can end (answered, failed, cancelled by its client) reports them once.
#[derive(Debug, Default)]
pub struct RequestRefusals {
    /// The route and request, kept at the first refusal.
    request: Option<(Arc<str>, RequestId)>,
    by_plugin: Vec<(Arc<str>, Refusals)>,
}

impl RequestRefusals {
    /// Moves a call's refusals (made by `plugin` for request `id` on `route`) into these.
    pub fn absorb(
        &mut self,
        route: &Arc<str>,
        id: RequestId,
        plugin: &Arc<str>,
        call: &mut Refusals,
    ) {
        if call.is_empty() {
            return;
        }
        self.request.get_or_insert_with(|| (route.clone(), id));
        match self.by_plugin.iter_mut().find(|(p, _)| p == plugin) {
            Some((_, mine)) => mine.absorb(call),
            None => {
                let mut mine = Refusals::default();
                mine.absorb(call);
                self.by_plugin.push((plugin.clone(), mine));
            }
        }
    }
}

impl Drop for RequestRefusals {
    fn drop(&mut self) {
        if let Some((route, id)) = &self.request {
            for (plugin, refusals) in &self.by_plugin {
                refusals.log(route, plugin, Some(*id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_keeping_the_first_detail() {
        let mut call = Refusals::default();
        let mut built = 0;
        for i in 0..1000 {
            call.note(Refusal::SetVar, || {
                built += 1;
                format!("var {i}")
            });
        }
        let r: Result<(), u8> = call.check(Refusal::Header, Err(7), |e| format!("code {e}"));
        assert_eq!(r, Err(7));
        assert_eq!(
            call.check(Refusal::Header, Ok::<u8, u8>(1), |_| unreachable!()),
            Ok(1)
        );
        assert_eq!(built, 1, "the detail is built once");
        assert_eq!(call.0.len(), 2);
        assert_eq!((call.0[0].count, &*call.0[0].first), (1000, "var 0"));
        assert_eq!((call.0[1].count, &*call.0[1].first), (1, "code 7"));

        let mut req = RequestRefusals::default();
        let (route, plugin): (Arc<str>, Arc<str>) = ("r".into(), "p".into());
        req.absorb(&route, RequestId::next(), &plugin, &mut call);
        assert!(call.is_empty(), "the call's counts moved to the request");
        call.note(Refusal::SetVar, || "later".into());
        req.absorb(&route, RequestId::next(), &plugin, &mut call);
        let (_, mine) = &req.by_plugin[0];
        assert_eq!((mine.0[0].count, &*mine.0[0].first), (1001, "var 0"));
    }

    #[test]
    fn a_long_detail_is_cut() {
        let mut call = Refusals::default();
        call.note(Refusal::Kv, || "é".repeat(10_000));
        assert!(call.0[0].first.len() <= MAX_DETAIL);
    }
}
