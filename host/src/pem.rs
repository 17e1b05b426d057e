//! Certificates and keys read from PEM files, with the messages config errors carry: each
//! names the file and what was wrong with it.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Every certificate in a PEM file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), message(e, "certificate")))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no PEM certificate", path.display()));
    }
    Ok(chain)
}

/// The first private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        format!(
            "{}: {}",
            path.display(),
            message(e, "private key (PKCS#8, PKCS#1 or SEC1)")
        )
    })
}

fn message(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("holds no PEM {what}"),
        other => format!("is not a valid PEM {what}: {other:?}"),
    }
}
