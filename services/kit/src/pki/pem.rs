//! Loading PEM files into rustls types and reading the participant id out of a certificate.

use std::path::Path;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

use super::PkiError;
use super::files::read_file;

/// Prefix of the URI SAN that carries a participant id: `urn:shlyuz:participant:<id>`.
pub const PARTICIPANT_URI_PREFIX: &str = "urn:shlyuz:participant:";

/// Loads every certificate of a PEM file, in file order (leaf first for a chain).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let pem_bytes = read_file(path)?;
    let certs = rustls_pemfile::certs(&mut pem_bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| PkiError::InvalidPem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Loads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    let pem_bytes = read_file(path)?;
    let private_key = rustls_pemfile::private_key(&mut pem_bytes.as_slice()).map_err(|source| {
        PkiError::InvalidPem {
            path: path.to_path_buf(),
            source,
        }
    })?;
    private_key.ok_or_else(|| PkiError::NoPrivateKey {
        path: path.to_path_buf(),
    })
}

/// Returns the participant id of a DER certificate: its `urn:shlyuz:participant:` URI SAN, else
/// its subject common name.
///
/// This does not verify the certificate; call it on a certificate rustls has already verified.
pub fn participant_id_from_cert(der: &[u8]) -> Result<String, PkiError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|error| PkiError::InvalidCertificate {
            reason: error.to_string(),
        })?;
    let subject_alt_name =
        cert.subject_alternative_name()
            .map_err(|error| PkiError::InvalidCertificate {
                reason: format!("bad subject alternative name extension: {error}"),
            })?;

    let mut uri_ids: Vec<&str> = Vec::new();
    if let Some(subject_alt_name) = subject_alt_name {
        for general_name in &subject_alt_name.value.general_names {
            let GeneralName::URI(uri) = general_name else {
                continue;
            };
            let Some(id) = uri.strip_prefix(PARTICIPANT_URI_PREFIX) else {
                continue;
            };
            if !id.is_empty() && !uri_ids.contains(&id) {
                uri_ids.push(id);
            }
        }
    }
    // A certificate speaking for two participants is more likely a mistake or an attack than
    // something to resolve by picking one.
    // Only the URI SAN names a participant: a subject CN is free text that any certificate of the
    // CA may carry, and is never read as an identity.
    match uri_ids.as_slice() {
        [id] => Ok((*id).to_string()),
        [] => Err(PkiError::NoParticipantId),
        _ => Err(PkiError::InvalidCertificate {
            reason: format!(
                "certificate names several participants: {}",
                uri_ids.join(", ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn self_signed_der(params: &CertificateParams) -> Vec<u8> {
        let key_pair = KeyPair::generate().unwrap();
        params.self_signed(&key_pair).unwrap().der().to_vec()
    }

    #[test]
    fn a_common_name_alone_names_no_participant() {
        let mut params = CertificateParams::new(vec!["sdu.example".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "sdu");

        let error = participant_id_from_cert(&self_signed_der(&params)).unwrap_err();

        assert!(matches!(error, PkiError::NoParticipantId), "{error}");
    }

    #[test]
    fn participant_id_prefers_uri_san_over_common_name() {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "ops.example");
        params.subject_alt_names = vec![
            SanType::URI("https://ops.example".try_into().unwrap()),
            SanType::URI("urn:shlyuz:participant:ops".try_into().unwrap()),
        ];

        let participant_id = participant_id_from_cert(&self_signed_der(&params)).unwrap();

        assert_eq!(participant_id, "ops");
    }

    #[test]
    fn participant_id_rejects_two_participant_uris() {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![
            SanType::URI("urn:shlyuz:participant:ops".try_into().unwrap()),
            SanType::URI("urn:shlyuz:participant:gateway".try_into().unwrap()),
        ];

        let error = participant_id_from_cert(&self_signed_der(&params)).unwrap_err();

        assert!(
            matches!(error, PkiError::InvalidCertificate { .. }),
            "{error}"
        );
    }

    #[test]
    fn participant_id_requires_some_identity() {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();

        let error = participant_id_from_cert(&self_signed_der(&params)).unwrap_err();

        assert!(matches!(error, PkiError::NoParticipantId), "{error}");
    }

    #[test]
    fn participant_id_rejects_garbage() {
        let error = participant_id_from_cert(b"not a certificate").unwrap_err();

        assert!(
            matches!(error, PkiError::InvalidCertificate { .. }),
            "{error}"
        );
    }

    #[test]
    fn load_certs_names_the_path_and_the_problem() {
        let temp_dir = tempfile::tempdir().unwrap();
        let key_only_path = temp_dir.path().join("key-only.pem");
        std::fs::write(&key_only_path, KeyPair::generate().unwrap().serialize_pem()).unwrap();

        let missing_error = load_certs(&temp_dir.path().join("absent.pem")).unwrap_err();
        let no_cert_error = load_certs(&key_only_path).unwrap_err();

        assert!(matches!(missing_error, PkiError::MissingFile { .. }));
        assert!(missing_error.to_string().contains("absent.pem"));
        assert!(matches!(no_cert_error, PkiError::NoCertificate { .. }));
        assert_eq!(
            no_cert_error.to_string(),
            format!("no PEM certificate found in {}", key_only_path.display())
        );
    }

    #[test]
    fn load_private_key_names_the_path_and_the_problem() {
        let temp_dir = tempfile::tempdir().unwrap();
        let cert_only_path = temp_dir.path().join("cert-only.pem");
        let key_path = temp_dir.path().join("tls.key");
        let key_pair = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        std::fs::write(&cert_only_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();

        let no_key_error = load_private_key(&cert_only_path).unwrap_err();
        let private_key = load_private_key(&key_path).unwrap();

        assert!(matches!(no_key_error, PkiError::NoPrivateKey { .. }));
        assert!(no_key_error.to_string().contains("cert-only.pem"));
        assert!(matches!(private_key, PrivateKeyDer::Pkcs8(_)));
    }
}
