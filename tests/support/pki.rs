//! Test certificates, made with rcgen: a CA, and leaf certificates it signs for servers and
//! clients, written as PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A leaf certificate and its key, as PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

/// The paths a leaf was written to.
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (its SANs; the first is also its common name).
    pub fn server(&self, names: &[&str], serial: u64) -> Leaf {
        self.leaf(
            names,
            names.first().copied().unwrap_or("no name"),
            serial,
            |p| {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            },
        )
    }

    /// A client certificate with this common name and SANs.
    pub fn client(&self, common_name: &str, sans: &[&str]) -> Leaf {
        self.leaf(sans, common_name, 1, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        })
    }

    /// A leaf with any other change to its parameters (validity, for one).
    pub fn leaf(
        &self,
        sans: &[&str],
        common_name: &str,
        serial: u64,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(SerialNumber::from(serial));
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, &self.pem).unwrap();
        p
    }

    /// A rustls client config that trusts this CA, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
        Arc::new(config)
    }
}

use rustls::pki_types::pem::PemObject;

impl Leaf {
    /// Writes `NAME.pem` and `NAME.key` into `dir`, each through a rename, as deploy tools
    /// replace files.
    pub fn write(&self, dir: &Path, name: &str) -> Files {
        let files = Files {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        for (path, text) in [(&files.key, &self.key), (&files.cert, &self.cert)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        files
    }
}

/// A TOML inline table `{ cert = "…", key = "…" }` for these files.
pub fn cert_entry(f: &Files) -> String {
    format!(
        "{{ cert = {:?}, key = {:?} }}",
        f.cert.display().to_string(),
        f.key.display().to_string()
    )
}
