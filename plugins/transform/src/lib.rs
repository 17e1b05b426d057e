//! `transform`: rewrites requests and responses on their way through the gateway (headers,
//! query, method, JSON bodies) and bridges JSON clients to SOAP services: a JSON request body
//! becomes a SOAP envelope, and the SOAP answer becomes JSON again.
//!
//! Everything in the config is checked and compiled once, at init; a request only applies it.
//! See README.md for the config reference.

mod from_soap;
mod json;
mod ops;
mod soap;
mod to_soap;

/// Both directions of the SOAP bridge, for the fuzz targets (`fuzz/fuzz_targets/json_to_soap.rs`,
/// `soap_to_json.rs`). Not an API: nothing here is stable.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::from_soap::{Fault, Outcome, TextOptions, read};
    pub use crate::json::{Json, Object};
    pub use crate::soap::{MAX_DEPTH, SoapVersion, is_ncname, is_xml_char};
    pub use crate::to_soap::{EnvelopeWriter, Refusal};
}

use serde::Deserialize;
use serde_json::json;
use wasmgate_sdk::{
    ConfigError, Decision, Error, HostError, Plugin, Registration, Reply, Request, Response, log,
};

use crate::from_soap::{Outcome, TextOptions};
use crate::json::Json;
use crate::ops::{HeaderConfig, HeaderOps, JsonConfig, JsonOps, QueryConfig, QueryOps};
use crate::soap::{SoapVersion, is_ncname, is_xml_char};
use crate::to_soap::EnvelopeWriter;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub request: RequestConfig,
    pub response: ResponseConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestConfig {
    pub headers: HeaderConfig,
    pub json: JsonConfig,
    pub query: QueryConfig,
    pub method: Option<String>,
    pub json_to_soap: Option<JsonToSoapConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponseConfig {
    pub headers: HeaderConfig,
    pub json: JsonConfig,
    pub soap_to_json: Option<SoapToJsonConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonToSoapConfig {
    #[serde(default = "default_version")]
    pub version: String,
    pub operation: String,
    pub namespace: String,
    #[serde(default)]
    pub soap_action: Option<String>,
}

fn default_version() -> String {
    "1.1".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SoapToJsonConfig {
    pub numbers: bool,
    pub booleans: bool,
}

/// The SOAP side of a request, all of it fixed at init.
#[derive(Debug)]
struct SoapRequest {
    writer: EnvelopeWriter,
    content_type: String,
    /// The `SOAPAction` header (SOAP 1.1 only; SOAP 1.2 puts the action in the content type).
    action_header: Option<String>,
}

impl SoapRequest {
    fn compile(config: JsonToSoapConfig) -> Result<Self, ConfigError> {
        const AT: &str = "request.json_to_soap";
        let version = match config.version.as_str() {
            "1.1" => SoapVersion::V11,
            "1.2" => SoapVersion::V12,
            _ => {
                return Err(ConfigError::at(
                    format!("{AT}.version"),
                    "must be \"1.1\" or \"1.2\"",
                ));
            }
        };
        if !is_ncname(&config.operation) {
            return Err(ConfigError::at(
                format!("{AT}.operation"),
                "must be an XML name without a prefix",
            ));
        }
        if config.namespace.trim().is_empty() || !config.namespace.chars().all(is_xml_char) {
            return Err(ConfigError::at(
                format!("{AT}.namespace"),
                "must be a namespace URI",
            ));
        }
        if let Some(action) = &config.soap_action
            && !action
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(ConfigError::at(
                format!("{AT}.soap_action"),
                "must be a URI: printable ASCII without spaces, quotes or backslashes",
            ));
        }
        let action = config.soap_action.as_deref();
        let (content_type, action_header) = match version {
            SoapVersion::V11 => (
                "text/xml; charset=utf-8".to_owned(),
                Some(format!("\"{}\"", action.unwrap_or_default())),
            ),
            SoapVersion::V12 => (
                match action {
                    Some(a) => format!("application/soap+xml; charset=utf-8; action=\"{a}\""),
                    None => "application/soap+xml; charset=utf-8".to_owned(),
                },
                None,
            ),
        };
        Ok(Self {
            writer: EnvelopeWriter {
                version,
                operation: config.operation,
                namespace: config.namespace,
            },
            content_type,
            action_header,
        })
    }
}

pub struct Transform {
    request_headers: HeaderOps,
    request_json: JsonOps,
    query: QueryOps,
    method: Option<String>,
    soap: Option<SoapRequest>,
    response_headers: HeaderOps,
    response_json: JsonOps,
    soap_to_json: Option<TextOptions>,
}

impl Plugin for Transform {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let Config { request, response } = config;
        let soap = request.json_to_soap.map(SoapRequest::compile).transpose()?;
        let method = match (request.method, &soap) {
            (Some(m), _) if !is_token(&m) => {
                return Err(ConfigError::at("request.method", "not a valid HTTP method"));
            }
            (Some(m), Some(_)) if m != "POST" => {
                return Err(ConfigError::at(
                    "request.method",
                    "SOAP requests are sent with POST",
                ));
            }
            (Some(m), _) => Some(m),
            (None, Some(_)) => Some("POST".to_owned()),
            (None, None) => None,
        };
        Ok(Self {
            request_headers: HeaderOps::compile(request.headers, "request.headers")?,
            request_json: JsonOps::compile(request.json, "request.json")?,
            query: QueryOps::compile(request.query, "request.query")?,
            method,
            soap,
            response_headers: HeaderOps::compile(response.headers, "response.headers")?,
            response_json: JsonOps::compile(response.json, "response.json")?,
            soap_to_json: response.soap_to_json.map(|c| TextOptions {
                numbers: c.numbers,
                booleans: c.booleans,
            }),
        })
    }

    fn registration(&self) -> Registration {
        let request_body = self.soap.is_some() || !self.request_json.is_empty();
        let response_body = self.soap_to_json.is_some() || !self.response_json.is_empty();
        Registration {
            on_request: request_body
                || response_body
                || !self.request_headers.is_empty()
                || !self.query.is_empty()
                || self.method.is_some(),
            on_response: response_body || !self.response_headers.is_empty(),
            request_body,
            response_body,
        }
    }

    fn on_request(&mut self, req: &mut Request<'_>) -> Result<Decision, Error> {
        self.request_headers.apply(req)?;
        if let Some(query) = self.query.apply(req.query().as_deref()) {
            req.set_query(query.as_deref())?;
        }
        if let Some(method) = &self.method {
            req.set_method(method)?;
        }
        // After the header operations, so the SOAP content type and action always win.
        if (self.soap.is_some() || !self.request_json.is_empty())
            && let Some(reply) = self.request_body(req)?
        {
            return Ok(Decision::Respond(reply));
        }
        if self.soap_to_json.is_some() || !self.response_json.is_empty() {
            // The response body is rewritten, so it must come back readable, not compressed.
            req.remove_header("accept-encoding");
        }
        Ok(Decision::Continue)
    }

    fn on_response(
        &mut self,
        _req: &mut Request<'_>,
        resp: &mut Response<'_>,
    ) -> Result<Decision, Error> {
        if let Some(options) = self.soap_to_json {
            self.soap_response(resp, options)?;
        } else if !self.response_json.is_empty() {
            self.json_response(resp)?;
        }
        self.response_headers.apply(resp)?;
        Ok(Decision::Continue)
    }
}

impl Transform {
    /// Rewrites the request body; `Some` is the reply that refuses the request instead.
    fn request_body(&self, req: &mut Request<'_>) -> Result<Option<Reply>, Error> {
        let body = req.body()?;
        let mut doc = if body.iter().all(u8::is_ascii_whitespace) {
            match &self.soap {
                // An operation without parameters needs no body.
                Some(_) => Json::Object(Vec::new()),
                None => return Ok(None),
            }
        } else {
            match Json::parse(&body) {
                Ok(doc) => doc,
                Err(e) => {
                    return error_reply(400, "invalid_json", &format!("the body is not JSON: {e}"))
                        .map(Some);
                }
            }
        };
        let changed = self.request_json.apply(&mut doc);
        let Some(soap) = &self.soap else {
            // Untouched bodies go on byte for byte.
            return if changed {
                set_request_body(req, &doc.to_vec())
            } else {
                Ok(None)
            };
        };
        let Json::Object(params) = &doc else {
            return error_reply(400, "invalid_json", "the body must be a JSON object").map(Some);
        };
        let envelope = match soap.writer.write(params) {
            Ok(envelope) => envelope,
            Err(refusal) => {
                return error_reply(400, "invalid_field", &refusal.to_string()).map(Some);
            }
        };
        if let Some(reply) = set_request_body(req, &envelope)? {
            return Ok(Some(reply));
        }
        req.set_header("content-type", &soap.content_type)?;
        match &soap.action_header {
            Some(action) => req.set_header("soapaction", action)?,
            None => req.remove_header("soapaction"),
        }
        Ok(None)
    }

    fn soap_response(&self, resp: &mut Response<'_>, options: TextOptions) -> Result<(), Error> {
        if is_json(resp.header("content-type").as_deref()) {
            // Already JSON: the gateway's own error (upstream down, timeout) or a reply from a
            // plugin later in the pipeline. It passes unchanged.
            return Ok(());
        }
        let status = resp.status();
        if is_encoded(resp.header("content-encoding").as_deref()) {
            log::warn("SOAP response is content-encoded; answering 502");
            return bad_gateway(resp);
        }
        let body = resp.body()?;
        if body.is_empty() && matches!(status, 202 | 204) {
            return Ok(());
        }
        match from_soap::read(&body, options) {
            Ok(Outcome::Body(mut doc)) => {
                self.response_json.apply(&mut doc);
                write_json(resp, status, &doc.to_vec())
            }
            Ok(Outcome::Fault(fault)) => {
                let status = if fault.is_client() { 400 } else { 502 };
                let error = json!({"error": {"code": fault.code, "message": fault.message}});
                write_json(resp, status, &serde_json::to_vec(&error)?)
            }
            Err(why) => {
                log::warn(&format!(
                    "upstream answer (status {status}) is not a SOAP envelope: {why}; answering 502"
                ));
                bad_gateway(resp)
            }
        }
    }

    fn json_response(&self, resp: &mut Response<'_>) -> Result<(), Error> {
        if !is_json(resp.header("content-type").as_deref())
            || is_encoded(resp.header("content-encoding").as_deref())
        {
            return Ok(());
        }
        let body = resp.body()?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let mut doc = match Json::parse(&body) {
            Ok(doc) => doc,
            Err(e) => {
                // Fail closed: a `remove` may be what keeps a field from the client.
                log::warn(&format!(
                    "upstream JSON does not parse ({e}); answering 502"
                ));
                return bad_gateway(resp);
            }
        };
        if self.response_json.apply(&mut doc) {
            let status = resp.status();
            write_json(resp, status, &doc.to_vec())?;
        }
        Ok(())
    }
}

/// Replaces the request body; a body past the route's limit is answered with 413.
fn set_request_body(req: &mut Request<'_>, body: &[u8]) -> Result<Option<Reply>, Error> {
    match req.set_body(body) {
        Ok(()) => Ok(None),
        Err(HostError::BodyTooLarge) => error_reply(
            413,
            "payload_too_large",
            "the transformed body is larger than this route accepts",
        )
        .map(Some),
        Err(e) => Err(e.into()),
    }
}

fn write_json(resp: &mut Response<'_>, status: u16, body: &[u8]) -> Result<(), Error> {
    match resp.set_body(body) {
        Ok(()) => {}
        Err(HostError::BodyTooLarge) => {
            log::warn("the JSON answer is larger than the route allows; answering 502");
            return bad_gateway(resp);
        }
        Err(e) => return Err(e.into()),
    }
    resp.set_status(status)?;
    resp.set_header("content-type", "application/json")?;
    // They described the body that was replaced.
    resp.remove_header("etag");
    resp.remove_header("content-md5");
    Ok(())
}

fn bad_gateway(resp: &mut Response<'_>) -> Result<(), Error> {
    let body = json!({
        "error": "bad_gateway",
        "message": "the upstream service sent an invalid response",
    });
    resp.set_body(&serde_json::to_vec(&body)?)?;
    resp.set_status(502)?;
    resp.set_header("content-type", "application/json")?;
    resp.remove_header("etag");
    resp.remove_header("content-md5");
    Ok(())
}

fn error_reply(status: u16, code: &str, message: &str) -> Result<Reply, Error> {
    Reply::json(status, &json!({"error": code, "message": message}))
}

/// `application/json` or any `+json` type.
fn is_json(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let media = ct.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json")
        || media
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

fn is_encoded(content_encoding: Option<&str>) -> bool {
    content_encoding
        .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// At most 64 characters of `text`, for messages that quote input.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 64;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

wasmgate_sdk::export!(Transform);

#[cfg(test)]
mod tests;
