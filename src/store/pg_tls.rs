//! TLS to PostgreSQL, when the URL asks for it (`sslmode=require`), with
//! rustls (the same TLS stack as the HTTP client) through
//! `tokio-postgres-rustls`.
//!
//! The server's certificate is always verified, name included: against
//! the Mozilla roots, or against the CA in `sslrootcert=<file>` (a managed
//! database's CA bundle, a private CA) as libpq takes it. libpq's
//! `verify-ca` and `verify-full` are therefore the same as `require` here,
//! and are accepted as such. Without `sslmode=require` connections are
//! plain, as before (a server's optional, often self-signed, certificate
//! is not tried).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::db::StoreError;

/// A connection string with what tokio-postgres does not read taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The URL or key-value string for tokio-postgres.
    pub url: String,
    /// `sslrootcert`: the CA certificates (PEM) to verify the server with.
    pub root_cert: Option<PathBuf>,
}

/// Takes `sslrootcert` out of `url` (tokio-postgres refuses it) and reads
/// libpq's `sslmode=verify-ca`/`verify-full` as `require` (the certificate
/// is always verified here). Both URL (`postgres://…?a=b&c=d`) and
/// key-value (`host=… sslmode=…`) forms.
pub fn prepare(url: &str) -> Prepared {
    let mut root_cert = None;
    let mut keep = |key: &str, value: &str| -> Option<String> {
        match key {
            "sslrootcert" => {
                root_cert = Some(PathBuf::from(value));
                None
            }
            "sslmode" if value == "verify-ca" || value == "verify-full" => {
                Some("sslmode=require".into())
            }
            _ => Some(format!("{key}={value}")),
        }
    };
    let url = if let Some((base, query)) = url.split_once('?')
        && url.contains("://")
    {
        let params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                keep(k, v)
            })
            .collect();
        if params.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", params.join("&"))
        }
    } else if url.contains("://") {
        url.to_string()
    } else {
        url.split_whitespace()
            .filter_map(|p| match p.split_once('=') {
                Some((k, v)) => keep(k, v),
                None => Some(p.to_string()),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Prepared { url, root_cert }
}

/// The TLS connector: Mozilla roots, or the CA certificates in `root_cert`.
pub fn connector(
    root_cert: Option<&Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    let bad = |why: String| StoreError::Config(why);
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("cannot read sslrootcert {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| bad(format!("sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("sslrootcert {}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(bad(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                )));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(format!("TLS settings: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslrootcert_is_taken_out_and_verify_modes_read_as_require() {
        let p = prepare(
            "postgres://h:pw@db:5432/x?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=a",
        );
        assert_eq!(
            p.url,
            "postgres://h:pw@db:5432/x?sslmode=require&application_name=a"
        );
        assert_eq!(p.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        let p = prepare("postgres://h@db/x?sslrootcert=/ca.pem");
        assert_eq!(
            (p.url.as_str(), p.root_cert.is_some()),
            ("postgres://h@db/x", true)
        );
        let p = prepare("host=db sslmode=verify-ca sslrootcert=/ca.pem dbname=x");
        assert_eq!(p.url, "host=db sslmode=require dbname=x");
        assert_eq!(p.root_cert.as_deref(), Some(Path::new("/ca.pem")));
        let plain = "postgres://h@db/x";
        assert_eq!(
            prepare(plain),
            Prepared {
                url: plain.into(),
                root_cert: None
            }
        );
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let e = connector(Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("/nonexistent/ca.pem"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap_or_else(|e| panic!("{e}"));
        let e = connector(Some(&empty)).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("no certificate"));
        assert!(connector(None).is_ok());
    }
}
