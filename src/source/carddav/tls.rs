//! Which server certificates a source trusts: the system's roots and the built-in (Mozilla)
//! list, plus the source's `ca_file`; or, with `verify_fingerprint`, exactly the one pinned
//! certificate (vdirsyncer's convention: a self-signed certificate needs no CA then).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;

/// A `ca_file` may be at most this large (a bundle of a few hundred certificates).
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// Sets up TLS of `builder` for the source's keys; the error names the key.
pub(super) fn configure(
    builder: reqwest::ClientBuilder,
    ca_file: Option<&Path>,
    pin: Option<&str>,
) -> Result<reqwest::ClientBuilder, String> {
    if let Some(pin) = pin {
        let fingerprint = crate::config::parse_fingerprint(pin)
            .ok_or("verify_fingerprint is not a SHA-256 fingerprint")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| format!("cannot set up TLS: {err}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint,
                provider,
            }))
            .with_no_client_auth();
        return Ok(builder.use_preconfigured_tls(config));
    }
    let mut builder = builder
        .tls_built_in_root_certs(true)
        .tls_built_in_native_certs(true);
    if let Some(path) = ca_file {
        for certificate in read_ca_file(path)? {
            builder = builder.add_root_certificate(certificate);
        }
    }
    Ok(builder)
}

/// The certificates of a `ca_file`: a regular file (not a FIFO or device that never ends),
/// read up to its cap, holding at least one PEM certificate.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let cannot = |err: String| format!("cannot read ca_file {}: {err}", path.display());
    // Never blocks on a FIFO; refuses anything but a regular file.
    let file = crate::regular_file::open(path).map_err(|e| cannot(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(e.to_string()))?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(cannot(format!(
            "larger than {} KiB",
            MAX_CA_FILE_BYTES >> 10
        )));
    }
    let certificates = reqwest::Certificate::from_pem_bundle(&bytes)
        .map_err(|e| cannot(format!("not PEM certificates ({e})")))?;
    if certificates.is_empty() {
        return Err(cannot(
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certificates)
}

/// Accepts the one certificate whose SHA-256 is the pin; the handshake's signatures are
/// still checked against it, so the server must hold its key.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is not the one verify_fingerprint pins (its SHA-256 is {})",
                seen.iter()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join(":")
            )))
        }
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
            &self.provider.signature_verification_algorithms,
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
    fn a_ca_file_must_be_a_bounded_regular_file_with_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_ca_file(dir.path()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'A'; (MAX_CA_FILE_BYTES + 1) as usize]).unwrap();
        let err = read_ca_file(&big).unwrap_err();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        let err = read_ca_file(&empty).unwrap_err();
        assert!(err.contains("no certificate in it"), "{err}");
        let err = read_ca_file(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.contains("cannot read ca_file"), "{err}");
    }
}
