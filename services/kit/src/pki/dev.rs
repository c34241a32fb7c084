//! The development PKI that `shlyuz up` creates under `<data-dir>/pki/` and reuses afterwards.
//!
//! Layout:
//!
//! ```text
//! pki/ca.pem, pki/ca.key                  development CA (ECDSA P-256)
//! pki/<id>/tls.pem, pki/<id>/tls.key      participant TLS leaf, server and client auth (ECDSA P-256)
//! pki/<id>/signing.key, signing.pub       participant Ed25519 envelope-signing key pair
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PublicKeyData, RevocationReason, RevokedCertParams,
    SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::PkiError;
use super::files::{
    FileVisibility, create_dir_all, file_exists, read_file_to_string, write_new_file,
};
use super::pem::{PARTICIPANT_URI_PREFIX, load_certs, participant_id_from_cert};
use super::signing::{SigningKey, VerifyingKey};

const CA_COMMON_NAME: &str = "Shlyuz development CA";
const UNTRUSTED_CA_COMMON_NAME: &str = "Shlyuz untrusted test CA";
const ORGANIZATION: &str = "Shlyuz";
const CA_VALIDITY: Duration = Duration::days(3650);
const LEAF_VALIDITY: Duration = Duration::days(730);
/// Certificates start a little in the past so that a peer whose clock lags behind still accepts
/// a certificate issued a moment ago.
const BACKDATE: Duration = Duration::hours(1);
const MAX_PARTICIPANT_ID_LEN: usize = 63;

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const TLS_CERT_FILE: &str = "tls.pem";
const TLS_KEY_FILE: &str = "tls.key";
const SIGNING_KEY_FILE: &str = "signing.key";
const SIGNING_PUBLIC_KEY_FILE: &str = "signing.pub";

/// Paths of one participant's PKI files, as written into `endpoints.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantFiles {
    /// Participant id, also the directory name and the certificate's CN.
    pub id: String,
    /// PEM certificate for TLS, usable as server and client certificate.
    pub tls_cert: PathBuf,
    /// PKCS#8 PEM private key of `tls_cert`.
    pub tls_key: PathBuf,
    /// PKCS#8 PEM Ed25519 private key for signing message envelopes.
    pub signing_key: PathBuf,
    /// SubjectPublicKeyInfo PEM Ed25519 public key matching `signing_key`.
    pub signing_public_key: PathBuf,
}

impl ParticipantFiles {
    fn in_dir(participant_id: &str, participant_dir: &Path) -> ParticipantFiles {
        ParticipantFiles {
            id: participant_id.to_string(),
            tls_cert: participant_dir.join(TLS_CERT_FILE),
            tls_key: participant_dir.join(TLS_KEY_FILE),
            signing_key: participant_dir.join(SIGNING_KEY_FILE),
            signing_public_key: participant_dir.join(SIGNING_PUBLIC_KEY_FILE),
        }
    }
}

/// A development CA on disk plus the participant files it has issued.
#[derive(Debug)]
pub struct DevPki {
    dir: PathBuf,
    ca_cert_path: PathBuf,
    ca_cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    participants: Vec<ParticipantFiles>,
}

impl DevPki {
    /// The certificate files `participant` presents (client) or serves with (server), with the
    /// CA that verifies the other side; `None` when the participant has no files here.
    pub fn tls_files(&self, participant: &str) -> Option<crate::server::TlsFiles> {
        let files = self.participant(participant)?;
        Some(crate::server::TlsFiles {
            ca_cert: self.ca_cert_path().to_path_buf(),
            cert: files.tls_cert,
            key: files.tls_key,
        })
    }

    /// Loads the CA under `dir` (creating it on first use) and issues the files of every listed
    /// participant that lacks them; existing files are reused, never overwritten.
    pub fn ensure(dir: &Path, participants: &[&str]) -> Result<DevPki, PkiError> {
        for participant_id in participants {
            validate_participant_id(participant_id)?;
        }
        create_dir_all(dir)?;
        // Absolute paths, because they end up in endpoints.json and are read by processes that
        // may run from another working directory.
        let dir = std::path::absolute(dir).map_err(|source| PkiError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_cert_path = dir.join(CA_CERT_FILE);
        let ca_key_path = dir.join(CA_KEY_FILE);
        ensure_ca_files(&ca_cert_path, &ca_key_path)?;
        let (ca_cert_der, issuer) = load_ca(&ca_cert_path, &ca_key_path)?;

        let mut dev_pki = DevPki {
            dir,
            ca_cert_path,
            ca_cert_der,
            issuer,
            participants: Vec::with_capacity(participants.len()),
        };
        for participant_id in participants {
            if dev_pki.participant(participant_id).is_some() {
                continue;
            }
            let participant_files = dev_pki.ensure_participant(participant_id)?;
            dev_pki.participants.push(participant_files);
        }
        Ok(dev_pki)
    }

    /// Directory holding the CA and the participant directories.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the CA certificate (PEM), the trust anchor of every server and client.
    pub fn ca_cert_path(&self) -> &Path {
        &self.ca_cert_path
    }

    /// Files of the participant `participant_id`, if it was passed to [`DevPki::ensure`].
    pub fn participant(&self, participant_id: &str) -> Option<ParticipantFiles> {
        self.participants
            .iter()
            .find(|participant_files| participant_files.id == participant_id)
            .cloned()
    }

    /// Files of every participant passed to [`DevPki::ensure`], in the order given.
    pub fn participants(&self) -> &[ParticipantFiles] {
        &self.participants
    }

    /// Issues a fresh TLS leaf for `participant_id` with the given validity, returning
    /// `(cert_pem, key_pem)` without writing anything; tests use it for e.g. expired certificates.
    pub fn issue_leaf(
        &self,
        participant_id: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<(String, String), PkiError> {
        validate_participant_id(participant_id)?;
        let key_pair = generate_key_pair(&PKCS_ECDSA_P256_SHA256, "TLS key")?;
        let cert_pem = sign_leaf(
            &self.issuer,
            participant_id,
            &key_pair,
            not_before,
            not_after,
        )?;
        Ok((cert_pem, key_pair.serialize_pem()))
    }

    /// A certificate revocation list signed by the CA, valid for a week, that revokes each
    /// certificate (PEM) of `revoked`; `crl_number` should grow with every list issued. Returns
    /// the CRL as PEM (`-----BEGIN X509 CRL-----`).
    pub fn revocation_list(&self, revoked: &[&str], crl_number: u64) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for cert_pem in revoked {
            let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
                .next()
                .and_then(Result::ok)
                .ok_or_else(|| PkiError::InvalidCertificate {
                    reason: "no PEM certificate to revoke".to_string(),
                })?;
            let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).map_err(|error| {
                PkiError::InvalidCertificate {
                    reason: error.to_string(),
                }
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(cert.raw_serial()),
                revocation_time: now - BACKDATE,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let generate = |source| PkiError::Generate {
            what: "certificate revocation list".to_string(),
            source,
        };
        params
            .signed_by(&self.issuer)
            .map_err(generate)?
            .pem()
            .map_err(generate)
    }

    fn ensure_participant(&self, participant_id: &str) -> Result<ParticipantFiles, PkiError> {
        let participant_dir = self.dir.join(participant_id);
        create_dir_all(&participant_dir)?;
        let participant_files = ParticipantFiles::in_dir(participant_id, &participant_dir);
        self.ensure_tls_files(&participant_files)?;
        ensure_signing_files(&participant_files)?;
        Ok(participant_files)
    }

    fn ensure_tls_files(&self, participant_files: &ParticipantFiles) -> Result<(), PkiError> {
        let cert_path = &participant_files.tls_cert;
        let key_path = &participant_files.tls_key;
        let key_pair = match (file_exists(cert_path)?, file_exists(key_path)?) {
            (true, true) => return self.check_tls_files(participant_files),
            (true, false) => {
                return Err(PkiError::IncompleteFiles {
                    present: cert_path.clone(),
                    missing: key_path.clone(),
                });
            }
            // The key is written before the certificate, so a key alone means a crash between the
            // two writes: certifying that key finishes the job without overwriting anything.
            (false, true) => load_key_pair(key_path)?,
            (false, false) => {
                let key_pair = generate_key_pair(&PKCS_ECDSA_P256_SHA256, "TLS key")?;
                write_new_file(
                    key_path,
                    key_pair.serialize_pem().as_bytes(),
                    FileVisibility::Private,
                )?;
                key_pair
            }
        };
        let now = OffsetDateTime::now_utc();
        let cert_pem = sign_leaf(
            &self.issuer,
            &participant_files.id,
            &key_pair,
            now - BACKDATE,
            now + LEAF_VALIDITY,
        )?;
        write_new_file(cert_path, cert_pem.as_bytes(), FileVisibility::Public)
    }

    /// Checks that reused TLS files still fit together and belong to this CA, so a stale
    /// directory fails here with a clear message rather than later as a TLS handshake error.
    fn check_tls_files(&self, participant_files: &ParticipantFiles) -> Result<(), PkiError> {
        let cert_path = &participant_files.tls_cert;
        let invalid_cert = |reason: String| PkiError::InvalidCertificateFile {
            path: cert_path.clone(),
            reason,
        };
        let cert_der = first_cert(cert_path)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|error| invalid_cert(error.to_string()))?;
        let key_pair = load_key_pair(&participant_files.tls_key)?;
        if cert.public_key().raw != key_pair.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch {
                key_path: participant_files.tls_key.clone(),
                other_path: cert_path.clone(),
            });
        }
        let (_, ca_cert) =
            x509_parser::parse_x509_certificate(&self.ca_cert_der).map_err(|error| {
                PkiError::InvalidCertificateFile {
                    path: self.ca_cert_path.clone(),
                    reason: error.to_string(),
                }
            })?;
        if cert.verify_signature(Some(ca_cert.public_key())).is_err() {
            return Err(PkiError::ForeignCertificate {
                cert_path: cert_path.clone(),
                ca_cert_path: self.ca_cert_path.clone(),
            });
        }
        let found_participant_id =
            participant_id_from_cert(&cert_der).map_err(|error| invalid_cert(error.to_string()))?;
        if found_participant_id != participant_files.id {
            return Err(PkiError::ParticipantMismatch {
                cert_path: cert_path.clone(),
                expected: participant_files.id.clone(),
                found: found_participant_id,
            });
        }
        Ok(())
    }
}

/// Issues a TLS leaf for `participant_id` from a throwaway CA nobody trusts, returning
/// `(cert_pem, key_pem)`; tests use it to check that foreign certificates are rejected.
pub fn issue_untrusted_leaf(participant_id: &str) -> Result<(String, String), PkiError> {
    validate_participant_id(participant_id)?;
    let now = OffsetDateTime::now_utc();
    let ca_key_pair = generate_key_pair(&PKCS_ECDSA_P256_SHA256, "untrusted CA key")?;
    let ca_params = ca_params(UNTRUSTED_CA_COMMON_NAME, now - BACKDATE, now + CA_VALIDITY);
    // Nobody will ever see the untrusted CA's own certificate, signing leaves needs only its
    // name and key.
    let untrusted_issuer = Issuer::new(ca_params, ca_key_pair);
    let key_pair = generate_key_pair(&PKCS_ECDSA_P256_SHA256, "TLS key")?;
    let cert_pem = sign_leaf(
        &untrusted_issuer,
        participant_id,
        &key_pair,
        now - BACKDATE,
        now + LEAF_VALIDITY,
    )?;
    Ok((cert_pem, key_pair.serialize_pem()))
}

/// Checks that a participant id is a lowercase DNS label (`gateway`, `jauynger-portal`), since it
/// becomes a directory name and a DNS SAN.
pub fn validate_participant_id(participant_id: &str) -> Result<(), PkiError> {
    let invalid = |reason: &'static str| PkiError::InvalidParticipantId {
        id: participant_id.to_string(),
        reason,
    };
    if participant_id.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if participant_id.len() > MAX_PARTICIPANT_ID_LEN {
        return Err(invalid("must be at most 63 characters"));
    }
    if !participant_id
        .bytes()
        .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
    {
        return Err(invalid("must contain only a-z, 0-9 and '-'"));
    }
    if participant_id.starts_with('-') || participant_id.ends_with('-') {
        return Err(invalid("must not start or end with '-'"));
    }
    Ok(())
}

/// Creates whichever CA file is missing; the key is written first so that a crash never leaves a
/// certificate without its key.
fn ensure_ca_files(ca_cert_path: &Path, ca_key_path: &Path) -> Result<(), PkiError> {
    let ca_key_pair = match (file_exists(ca_cert_path)?, file_exists(ca_key_path)?) {
        (true, true) => return Ok(()),
        (true, false) => {
            return Err(PkiError::IncompleteFiles {
                present: ca_cert_path.to_path_buf(),
                missing: ca_key_path.to_path_buf(),
            });
        }
        // A key alone means a crash right after writing it: self-sign that key rather than
        // overwrite it.
        (false, true) => load_key_pair(ca_key_path)?,
        (false, false) => {
            let ca_key_pair = generate_key_pair(&PKCS_ECDSA_P256_SHA256, "development CA key")?;
            write_new_file(
                ca_key_path,
                ca_key_pair.serialize_pem().as_bytes(),
                FileVisibility::Private,
            )?;
            ca_key_pair
        }
    };
    let now = OffsetDateTime::now_utc();
    let ca_cert = ca_params(CA_COMMON_NAME, now - BACKDATE, now + CA_VALIDITY)
        .self_signed(&ca_key_pair)
        .map_err(|source| PkiError::Generate {
            what: "development CA certificate".to_string(),
            source,
        })?;
    write_new_file(
        ca_cert_path,
        ca_cert.pem().as_bytes(),
        FileVisibility::Public,
    )
}

/// Loads the CA from disk, checking that it is a CA and that the key belongs to it.
fn load_ca(
    ca_cert_path: &Path,
    ca_key_path: &Path,
) -> Result<(CertificateDer<'static>, Issuer<'static, KeyPair>), PkiError> {
    let invalid_cert = |reason: String| PkiError::InvalidCertificateFile {
        path: ca_cert_path.to_path_buf(),
        reason,
    };
    let ca_cert_der = first_cert(ca_cert_path)?;
    let ca_key_pair = load_key_pair(ca_key_path)?;
    let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_cert_der)
        .map_err(|error| invalid_cert(error.to_string()))?;
    if !ca_cert.is_ca() {
        return Err(invalid_cert("not a CA certificate".to_string()));
    }
    if ca_cert.public_key().raw != ca_key_pair.subject_public_key_info().as_slice() {
        return Err(PkiError::KeyMismatch {
            key_path: ca_key_path.to_path_buf(),
            other_path: ca_cert_path.to_path_buf(),
        });
    }
    let issuer = Issuer::from_ca_cert_der(&ca_cert_der, ca_key_pair)
        .map_err(|error| invalid_cert(error.to_string()))?;
    Ok((ca_cert_der, issuer))
}

/// Creates the participant's Ed25519 key pair if missing, or checks that the existing halves match.
fn ensure_signing_files(participant_files: &ParticipantFiles) -> Result<(), PkiError> {
    let key_path = &participant_files.signing_key;
    let public_key_path = &participant_files.signing_public_key;
    let key_pair = match (file_exists(key_path)?, file_exists(public_key_path)?) {
        (true, true) => {
            let signing_key = SigningKey::from_pem_file(key_path)?;
            let verifying_key = VerifyingKey::from_pem_file(public_key_path)?;
            if signing_key.verifying_key() != verifying_key {
                return Err(PkiError::KeyMismatch {
                    key_path: key_path.clone(),
                    other_path: public_key_path.clone(),
                });
            }
            return Ok(());
        }
        (false, true) => {
            return Err(PkiError::IncompleteFiles {
                present: public_key_path.clone(),
                missing: key_path.clone(),
            });
        }
        // The private key is written first, so the public key can always be derived again.
        (true, false) => {
            let key_pair = load_key_pair(key_path)?;
            if key_pair.algorithm() != &PKCS_ED25519 {
                return Err(PkiError::InvalidKeyFile {
                    path: key_path.clone(),
                    reason: "expected an Ed25519 key".to_string(),
                });
            }
            key_pair
        }
        (false, false) => {
            let key_pair = generate_key_pair(&PKCS_ED25519, "signing key")?;
            write_new_file(
                key_path,
                key_pair.serialize_pem().as_bytes(),
                FileVisibility::Private,
            )?;
            key_pair
        }
    };
    write_new_file(
        public_key_path,
        key_pair.public_key_pem().as_bytes(),
        FileVisibility::Public,
    )
}

fn ca_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    // Path length 0: the CA signs leaves only, never intermediate CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial_number());
    params
}

fn leaf_params(
    participant_id: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    let ia5 = |value: String| {
        Ia5String::try_from(value).map_err(|source| PkiError::Generate {
            what: format!("subject alternative names for participant {participant_id}"),
            source,
        })
    };
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(participant_id);
    // The loopback names let the same certificate serve a local service and act as its client
    // certificate; the URI SAN is where the participant id is read from.
    params.subject_alt_names = vec![
        SanType::DnsName(ia5(participant_id.to_string())?),
        SanType::DnsName(ia5("localhost".to_string())?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        SanType::URI(ia5(format!("{PARTICIPANT_URI_PREFIX}{participant_id}"))?),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial_number());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn sign_leaf(
    issuer: &Issuer<'_, KeyPair>,
    participant_id: &str,
    key_pair: &KeyPair,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<String, PkiError> {
    let cert = leaf_params(participant_id, not_before, not_after)?
        .signed_by(key_pair, issuer)
        .map_err(|source| PkiError::Generate {
            what: format!("TLS certificate for participant {participant_id}"),
            source,
        })?;
    Ok(cert.pem())
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, common_name);
    distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
    distinguished_name
}

/// A random positive serial number, so that reissued certificates never share a serial.
fn random_serial_number() -> SerialNumber {
    // A v4 UUID carries 122 random bits, above the 64 bits RFC 5280 practice asks for.
    let mut serial_bytes = uuid::Uuid::new_v4().into_bytes();
    // Clearing the top bit keeps the DER INTEGER positive without a padding byte.
    serial_bytes[0] &= 0x7f;
    SerialNumber::from_slice(&serial_bytes)
}

fn generate_key_pair(
    algorithm: &'static rcgen::SignatureAlgorithm,
    what: &str,
) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(algorithm).map_err(|source| PkiError::Generate {
        what: what.to_string(),
        source,
    })
}

fn load_key_pair(key_path: &Path) -> Result<KeyPair, PkiError> {
    let key_pem = read_file_to_string(key_path)?;
    KeyPair::from_pem(&key_pem).map_err(|error| PkiError::InvalidKeyFile {
        path: key_path.to_path_buf(),
        reason: error.to_string(),
    })
}

fn first_cert(cert_path: &Path) -> Result<CertificateDer<'static>, PkiError> {
    let Some(cert_der) = load_certs(cert_path)?.into_iter().next() else {
        return Err(PkiError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    };
    Ok(cert_der)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{
        CertificateError, ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig,
        ServerConnection,
    };
    use x509_parser::extensions::GeneralName;

    use super::*;
    use crate::pki::load_private_key;

    fn ring_provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn root_store(dev_pki: &DevPki) -> Arc<RootCertStore> {
        let mut root_store = RootCertStore::empty();
        for ca_cert in load_certs(dev_pki.ca_cert_path()).unwrap() {
            root_store.add(ca_cert).unwrap();
        }
        Arc::new(root_store)
    }

    fn certs_from_pem(cert_pem: &str) -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn key_from_pem(key_pem: &str) -> PrivateKeyDer<'static> {
        rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .unwrap()
    }

    fn server_config(dev_pki: &DevPki, server: &ParticipantFiles) -> Arc<ServerConfig> {
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(root_store(dev_pki), ring_provider())
                .build()
                .unwrap();
        let server_config = ServerConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(
                load_certs(&server.tls_cert).unwrap(),
                load_private_key(&server.tls_key).unwrap(),
            )
            .unwrap();
        Arc::new(server_config)
    }

    fn client_config(
        dev_pki: &DevPki,
        cert_chain: Vec<CertificateDer<'static>>,
        private_key: PrivateKeyDer<'static>,
    ) -> Arc<ClientConfig> {
        let client_config = ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(root_store(dev_pki))
            .with_client_auth_cert(cert_chain, private_key)
            .unwrap();
        Arc::new(client_config)
    }

    /// Moves every pending TLS record from one in-memory endpoint to the other.
    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
        let mut records = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut records).unwrap();
        }
        let mut unread_records = records.as_slice();
        while !unread_records.is_empty() {
            to.read_tls(&mut unread_records).unwrap();
            to.process_new_packets()?;
        }
        Ok(())
    }

    /// Runs a TLS handshake in memory and returns the server's side of the connection.
    fn handshake(
        client_config: Arc<ClientConfig>,
        server_config: Arc<ServerConfig>,
        server_name: &str,
    ) -> Result<Connection, rustls::Error> {
        let server_name = ServerName::try_from(server_name.to_string()).unwrap();
        let mut client = Connection::Client(ClientConnection::new(client_config, server_name)?);
        let mut server = Connection::Server(ServerConnection::new(server_config)?);
        for _ in 0..10 {
            transfer(&mut client, &mut server)?;
            transfer(&mut server, &mut client)?;
            let done = !client.is_handshaking()
                && !server.is_handshaking()
                && !client.wants_write()
                && !server.wants_write();
            if done {
                return Ok(server);
            }
        }
        panic!("handshake did not finish");
    }

    fn is_expired(error: &rustls::Error) -> bool {
        matches!(
            error,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        )
    }

    fn is_unknown_issuer(error: &rustls::Error) -> bool {
        matches!(
            error,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        )
    }

    #[test]
    fn ensure_creates_ca_and_participant_files() {
        let temp_dir = tempfile::tempdir().unwrap();
        let pki_dir = temp_dir.path().join("var").join("pki");

        let dev_pki = DevPki::ensure(&pki_dir, &["gateway", "jauynger-portal"]).unwrap();

        assert!(pki_dir.join("ca.pem").is_file());
        assert!(pki_dir.join("ca.key").is_file());
        for participant_id in ["gateway", "jauynger-portal"] {
            for file_name in ["tls.pem", "tls.key", "signing.key", "signing.pub"] {
                let path = pki_dir.join(participant_id).join(file_name);
                assert!(path.is_file(), "{} is missing", path.display());
            }
        }
        let participant_ids: Vec<&str> = dev_pki
            .participants()
            .iter()
            .map(|participant_files| participant_files.id.as_str())
            .collect();
        assert_eq!(participant_ids, ["gateway", "jauynger-portal"]);
        assert!(dev_pki.participant("registry").is_none());
        assert!(dev_pki.ca_cert_path().is_absolute());
        // No temporary files are left behind by the atomic writes.
        let leftovers: Vec<_> = fs::read_dir(pki_dir.join("gateway"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|file_name| file_name.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn participant_files_serialize_for_endpoints_json() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["notify"]).unwrap();
        let participant_files = dev_pki.participant("notify").unwrap();

        let json = serde_json::to_value(&participant_files).unwrap();

        assert_eq!(json["id"], "notify");
        assert!(json["tls_cert"].as_str().unwrap().ends_with("tls.pem"));
        assert!(
            json["signing_public_key"]
                .as_str()
                .unwrap()
                .ends_with("signing.pub")
        );
    }

    #[test]
    fn ca_certificate_is_a_path_len_zero_signing_ca() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &[]).unwrap();

        let ca_cert_der = first_cert(dev_pki.ca_cert_path()).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_cert_der).unwrap();

        let basic_constraints = ca_cert.basic_constraints().unwrap().unwrap().value;
        assert!(basic_constraints.ca);
        assert_eq!(basic_constraints.path_len_constraint, Some(0));
        let key_usage = ca_cert.key_usage().unwrap().unwrap().value;
        assert!(key_usage.key_cert_sign());
        assert!(key_usage.crl_sign());
        let common_name = ca_cert.subject().iter_common_name().next().unwrap();
        assert_eq!(common_name.as_str().unwrap(), "Shlyuz development CA");
        let validity = ca_cert.validity().time_to_expiration().unwrap();
        assert!(validity > Duration::days(3640), "{validity}");
    }

    #[test]
    fn participant_certificate_carries_identity_and_usages() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["intake"]).unwrap();
        let intake = dev_pki.participant("intake").unwrap();

        let cert_der = first_cert(&intake.tls_cert).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();

        assert_eq!(participant_id_from_cert(&cert_der).unwrap(), "intake");
        let organization = cert.subject().iter_organization().next().unwrap();
        assert_eq!(organization.as_str().unwrap(), "Shlyuz");
        let general_names = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert!(general_names.contains(&GeneralName::DNSName("intake")));
        assert!(general_names.contains(&GeneralName::DNSName("localhost")));
        assert!(general_names.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        assert!(general_names.contains(&GeneralName::IPAddress(&Ipv6Addr::LOCALHOST.octets())));
        assert!(general_names.contains(&GeneralName::URI("urn:shlyuz:participant:intake")));
        let extended_key_usage = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(extended_key_usage.server_auth);
        assert!(extended_key_usage.client_auth);
        assert!(!cert.is_ca());
        let validity = cert.validity().time_to_expiration().unwrap();
        assert!(validity > Duration::days(720) && validity <= LEAF_VALIDITY);
        // Two leaves never share a serial number.
        let now = OffsetDateTime::now_utc();
        let (other_cert_pem, _) = dev_pki
            .issue_leaf("intake", now, now + LEAF_VALIDITY)
            .unwrap();
        let other_cert_der = certs_from_pem(&other_cert_pem).remove(0);
        let (_, other_cert) = x509_parser::parse_x509_certificate(&other_cert_der).unwrap();
        assert_ne!(cert.raw_serial(), other_cert.raw_serial());
    }

    #[test]
    fn second_ensure_reuses_ca_and_adds_only_new_participants() {
        let temp_dir = tempfile::tempdir().unwrap();
        let pki_dir = temp_dir.path();
        DevPki::ensure(pki_dir, &["gateway"]).unwrap();
        let read = |relative_path: &str| fs::read(pki_dir.join(relative_path)).unwrap();
        let ca_cert_before = read("ca.pem");
        let ca_key_before = read("ca.key");
        let gateway_cert_before = read("gateway/tls.pem");
        let gateway_signing_key_before = read("gateway/signing.key");

        let dev_pki = DevPki::ensure(pki_dir, &["gateway", "registry", "gateway"]).unwrap();

        assert_eq!(read("ca.pem"), ca_cert_before);
        assert_eq!(read("ca.key"), ca_key_before);
        assert_eq!(read("gateway/tls.pem"), gateway_cert_before);
        assert_eq!(read("gateway/signing.key"), gateway_signing_key_before);
        assert_eq!(dev_pki.participants().len(), 2);
        let registry = dev_pki.participant("registry").unwrap();
        let registry_cert_der = first_cert(&registry.tls_cert).unwrap();
        assert_eq!(
            participant_id_from_cert(&registry_cert_der).unwrap(),
            "registry"
        );
        // The new participant is signed by the reused CA.
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(root_store(&dev_pki), ring_provider())
                .build()
                .unwrap();
        client_verifier
            .verify_client_cert(&registry_cert_der, &[], UnixTime::now())
            .unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn private_key_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;

        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["housing"]).unwrap();
        let housing = dev_pki.participant("housing").unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;

        assert_eq!(mode(&temp_dir.path().join("ca.key")), 0o600);
        assert_eq!(mode(&housing.tls_key), 0o600);
        assert_eq!(mode(&housing.signing_key), 0o600);
    }

    #[test]
    fn signing_files_form_a_working_key_pair() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["notify"]).unwrap();
        let notify = dev_pki.participant("notify").unwrap();

        let signing_key = SigningKey::from_pem_file(&notify.signing_key).unwrap();
        let verifying_key = VerifyingKey::from_pem_file(&notify.signing_public_key).unwrap();
        let signature = signing_key.sign(b"envelope");

        verifying_key.verify(b"envelope", &signature).unwrap();
        let signing_key_pem = fs::read_to_string(&notify.signing_key).unwrap();
        assert!(signing_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let public_key_pem = fs::read_to_string(&notify.signing_public_key).unwrap();
        assert!(public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn mutual_tls_handshake_succeeds_with_issued_files() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["gateway", "intake"]).unwrap();
        let gateway = dev_pki.participant("gateway").unwrap();
        let intake = dev_pki.participant("intake").unwrap();
        let server_config = server_config(&dev_pki, &gateway);
        let client_config = client_config(
            &dev_pki,
            load_certs(&intake.tls_cert).unwrap(),
            load_private_key(&intake.tls_key).unwrap(),
        );

        for server_name in ["localhost", "gateway", "127.0.0.1", "::1"] {
            let server = handshake(client_config.clone(), server_config.clone(), server_name)
                .unwrap_or_else(|error| panic!("handshake to {server_name} failed: {error}"));

            let client_certs = server.peer_certificates().unwrap();
            assert_eq!(
                participant_id_from_cert(&client_certs[0]).unwrap(),
                "intake"
            );
        }
    }

    #[test]
    fn expired_leaf_is_rejected() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["gateway"]).unwrap();
        let gateway = dev_pki.participant("gateway").unwrap();
        let now = OffsetDateTime::now_utc();
        let (expired_cert_pem, expired_key_pem) = dev_pki
            .issue_leaf("sdu", now - Duration::days(30), now - Duration::days(1))
            .unwrap();
        let expired_cert_der = certs_from_pem(&expired_cert_pem).remove(0);

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(root_store(&dev_pki), ring_provider())
                .build()
                .unwrap();
        let client_error = client_verifier
            .verify_client_cert(&expired_cert_der, &[], UnixTime::now())
            .unwrap_err();
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(root_store(&dev_pki), ring_provider())
                .build()
                .unwrap();
        let server_error = server_verifier
            .verify_server_cert(
                &expired_cert_der,
                &[],
                &ServerName::try_from("localhost").unwrap(),
                &[],
                UnixTime::now(),
            )
            .unwrap_err();
        let handshake_error = handshake(
            client_config(
                &dev_pki,
                certs_from_pem(&expired_cert_pem),
                key_from_pem(&expired_key_pem),
            ),
            server_config(&dev_pki, &gateway),
            "localhost",
        )
        .unwrap_err();

        assert!(is_expired(&client_error), "{client_error:?}");
        assert!(is_expired(&server_error), "{server_error:?}");
        assert!(is_expired(&handshake_error), "{handshake_error:?}");
    }

    #[test]
    fn untrusted_leaf_is_rejected() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["gateway"]).unwrap();
        let gateway = dev_pki.participant("gateway").unwrap();
        let (untrusted_cert_pem, untrusted_key_pem) = issue_untrusted_leaf("ops").unwrap();
        let untrusted_cert_der = certs_from_pem(&untrusted_cert_pem).remove(0);

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(root_store(&dev_pki), ring_provider())
                .build()
                .unwrap();
        let verify_error = client_verifier
            .verify_client_cert(&untrusted_cert_der, &[], UnixTime::now())
            .unwrap_err();
        let handshake_error = handshake(
            client_config(
                &dev_pki,
                certs_from_pem(&untrusted_cert_pem),
                key_from_pem(&untrusted_key_pem),
            ),
            server_config(&dev_pki, &gateway),
            "localhost",
        )
        .unwrap_err();

        // The untrusted certificate still claims an identity, which is why it must be verified.
        assert_eq!(
            participant_id_from_cert(&untrusted_cert_der).unwrap(),
            "ops"
        );
        assert!(is_unknown_issuer(&verify_error), "{verify_error:?}");
        assert!(is_unknown_issuer(&handshake_error), "{handshake_error:?}");
    }

    #[test]
    fn ensure_certifies_a_key_left_without_its_certificate() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["registry"]).unwrap();
        let registry = dev_pki.participant("registry").unwrap();
        let tls_key_before = fs::read(&registry.tls_key).unwrap();
        let signing_key_before = fs::read(&registry.signing_key).unwrap();
        let signing_public_key_before = fs::read(&registry.signing_public_key).unwrap();
        // Simulates a crash between writing a key and writing its public counterpart.
        fs::remove_file(&registry.tls_cert).unwrap();
        fs::remove_file(&registry.signing_public_key).unwrap();

        DevPki::ensure(temp_dir.path(), &["registry"]).unwrap();

        assert_eq!(fs::read(&registry.tls_key).unwrap(), tls_key_before);
        assert_eq!(fs::read(&registry.signing_key).unwrap(), signing_key_before);
        assert_eq!(
            fs::read(&registry.signing_public_key).unwrap(),
            signing_public_key_before
        );
        let cert_der = first_cert(&registry.tls_cert).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let key_pair = load_key_pair(&registry.tls_key).unwrap();
        assert_eq!(cert.public_key().raw, key_pair.subject_public_key_info());
    }

    #[test]
    fn ensure_refuses_a_certificate_without_its_key() {
        let temp_dir = tempfile::tempdir().unwrap();
        let dev_pki = DevPki::ensure(temp_dir.path(), &["registry"]).unwrap();
        let registry = dev_pki.participant("registry").unwrap();
        let ca_key_path = temp_dir.path().join("ca.key");
        fs::remove_file(&registry.tls_key).unwrap();

        let participant_error = DevPki::ensure(temp_dir.path(), &["registry"]).unwrap_err();
        fs::remove_file(&ca_key_path).unwrap();
        let ca_error = DevPki::ensure(temp_dir.path(), &[]).unwrap_err();

        assert!(
            matches!(participant_error, PkiError::IncompleteFiles { .. }),
            "{participant_error}"
        );
        assert!(participant_error.to_string().contains("tls.key is missing"));
        assert!(
            matches!(ca_error, PkiError::IncompleteFiles { .. }),
            "{ca_error}"
        );
        assert!(!ca_key_path.exists(), "a new CA key must not be created");
    }

    #[test]
    fn ensure_rejects_a_participant_certificate_from_a_previous_ca() {
        let temp_dir = tempfile::tempdir().unwrap();
        DevPki::ensure(temp_dir.path(), &["gateway"]).unwrap();
        fs::remove_file(temp_dir.path().join("ca.pem")).unwrap();
        fs::remove_file(temp_dir.path().join("ca.key")).unwrap();

        let error = DevPki::ensure(temp_dir.path(), &["gateway"]).unwrap_err();

        assert!(
            matches!(error, PkiError::ForeignCertificate { .. }),
            "{error}"
        );
    }

    #[test]
    fn ensure_rejects_mismatched_ca_key() {
        let temp_dir = tempfile::tempdir().unwrap();
        let other_temp_dir = tempfile::tempdir().unwrap();
        DevPki::ensure(temp_dir.path(), &[]).unwrap();
        DevPki::ensure(other_temp_dir.path(), &[]).unwrap();
        fs::copy(
            other_temp_dir.path().join("ca.key"),
            temp_dir.path().join("ca.key"),
        )
        .unwrap();

        let error = DevPki::ensure(temp_dir.path(), &[]).unwrap_err();

        assert!(matches!(error, PkiError::KeyMismatch { .. }), "{error}");
    }

    #[test]
    fn ensure_rejects_invalid_participant_ids() {
        let temp_dir = tempfile::tempdir().unwrap();

        for participant_id in [
            "",
            "../etc",
            "Gateway",
            "-ops",
            "ops-",
            "a b",
            &"x".repeat(64),
        ] {
            let error = DevPki::ensure(temp_dir.path(), &[participant_id]).unwrap_err();
            assert!(
                matches!(error, PkiError::InvalidParticipantId { .. }),
                "{participant_id:?}: {error}"
            );
        }
        // Nothing is created for a rejected list.
        assert!(!temp_dir.path().join("ca.key").exists());
    }
}
