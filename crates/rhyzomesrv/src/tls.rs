//! TLS for the API: loading the configured certificate and key into a rustls server
//! configuration, and making a self-signed certificate for a home server
//! (`rhyzomesrv cert create`). Pure setup code, run once at start-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{0} holds no PEM private key")]
    NoKey(PathBuf),
    #[error("TLS configuration refused: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A rustls server configuration for `cert` (a PEM chain) and `key` (PEM, any format).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key_der = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|source| TlsError::Read {
            path: key.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(key.to_path_buf()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `cert.pem` and `key.pem` (mode 0600) for `names` (host names or IP addresses)
/// into `dir`; returns the certificate's SHA-256 fingerprint, which clients can pin.
pub fn create_self_signed(dir: &Path, names: &[String]) -> Result<String, TlsError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    let write = |name: &str, contents: &str, mode: u32| -> Result<PathBuf, TlsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .map_err(|source| TlsError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write("key.pem", &certified.signing_key.serialize_pem(), 0o600)?;
    write("cert.pem", &certified.cert.pem(), 0o644)?;
    Ok(fingerprint(certified.cert.der()))
}

/// `sha256:` and the hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(der)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_loads() {
        let dir = tempfile::tempdir().unwrap();
        let fp = create_self_signed(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert!(fp.starts_with("sha256:") && fp.len() == 71);
        server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(matches!(
            server_config(&dir.path().join("key.pem"), &dir.path().join("key.pem")),
            Err(TlsError::NoCertificate(_))
        ));
    }
}
