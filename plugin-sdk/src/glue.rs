//! The component exports behind [`export!`](crate::export) (wasm only): the plugin instance
//! lives in one non-generic slot, so the macro only names the plugin type for `init`.

use std::cell::RefCell;

use crate::__private::ErasedPlugin;
use crate::__private::bindings::exports::wasmgate::plugin::handler as wit_handler;
use crate::__private::bindings::wasmgate::plugin::http as wit_http;
use crate::config::parse_config;
use crate::http::{RequestBackend, ResponseBackend};
use crate::{Decision, HostError, Plugin, Request, Response};

pub use wit_handler::{ConfigError as WitConfigError, Guest, Registration as WitRegistration};
pub use wit_http::{Decision as WitDecision, Request as WitRequest, Response as WitResponse};

thread_local! {
    static PLUGIN: RefCell<Option<Box<dyn ErasedPlugin>>> = const { RefCell::new(None) };
}

/// The `init` export: parses the config, builds the plugin, keeps it, returns what it needs.
pub fn init<P: Plugin>(config: &str) -> Result<WitRegistration, WitConfigError> {
    let to_wit = |err: crate::ConfigError| WitConfigError {
        key: err.key,
        message: err.message,
    };
    let config = parse_config::<P::Config>(config).map_err(to_wit)?;
    let plugin = P::new(config).map_err(to_wit)?;
    let registration = plugin.registration();
    PLUGIN.with(|slot| match slot.try_borrow_mut() {
        Ok(mut slot) => {
            *slot = Some(Box::new(plugin));
            Ok(())
        }
        Err(_) => Err(WitConfigError {
            key: None,
            message: "plugin busy: init called during a hook".to_string(),
        }),
    })?;
    Ok(WitRegistration {
        on_request: registration.on_request,
        on_response: registration.on_response,
        request_body: registration.request_body,
        response_body: registration.response_body,
    })
}

/// The `on-request` export.
pub fn on_request(req: &WitRequest) -> Result<WitDecision, String> {
    with_plugin(|plugin| {
        let mut backend = HostRequest(req);
        let mut req = Request::new(&mut backend);
        plugin.on_request(&mut req)
    })
}

/// The `on-response` export.
pub fn on_response(req: &WitRequest, resp: &WitResponse) -> Result<WitDecision, String> {
    with_plugin(|plugin| {
        let mut req_backend = HostRequest(req);
        let mut resp_backend = HostResponse(resp);
        let mut req = Request::new(&mut req_backend);
        let mut resp = Response::new(&mut resp_backend);
        plugin.on_response(&mut req, &mut resp)
    })
}

fn with_plugin(
    hook: impl FnOnce(&mut dyn ErasedPlugin) -> Result<Decision, crate::Error>,
) -> Result<WitDecision, String> {
    PLUGIN.with(|slot| {
        let mut slot = slot
            .try_borrow_mut()
            .map_err(|_| "plugin busy: hook called during a hook".to_string())?;
        let plugin = slot
            .as_mut()
            .ok_or_else(|| "plugin not initialised".to_string())?;
        match hook(plugin.as_mut()) {
            Ok(Decision::Continue) => Ok(WitDecision::Continue),
            Ok(Decision::Respond(reply)) => Ok(WitDecision::Respond(wit_http::Reply {
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            })),
            Err(err) => Err(err.to_string()),
        }
    })
}

pub(crate) fn host_error(code: wit_http::ErrorCode) -> HostError {
    match code {
        wit_http::ErrorCode::InvalidName => HostError::InvalidName,
        wit_http::ErrorCode::InvalidValue => HostError::InvalidValue,
        wit_http::ErrorCode::BodyNotDeclared => HostError::BodyNotDeclared,
        wit_http::ErrorCode::BodyTooLarge => HostError::BodyTooLarge,
        wit_http::ErrorCode::NotAllowed => HostError::NotAllowed,
    }
}

/// The host's request resource, borrowed for one call.
struct HostRequest<'a>(&'a WitRequest);

impl RequestBackend for HostRequest<'_> {
    fn method(&self) -> String {
        self.0.method()
    }

    fn set_method(&mut self, method: &str) -> Result<(), HostError> {
        self.0.set_method(method).map_err(host_error)
    }

    fn path(&self) -> String {
        self.0.path()
    }

    fn set_path(&mut self, path: &str) -> Result<(), HostError> {
        self.0.set_path(path).map_err(host_error)
    }

    fn query(&self) -> Option<String> {
        self.0.query()
    }

    fn set_query(&mut self, query: Option<&str>) -> Result<(), HostError> {
        self.0.set_query(query).map_err(host_error)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.0.headers()
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.set_header(name, value).map_err(host_error)
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.append_header(name, value).map_err(host_error)
    }

    fn remove_header(&mut self, name: &str) {
        self.0.remove_header(name)
    }

    fn client_addr(&self) -> String {
        self.0.client_addr()
    }

    fn tls(&self) -> Option<crate::TlsInfo> {
        self.0.tls().map(|t| crate::TlsInfo {
            server_name: t.server_name,
            client_cert: t.client_cert.map(|c| crate::ClientCert {
                subject: c.subject,
                sans: c.sans,
            }),
        })
    }

    fn route(&self) -> String {
        self.0.route()
    }

    fn set_upstream(&mut self, name: &str) -> Result<(), HostError> {
        self.0.set_upstream(name).map_err(|e| match e {
            wit_http::UpstreamError::Unknown => HostError::UnknownUpstream,
            wit_http::UpstreamError::NotAllowed => HostError::NotAllowed,
        })
    }

    fn id(&self) -> String {
        self.0.id()
    }

    fn body(&self) -> Result<Vec<u8>, HostError> {
        self.0.body().map_err(host_error)
    }

    fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        self.0.set_body(body).map_err(host_error)
    }

    fn limit_response_body(&mut self, max_bytes: usize) -> Result<(), HostError> {
        self.0
            .limit_response_body(max_bytes as u64)
            .map_err(host_error)
    }

    fn var(&self, name: &str) -> Option<String> {
        self.0.get_var(name)
    }

    fn set_var(&mut self, name: &str, value: &str) {
        self.0.set_var(name, value)
    }

    fn queue_response_header(
        &mut self,
        name: &str,
        value: Option<&str>,
        append: bool,
    ) -> Result<(), HostError> {
        match value {
            Some(value) if append => self.0.append_response_header(name, value),
            Some(value) => self.0.set_response_header(name, value),
            None => self.0.remove_response_header(name),
        }
        .map_err(host_error)
    }

    fn queue_response_header_from_var(&mut self, name: &str, var: &str) -> Result<(), HostError> {
        self.0
            .set_response_header_from_var(name, var)
            .map_err(host_error)
    }
}

/// The host's response resource, borrowed for one call.
struct HostResponse<'a>(&'a WitResponse);

impl ResponseBackend for HostResponse<'_> {
    fn status(&self) -> u16 {
        self.0.status()
    }

    fn set_status(&mut self, status: u16) -> Result<(), HostError> {
        self.0.set_status(status).map_err(host_error)
    }

    fn header(&self, name: &str) -> Option<String> {
        self.0.header(name)
    }

    fn header_values(&self, name: &str) -> Vec<String> {
        self.0.header_values(name)
    }

    fn headers(&self) -> Vec<(String, String)> {
        self.0.headers()
    }

    fn set_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.set_header(name, value).map_err(host_error)
    }

    fn append_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        self.0.append_header(name, value).map_err(host_error)
    }

    fn remove_header(&mut self, name: &str) {
        self.0.remove_header(name)
    }

    fn body(&self) -> Result<Vec<u8>, HostError> {
        self.0.body().map_err(host_error)
    }

    fn set_body(&mut self, body: &[u8]) -> Result<(), HostError> {
        self.0.set_body(body).map_err(host_error)
    }
}
