//! Whose fault a failed request was. Logs carry it as the `fault` field, so an operator can
//! tell a client that gave up from an upstream that broke without reading the message.

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client: a malformed, stalled or abandoned request.
    Client,
    /// The upstream: unreachable, silent, or an invalid response.
    Upstream,
    /// The gateway itself: out of a local resource.
    Gateway,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Upstream => "upstream",
            Self::Gateway => "gateway",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
