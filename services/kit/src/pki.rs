//! Development PKI and message signing.
//!
//! Every hop in Shlyuz is mutual TLS: a participant's id comes from its verified client
//! certificate (its one `urn:shlyuz:participant:<id>` URI SAN; never the subject CN). Each participant
//! also holds an Ed25519 key, separate from its TLS key, that signs message envelopes.
//!
//! [`DevPki::ensure`] creates (or reuses) a development CA and the per-participant files under a
//! data directory, the loading helpers turn those files into rustls types, and [`SigningKey`] /
//! [`VerifyingKey`] sign and verify envelopes.

mod dev;
mod files;
mod pem;
mod signing;

use std::io;
use std::path::PathBuf;

pub use dev::{DevPki, ParticipantFiles, issue_untrusted_leaf, validate_participant_id};
pub use pem::{PARTICIPANT_URI_PREFIX, load_certs, load_private_key, participant_id_from_cert};
pub use signing::{SIGNATURE_LEN, SigningKey, VerifyingKey};

/// Everything that can go wrong while creating, loading or using PKI material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file that should exist does not.
    #[error("{} does not exist", path.display())]
    MissingFile { path: PathBuf },
    /// A file exists but could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// A file or directory could not be written.
    #[error("failed to write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// Refused to replace a file that already exists.
    #[error("refusing to overwrite existing file {}", path.display())]
    AlreadyExists { path: PathBuf },
    /// A file is not valid PEM.
    #[error("invalid PEM in {}: {source}", path.display())]
    InvalidPem { path: PathBuf, source: io::Error },
    /// A PEM file holds no certificate.
    #[error("no PEM certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    /// A PEM file holds no private key.
    #[error("no PEM private key found in {}", path.display())]
    NoPrivateKey { path: PathBuf },
    /// A certificate file could not be used.
    #[error("invalid certificate in {}: {reason}", path.display())]
    InvalidCertificateFile { path: PathBuf, reason: String },
    /// A key file could not be used.
    #[error("invalid key in {}: {reason}", path.display())]
    InvalidKeyFile { path: PathBuf, reason: String },
    /// One file of a pair exists without the other, and regenerating would overwrite it.
    #[error(
        "{} exists but {} is missing: delete {} to let the development PKI regenerate it",
        present.display(),
        missing.display(),
        present.display()
    )]
    IncompleteFiles { present: PathBuf, missing: PathBuf },
    /// A private key does not belong to the certificate or public key stored next to it.
    #[error("private key {} does not match {}", key_path.display(), other_path.display())]
    KeyMismatch {
        key_path: PathBuf,
        other_path: PathBuf,
    },
    /// A participant certificate on disk was signed by some other CA.
    #[error(
        "certificate {} was not issued by the development CA {}: delete the participant directory to reissue it",
        cert_path.display(),
        ca_cert_path.display()
    )]
    ForeignCertificate {
        cert_path: PathBuf,
        ca_cert_path: PathBuf,
    },
    /// A participant certificate on disk names another participant.
    #[error("certificate {} belongs to participant {found:?}, expected {expected:?}", cert_path.display())]
    ParticipantMismatch {
        cert_path: PathBuf,
        expected: String,
        found: String,
    },
    /// A participant id cannot be used as a directory name and DNS name.
    #[error("invalid participant id {id:?}: {reason}")]
    InvalidParticipantId { id: String, reason: &'static str },
    /// rcgen failed to generate a key or certificate.
    #[error("failed to generate {what}: {source}")]
    Generate { what: String, source: rcgen::Error },
    /// DER certificate bytes could not be parsed or are ambiguous.
    #[error("invalid certificate: {reason}")]
    InvalidCertificate { reason: String },
    /// A certificate carries no participant identity at all.
    #[error(
        "certificate has no urn:shlyuz:participant: URI SAN (the subject common name is not an identity)"
    )]
    NoParticipantId,
    /// Ed25519 private key bytes could not be used.
    #[error("invalid signing key: {reason}")]
    InvalidSigningKey { reason: String },
    /// Ed25519 public key bytes could not be used.
    #[error("invalid verifying key: {reason}")]
    InvalidVerifyingKey { reason: String },
    /// A signature does not match the message and public key.
    #[error("signature verification failed")]
    InvalidSignature,
}
