//! TLS for the proxy listener: the certificates of `[server.tls]`, chosen by SNI, checked
//! when they are loaded, and rebuilt with every reload (so a rotated certificate goes live
//! like any other change to the config's files).
//!
//! The session ticket key and the session cache are made once ([`Sessions`]) and kept by every
//! config a reload builds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::config::{ClientAuth, TlsConfig, TlsVersion};
use crate::pem::{read_certs, read_key};

/// Sessions remembered for resumption by id, across workers.
const SESSION_CACHE_ENTRIES: usize = 20_000;

/// A certificate this close to expiry is loaded with a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// What session resumption keeps across reloads: the ticket key (rustls's ticketer) and the
/// cache of sessions resumed by id.
pub struct Sessions {
    ticketer: Arc<dyn ProducesTickets>,
    cache: Arc<dyn StoresServerSessions>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| anyhow::anyhow!("making the TLS session ticket key: {e}"))?,
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the rustls config `[server.tls]` describes, reading its files (relative to
/// `base`). Every problem is returned, each naming its key and file.
pub fn load(
    tls: &TlsConfig,
    base: &Path,
    sessions: &Sessions,
) -> Result<Arc<ServerConfig>, Vec<String>> {
    let provider = provider();
    let now = SystemTime::now();
    let mut problems = Vec::new();
    let mut keys = Vec::with_capacity(tls.certs.len());
    for (i, c) in tls.certs.iter().enumerate() {
        let at = format!("server.tls.certs[{i}]");
        match load_pair(&base.join(&c.cert), &base.join(&c.key), &provider, now) {
            Ok(k) => {
                if i > 0 && k.names.is_empty() {
                    problems.push(format!(
                        "{at}.cert: {} has no DNS name in its subjectAltName, so SNI can never choose it (only the first certificate is the default)",
                        base.join(&c.cert).display()
                    ));
                }
                keys.push(k);
            }
            Err(e) => problems.push(format!("{at}.{e}")),
        }
    }
    let verifier = match &tls.client_ca {
        None => None,
        Some(ca) => match client_verifier(
            &base.join(ca),
            tls.client_auth.unwrap_or(ClientAuth::Required),
            &provider,
        ) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(format!("server.tls.client_ca: {e}"));
                None
            }
        },
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| vec![format!("server.tls.min_version: {e}")])?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(ByName::new(keys)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = sessions.cache.clone();
    if tls.session_tickets {
        config.ticketer = sessions.ticketer.clone();
    }
    Ok(Arc::new(config))
}

/// A loaded certificate chain and key, with the DNS names it answers for.
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

/// Reads and checks one `{ cert, key }` pair. The error starts with the key (`cert` or
/// `key`) it is about.
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Loaded, String> {
    let chain = read_certs(cert).map_err(|e| format!("cert: {e}"))?;
    let leaf = Leaf::parse(&chain[0]).map_err(|e| format!("cert: {}: {e}", cert.display()))?;
    leaf.check_validity(now)
        .map_err(|e| format!("cert: {}: {e}", cert.display()))?;
    let der = read_key(key).map_err(|e| format!("key: {e}"))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("key: {}: not a usable private key: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "key: {} is not the key of the certificate in {}",
                key.display(),
                cert.display()
            ));
        }
        // The key's type cannot say (`Unknown`): the handshake will tell.
        Err(_) => {}
    }
    if let Ok(left) = leaf.not_after.duration_since(now)
        && left < EXPIRY_WARNING
    {
        tracing::warn!(
            cert = %cert.display(),
            days_left = left.as_secs() / 86_400,
            "a TLS certificate expires soon"
        );
    }
    Ok(Loaded {
        key: Arc::new(certified),
        names: leaf.dns_names,
    })
}

/// What the gateway reads from a certificate itself.
struct Leaf {
    not_before: SystemTime,
    not_after: SystemTime,
    dns_names: Vec<String>,
}

impl Leaf {
    fn parse(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("the first certificate is not valid X.509: {e}"))?;
        let validity = cert.validity();
        let at = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
        };
        let dns_names = names(&cert).dns;
        Ok(Self {
            not_before: at(validity.not_before),
            not_after: at(validity.not_after),
            dns_names,
        })
    }

    fn check_validity(&self, now: SystemTime) -> Result<(), String> {
        if now > self.not_after {
            return Err(format!("expired on {}", http_date(self.not_after)));
        }
        if now < self.not_before {
            return Err(format!(
                "is not valid before {}",
                http_date(self.not_before)
            ));
        }
        Ok(())
    }
}

fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map_or_else(|_| format!("{secs} (Unix time)"), |t| t.to_string())
}

/// A certificate's subject alternative names, by kind.
#[derive(Debug, Default)]
struct Names {
    dns: Vec<String>,
    other: Vec<String>,
}

fn names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Names {
    use x509_parser::extensions::GeneralName;
    let mut out = Names::default();
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return out;
    };
    for n in &san.value.general_names {
        match n {
            GeneralName::DNSName(d) => out.dns.push(d.to_ascii_lowercase()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => out.other.push(
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")).to_string(),
                ),
                16 => out.other.push(
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))
                        .to_string(),
                ),
                _ => {}
            },
            GeneralName::RFC822Name(m) => out.other.push(format!("email:{m}")),
            GeneralName::URI(u) => out.other.push(u.to_string()),
            _ => {}
        }
    }
    out
}

fn client_verifier(
    path: &Path,
    auth: ClientAuth,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(path)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: a certificate cannot be a CA: {e}", path.display()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = match auth {
        ClientAuth::Required => builder,
        ClientAuth::Optional => builder.allow_unauthenticated(),
    };
    builder
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Chooses a certificate by the client's SNI: an exact name, then a wildcard one level up,
/// then the default (the first in the config).
#[derive(Debug)]
struct ByName {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By what follows `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl ByName {
    fn new(loaded: Vec<Loaded>) -> Self {
        let default = loaded[0].key.clone();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for l in loaded {
            for n in l.names {
                // The first certificate to name a host keeps it.
                match n.strip_prefix("*.") {
                    Some(rest) => wildcard.entry(rest.to_owned()),
                    None => exact.entry(n),
                }
                .or_insert_with(|| l.key.clone());
            }
        }
        Self {
            default,
            exact,
            wildcard,
        }
    }

    fn find(&self, name: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.find(&name.to_ascii_lowercase())
        } else {
            self.find(name)
        };
        Some(found.unwrap_or(&self.default).clone())
    }
}

/// What a TLS connection tells the requests on it.
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// The name the client asked for (SNI).
    pub sni: Option<Box<str>>,
    /// The client's certificate, when it presented one (mutual TLS).
    pub client: Option<ClientCert>,
}

#[derive(Debug)]
pub struct ClientCert {
    /// The subject's distinguished name, as RFC 4514 text (`CN=alice,O=Example`).
    pub subject: String,
    /// Its subject alternative names: DNS names, IP addresses, `email:` addresses, URIs.
    pub sans: Vec<String>,
}

impl TlsInfo {
    pub fn of(conn: &ServerConnection) -> Self {
        let client = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
                let names = names(&cert);
                Some(ClientCert {
                    subject: cert.subject().to_string(),
                    sans: names.dns.into_iter().chain(names.other).collect(),
                })
            });
        Self {
            sni: conn.server_name().map(Into::into),
            client,
        }
    }
}
