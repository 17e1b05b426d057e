//! Implements `wasmgate:plugin/header-rules`: header changes a plugin declares in `init`.
//!
//! Each call is checked as `request.set-header` checks a header (a token name, not one the host
//! manages) and its template parsed, once; the rules are collected in the store and, after
//! `init`, handed to the pipeline entry (`pipeline::header_rules` applies them per request).

use http::header::{self, HeaderName};
use wasmgate_rules::header_rules::{MAX_RULES, Template};
use wasmtime::Result;

use crate::capabilities::http::{parse_header, refused};
use crate::pipeline::header_rules::{HeaderRules, Rule, Value, is_host};
use crate::plugins::bindings::ErrorCode;
use crate::plugins::bindings::wasmgate::plugin::header_rules::{Host, Phase};
use crate::plugins::refusals::Refusal;
use crate::plugins::state::HostState;

impl HostState {
    /// Checks and keeps one rule; only `init` may declare them.
    fn declare(
        &mut self,
        phase: Phase,
        call: &str,
        name: &str,
        rule: impl FnOnce(HeaderName) -> Result<Rule, ErrorCode>,
    ) -> Result<(), ErrorCode> {
        let result = (|| {
            let rules: &mut HeaderRules = self.declared.as_mut().ok_or(ErrorCode::NotAllowed)?;
            if rules.len() >= MAX_RULES {
                return Err(ErrorCode::NotAllowed);
            }
            let (name, _) = parse_header(name, "")?;
            let rule = rule(name)?;
            match phase {
                Phase::Request => rules.request.push(rule),
                Phase::Response => rules.response.push(rule),
            }
            Ok(())
        })();
        self.refusals
            .check(Refusal::Header, result, |e| refused(call, name, e))
    }

    /// Checks and keeps a rule that writes a templated value.
    fn declare_write(
        &mut self,
        phase: Phase,
        call: &str,
        name: &str,
        template: &str,
        append: bool,
    ) -> Result<(), ErrorCode> {
        let route = self.ctx.route.clone();
        self.declare(phase, call, name, |name| {
            let host = phase == Phase::Request && name == header::HOST;
            if host && append {
                return Err(ErrorCode::NotAllowed);
            }
            let template = Template::parse(template).map_err(|_| ErrorCode::InvalidValue)?;
            let value = Value::new(template, &route).ok_or(ErrorCode::InvalidValue)?;
            if let (true, Value::Fixed(v)) = (host, &value)
                && !is_host(v)
            {
                return Err(ErrorCode::InvalidValue);
            }
            Ok(Rule::Write {
                name,
                value,
                append,
            })
        })
    }
}

impl Host for HostState {
    fn set_header(
        &mut self,
        phase: Phase,
        name: String,
        template: String,
    ) -> Result<Result<(), ErrorCode>> {
        let call = "header-rules.set-header";
        Ok(self.declare_write(phase, call, &name, &template, false))
    }

    fn append_header(
        &mut self,
        phase: Phase,
        name: String,
        template: String,
    ) -> Result<Result<(), ErrorCode>> {
        let call = "header-rules.append-header";
        Ok(self.declare_write(phase, call, &name, &template, true))
    }

    fn remove_header(&mut self, phase: Phase, name: String) -> Result<Result<(), ErrorCode>> {
        let call = "header-rules.remove-header";
        Ok(self.declare(phase, call, &name, |n| Ok(Rule::Remove(n))))
    }

    fn request_id(&mut self, name: String) -> Result<Result<(), ErrorCode>> {
        let call = "header-rules.request-id";
        Ok(self.declare(Phase::Request, call, &name, |n| {
            // An id is no `Host`.
            if n == header::HOST {
                return Err(ErrorCode::NotAllowed);
            }
            Ok(Rule::RequestId(n))
        }))
    }
}
