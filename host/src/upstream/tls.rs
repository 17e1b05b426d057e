//! TLS to `https://` targets: the roots to trust (the system's, or the upstream's `ca_file`),
//! the name sent as SNI and checked against the certificate, an optional client certificate
//! (mutual TLS), and `tls_verify = false`, which checks nothing and says so in the log.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{UpstreamConfig, UpstreamProtocol};
use crate::pem::{read_certs, read_key};

/// What connecting to one `https://` target needs.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// The name to send and check for a target on `host`: `tls_server_name` when set.
pub fn server_name(cfg: &UpstreamConfig, host: &str) -> Result<ServerName<'static>, String> {
    let name = cfg.tls_server_name.as_deref().unwrap_or(host);
    // A bracketed IPv6 host is an address without its brackets.
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("`{name}` is not a DNS name or IP address to check a certificate for"))
}

/// The upstream's client config, for all its `https://` targets. Problems name their key.
pub fn client_config(
    upstream: &str,
    cfg: &UpstreamConfig,
    base: &Path,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if !cfg.tls_verify {
        tracing::warn!(
            upstream,
            "tls_verify = false: the certificates of this upstream's https:// targets are not checked"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
    } else {
        let roots = match &cfg.ca_file {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in read_certs(&base.join(ca)).map_err(|e| format!("ca_file: {e}"))? {
                    roots
                        .add(c)
                        .map_err(|e| format!("ca_file: {}: {e}", base.join(ca).display()))?;
                }
                Arc::new(roots)
            }
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    let mut config = match &cfg.client_cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain =
                read_certs(&base.join(&c.cert)).map_err(|e| format!("client_cert.cert: {e}"))?;
            let key = read_key(&base.join(&c.key)).map_err(|e| format!("client_cert.key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert: {e}"))?
        }
    };
    config.alpn_protocols = match cfg.protocol {
        UpstreamProtocol::Http1 => vec![b"http/1.1".to_vec()],
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
    };
    Ok(Arc::new(config))
}

/// The client config of plugins' calls to `https://` origins: the system's roots, HTTP/1.1.
pub fn origin_client_config() -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(system_roots()?)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The same without roots, for a machine with none: every `https://` origin fails its
/// handshake (a grant of one is refused at load).
pub fn origin_client_config_without_roots() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.into()
}

/// The system's trusted roots, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no trusted roots found in the system's store ({}); set ca_file",
                    found
                        .errors
                        .first()
                        .map_or("it is empty".to_owned(), |e| e.to_string())
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
}

/// `tls_verify = false`: any certificate is accepted, but the handshake's signatures are still
/// checked (the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
