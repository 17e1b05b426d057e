//! The mock host's outbound calls ([`crate::outbound`] natively): a test scripts what each URL
//! answers, and reads back what the plugin sent.
//!
//! - [`on`] (a URL, compared exactly, query included) and [`on_matching`] (a predicate)
//!   script an answer: [`respond`](OutboundScript::respond), a whole
//!   [`Response`](OutboundScript::respond_with) or a [`fail`](OutboundScript::fail)ure, after
//!   an optional [`delay`](OutboundScript::delay). The newest script that matches a request
//!   answers it; a request no script matches is [`Error::Denied`], as the gateway refuses a
//!   destination it did not grant. A script with no answer given answers `200` with an empty
//!   body.
//! - Requests are checked as on wasm: one that could not be sent is
//!   [`Error::InvalidRequest`] and is not recorded.
//! - The gateway's limits hold ([`OutboundLimits`], [`set_limits`]): a call that waits longer
//!   than its timeout (the request's own, or the limit's when shorter) is [`Error::Timeout`];
//!   a body over the limit is [`Error::BodyTooLarge`]; past the calls in flight at once (in
//!   one [`send_all`](crate::outbound::send_all)) or in all for one request (across a
//!   [`MockRequest`](super::MockRequest)'s hooks run through
//!   [`testing::on_request`](super::on_request) and [`on_response`](super::on_response)), a
//!   call is [`Error::Limited`]. Calls made outside a hook have no per-request count.
//! - Nothing sleeps: a call's delay moves the [mock clock](super::set_now_millis) forward
//!   when the call returns, and a `send_all` moves it by its slowest call only, since its
//!   calls wait together. [`batches`] shows which calls were sent together.
//!
//! ```
//! use std::time::Duration;
//! use wasmgate_sdk::outbound::{self, Error, Request};
//! use wasmgate_sdk::testing::{self, outbound as mock};
//!
//! testing::set_now_millis(0);
//! mock::on("http://users/users/7").respond(200, r#"{"name":"alice"}"#).delay(Duration::from_millis(200));
//! mock::on("http://orders/orders?user=7").respond(200, "[]").delay(Duration::from_millis(200));
//! mock::on("http://notify/unread/7").fail(Error::Timeout);
//!
//! let answers = outbound::send_all(vec![
//!     Request::get("http://users/users/7"),
//!     Request::get("http://orders/orders?user=7"),
//!     Request::get("http://notify/unread/7"),
//! ]);
//! assert_eq!(answers[0].as_ref().unwrap().body, br#"{"name":"alice"}"#);
//! assert_eq!(answers[2], Err(Error::Timeout));
//! assert_eq!(wasmgate_sdk::clock::now_millis(), 200); // together, not one after the other
//! assert_eq!(mock::batches().len(), 1);
//! assert_eq!(mock::requests()[1].url, "http://orders/orders?user=7");
//! ```

use std::cell::RefCell;
use std::time::Duration;

use crate::outbound::{Error, Request, Response, check};

/// The gateway's limits on a plugin's calls, as the mock host applies them. The default is
/// the gateway's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// The longest a call may take (`outbound_timeout_ms`; default 2 s).
    pub timeout: Duration,
    /// Calls in flight at once per client request (`outbound_in_flight`; default 8).
    pub in_flight: usize,
    /// Calls per client request in all (`outbound_per_request`; default 16).
    pub per_request: usize,
    /// The largest response body, in bytes (`outbound_body_bytes`; default 1 MiB).
    pub body_bytes: usize,
}

impl Default for OutboundLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(2_000),
            in_flight: 8,
            per_request: 16,
            body_bytes: 1 << 20,
        }
    }
}

/// Which requests a script answers.
enum Matcher {
    Url(String),
    Predicate(Box<dyn Fn(&Request) -> bool>),
}

impl Matcher {
    fn matches(&self, req: &Request) -> bool {
        match self {
            Matcher::Url(url) => *url == req.url,
            Matcher::Predicate(p) => p(req),
        }
    }
}

/// A scripted answer.
struct Script {
    matcher: Matcher,
    answer: Result<Response, Error>,
    delay: Duration,
}

#[derive(Default)]
struct State {
    scripts: Vec<Script>,
    limits: OutboundLimits,
    batches: Vec<Vec<Request>>,
    /// The calls made for the request whose hook is running; `None` outside a hook.
    request_calls: Option<usize>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|state| f(&mut state.borrow_mut()))
}

/// Scripts the answer to requests for exactly `url` (any method), on this thread.
pub fn on(url: &str) -> OutboundScript {
    add(Matcher::Url(url.to_string()))
}

/// Scripts the answer to requests `matcher` accepts (by method, URL prefix, header, body...).
/// The matcher runs outside the mock host's state, so it may call the SDK.
pub fn on_matching(matcher: impl Fn(&Request) -> bool + 'static) -> OutboundScript {
    add(Matcher::Predicate(Box::new(matcher)))
}

fn add(matcher: Matcher) -> OutboundScript {
    with(|s| {
        s.scripts.push(Script {
            matcher,
            answer: Ok(Response::new(200)),
            delay: Duration::ZERO,
        });
        OutboundScript {
            index: s.scripts.len() - 1,
        }
    })
}

/// A scripted answer, changed in place by its methods (in any order). Made by [`on`] or
/// [`on_matching`]; it stays until [`reset`](super::reset).
#[derive(Debug)]
pub struct OutboundScript {
    index: usize,
}

impl OutboundScript {
    fn edit(self, f: impl FnOnce(&mut Script)) -> Self {
        with(|s| {
            if let Some(script) = s.scripts.get_mut(self.index) {
                f(script)
            }
        });
        self
    }

    /// Answers with this status and body, no headers.
    pub fn respond(self, status: u16, body: impl Into<Vec<u8>>) -> Self {
        let response = Response::new(status).with_body(body);
        self.respond_with(response)
    }

    /// Answers with `value` as a JSON body and `content-type: application/json`.
    pub fn respond_json(self, status: u16, value: &serde_json::Value) -> Self {
        let response = Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(value.to_string());
        self.respond_with(response)
    }

    /// Answers with this response.
    pub fn respond_with(self, response: Response) -> Self {
        self.edit(|s| s.answer = Ok(response))
    }

    /// Fails the call with `error`, as the gateway would report it.
    pub fn fail(self, error: Error) -> Self {
        self.edit(|s| s.answer = Err(error))
    }

    /// Answers only after `delay`; past the call's timeout, the call is [`Error::Timeout`]
    /// (at its timeout) instead.
    pub fn delay(self, delay: Duration) -> Self {
        self.edit(|s| s.delay = delay)
    }
}

/// Sets the limits calls are held to on this thread (default: [`OutboundLimits::default`]).
pub fn set_limits(limits: OutboundLimits) {
    with(|s| s.limits = limits)
}

/// Every request sent on this thread, oldest first (those refused as invalid are not there).
pub fn requests() -> Vec<Request> {
    with(|s| s.batches.iter().flatten().cloned().collect())
}

/// The requests sent on this thread, one entry per [`send`](crate::outbound::send) or
/// [`send_all`](crate::outbound::send_all): those of an entry were in flight together.
pub fn batches() -> Vec<Vec<Request>> {
    with(|s| s.batches.clone())
}

/// Clears the scripts, the recorded requests and the limits.
pub(super) fn reset() {
    with(|s| *s = State::default())
}

/// Starts counting the calls of a request's hook, from those its earlier hooks made.
pub(super) fn enter_request(calls: usize) {
    with(|s| s.request_calls = Some(calls))
}

/// Stops counting, returning the request's calls so far.
pub(super) fn leave_request() -> usize {
    with(|s| s.request_calls.take().unwrap_or(0))
}

/// [`crate::outbound::send_all`], natively.
pub(crate) fn send_all(requests: Vec<Request>) -> Vec<Result<Response, Error>> {
    // The scripts are taken out while matchers run, so a matcher may call the SDK.
    let (scripts, limits) = with(|s| (std::mem::take(&mut s.scripts), s.limits));
    let mut sent = Vec::new();
    let mut in_flight = 0;
    let mut made = with(|s| s.request_calls);
    let mut waited = Duration::ZERO;
    let results = requests
        .into_iter()
        .map(|req| {
            check(&req)?;
            let answer = answer(&scripts, &req, limits, &mut in_flight, &mut made);
            sent.push(req);
            let (result, took) = answer;
            waited = waited.max(took);
            result
        })
        .collect();
    with(|s| {
        // Scripts added meanwhile (by a matcher) come after those that were there.
        let added = std::mem::replace(&mut s.scripts, scripts);
        s.scripts.extend(added);
        if made.is_some() {
            s.request_calls = made;
        }
        if !sent.is_empty() {
            s.batches.push(sent);
        }
    });
    if !waited.is_zero() {
        super::advance_millis(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX));
    }
    results
}

/// One call's outcome, and how long it waited for it.
fn answer(
    scripts: &[Script],
    req: &Request,
    limits: OutboundLimits,
    in_flight: &mut usize,
    made: &mut Option<usize>,
) -> (Result<Response, Error>, Duration) {
    // As the gateway admits a call: within the request's count, then the calls in flight.
    if made.is_some_and(|made| made >= limits.per_request) || *in_flight >= limits.in_flight {
        return (Err(Error::Limited), Duration::ZERO);
    }
    if let Some(made) = made {
        *made += 1;
    }
    *in_flight += 1;
    let Some(script) = scripts.iter().rev().find(|s| s.matcher.matches(req)) else {
        return (Err(Error::Denied), Duration::ZERO);
    };
    let timeout = req
        .timeout
        .map_or(limits.timeout, |t| t.min(limits.timeout));
    if script.delay > timeout {
        return (Err(Error::Timeout), timeout);
    }
    let result = match &script.answer {
        Ok(resp) if resp.body.len() > limits.body_bytes => Err(Error::BodyTooLarge),
        answer => answer.clone(),
    };
    (result, script.delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::{self, send_all};
    use crate::testing::{self, MockRequest};
    use crate::{ConfigError, Decision, Plugin, Registration, clock};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn scripted_answers_failures_and_unscripted_urls() {
        on("http://users/users/7").respond(200, "alice");
        on("http://users/down").fail(Error::Other("connection-refused".into()));
        on("http://users/empty");
        assert_eq!(
            outbound::get("http://users/users/7").unwrap().body,
            b"alice"
        );
        assert_eq!(
            outbound::get("http://users/down"),
            Err(Error::Other("connection-refused".into()))
        );
        assert_eq!(outbound::get("http://users/empty"), Ok(Response::new(200)));
        assert_eq!(outbound::get("http://users/users/8"), Err(Error::Denied));
        assert_eq!(requests().len(), 4);
    }

    #[test]
    fn the_newest_matching_script_answers() {
        on_matching(|r| r.url.starts_with("http://users/")).respond(503, "");
        on("http://users/users/7").respond_json(200, &serde_json::json!({ "id": 7 }));
        let resp = outbound::get("http://users/users/7").unwrap();
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(resp.json::<serde_json::Value>().unwrap()["id"], 7);
        assert_eq!(outbound::get("http://users/other").unwrap().status, 503);
        on_matching(|r| r.method == "POST").respond(201, "made");
        let resp = outbound::send(outbound::Request::post("http://users/other").body("x"));
        assert_eq!(resp.unwrap().status, 201);
        assert_eq!(requests()[2].body, b"x");
    }

    #[test]
    fn a_matcher_may_call_the_sdk() {
        on_matching(|r| {
            crate::log::info(&format!("matching {}", r.url));
            true
        });
        assert!(outbound::get("http://users/").is_ok());
        assert_eq!(testing::logs().len(), 1);
    }

    #[test]
    fn calls_sent_together_wait_together() {
        testing::set_now_millis(0);
        for (url, delay) in [("http://a/", 200), ("http://b/", 150), ("http://c/", 200)] {
            on(url).respond(200, url).delay(ms(delay));
        }
        let get = outbound::Request::get;
        let answers = send_all(vec![get("http://a/"), get("http://b/"), get("http://c/")]);
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(answers[1].as_ref().unwrap().body, b"http://b/");
        assert_eq!(clock::now_millis(), 200);
        assert_eq!(batches().len(), 1);
        assert_eq!(batches()[0].len(), 3);

        // One after the other, the delays add up.
        for url in ["http://a/", "http://b/", "http://c/"] {
            outbound::get(url).unwrap();
        }
        assert_eq!(clock::now_millis(), 750);
        assert_eq!(batches().len(), 4);
    }

    #[test]
    fn a_call_slower_than_its_timeout_times_out_at_it() {
        testing::set_now_millis(0);
        on("http://slow/").delay(ms(800));
        let req = outbound::Request::get("http://slow/");
        assert_eq!(
            outbound::send(req.clone().timeout(ms(500))),
            Err(Error::Timeout)
        );
        assert_eq!(clock::now_millis(), 500);
        assert!(outbound::send(req.clone().timeout(ms(900))).is_ok());
        // The gateway's limit is the longest, whatever the request asks.
        set_limits(OutboundLimits {
            timeout: ms(700),
            ..OutboundLimits::default()
        });
        assert_eq!(outbound::send(req.timeout(ms(900))), Err(Error::Timeout));
        assert_eq!(requests()[0].timeout, Some(ms(500)));
    }

    #[test]
    fn bodies_past_the_limit_are_refused() {
        on("http://big/").respond(200, vec![b'x'; (1 << 20) + 1]);
        on("http://fits/").respond(200, vec![b'x'; 1 << 20]);
        assert_eq!(outbound::get("http://big/"), Err(Error::BodyTooLarge));
        assert!(outbound::get("http://fits/").is_ok());
    }

    #[test]
    fn invalid_requests_are_refused_before_they_are_sent() {
        on_matching(|_| true);
        let bad = outbound::send(outbound::Request::get("users/7"));
        assert!(matches!(bad, Err(Error::InvalidRequest(_))), "{bad:?}");
        let bad = outbound::send(outbound::Request::get("http://u/").header("host", "x"));
        assert!(matches!(bad, Err(Error::InvalidRequest(_))), "{bad:?}");
        assert!(requests().is_empty());
    }

    #[test]
    fn calls_past_the_in_flight_limit_are_limited() {
        on_matching(|_| true);
        let reqs = (0..10)
            .map(|i| outbound::Request::get(format!("http://u/{i}")))
            .collect();
        let answers = send_all(reqs);
        assert!(answers[..8].iter().all(Result::is_ok));
        assert_eq!(answers[8..], [Err(Error::Limited), Err(Error::Limited)]);
    }

    /// Makes as many calls as its config says, in each phase.
    struct Caller {
        calls: usize,
    }

    impl Plugin for Caller {
        type Config = usize;

        fn new(calls: usize) -> Result<Self, ConfigError> {
            Ok(Self { calls })
        }

        fn registration(&self) -> Registration {
            Registration::new()
        }

        fn on_request(&mut self, _: &mut crate::Request<'_>) -> Result<Decision, crate::Error> {
            for _ in 0..self.calls {
                outbound::get("http://u/")?;
            }
            Ok(Decision::Continue)
        }

        fn on_response(
            &mut self,
            req: &mut crate::Request<'_>,
            _: &mut crate::Response<'_>,
        ) -> Result<Decision, crate::Error> {
            self.on_request(req)
        }
    }

    #[test]
    fn a_requests_calls_are_counted_across_its_hooks() {
        on("http://u/");
        let mut plugin = testing::init::<Caller>(serde_json::json!(8)).unwrap();
        let mut req = MockRequest::new("GET", "/");
        assert!(testing::on_request(&mut plugin, &mut req).is_ok());
        let mut resp = testing::MockResponse::new(200);
        assert!(testing::on_response(&mut plugin, &mut req, &mut resp).is_ok());
        // The 17th call of the request is one too many.
        let err = testing::on_response(&mut plugin, &mut req, &mut resp).unwrap_err();
        assert_eq!(err, crate::Error::from(Error::Limited));
        // A new request starts again.
        let mut req = MockRequest::new("GET", "/");
        assert!(testing::on_request(&mut plugin, &mut req).is_ok());
        // Outside a hook, no request is counted.
        for _ in 0..20 {
            outbound::get("http://u/").unwrap();
        }
    }

    #[test]
    fn reset_forgets_scripts_and_requests() {
        on("http://u/");
        outbound::get("http://u/").unwrap();
        testing::reset();
        assert!(requests().is_empty());
        assert_eq!(outbound::get("http://u/"), Err(Error::Denied));
    }
}
