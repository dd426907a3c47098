//! Certificate pinning for the client: trust exactly one server certificate, named by its
//! SHA-256 fingerprint, instead of a CA. Suits a home server with a self-signed certificate:
//! `rhyzomesrv cert create` prints the fingerprint to pin. Signatures are still verified with
//! the certificate's key, so a stolen certificate without its key does not pass.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use std::sync::Arc;

#[derive(Debug)]
pub struct PinnedCertificate {
    sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCertificate {
    /// `fingerprint` is `sha256:<64 hex digits>` (colons between bytes are allowed).
    pub fn parse(fingerprint: &str) -> Option<Self> {
        let hexits: String = fingerprint
            .strip_prefix("sha256:")
            .unwrap_or(fingerprint)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        let bytes = hex::decode(hexits).ok()?;
        Some(PinnedCertificate {
            sha256: bytes.try_into().ok()?,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    pub fn client_config(self) -> rustls::ClientConfig {
        let provider = self.provider.clone();
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth()
    }
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha2::Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate does not match the pinned fingerprint".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_both_spellings() {
        let hex64 = "ab".repeat(32);
        assert!(PinnedCertificate::parse(&format!("sha256:{hex64}")).is_some());
        let colons = vec!["AB"; 32].join(":");
        assert!(PinnedCertificate::parse(&colons).is_some());
        assert!(PinnedCertificate::parse("sha256:abcd").is_none());
        assert!(PinnedCertificate::parse("nonsense").is_none());
    }
}
