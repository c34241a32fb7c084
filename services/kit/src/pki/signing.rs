//! Ed25519 message-envelope signatures, with keys kept separate from the TLS keys.

use std::fmt;
use std::path::Path;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls_pemfile::Item;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::PkiError;
use super::files::{read_file, read_file_to_string};

/// Length in bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Length in bytes of a raw Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;

/// A participant's Ed25519 private key, used to sign message envelopes.
pub struct SigningKey {
    key_pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Loads the key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem_file(path: &Path) -> Result<SigningKey, PkiError> {
        let pem_bytes = read_file(path)?;
        let invalid_key = |reason: String| PkiError::InvalidKeyFile {
            path: path.to_path_buf(),
            reason,
        };
        let mut reader = pem_bytes.as_slice();
        loop {
            let item =
                rustls_pemfile::read_one(&mut reader).map_err(|source| PkiError::InvalidPem {
                    path: path.to_path_buf(),
                    source,
                })?;
            match item {
                Some(Item::Pkcs8Key(pkcs8_key)) => {
                    return SigningKey::from_pkcs8_der(pkcs8_key.secret_pkcs8_der())
                        .map_err(|error| invalid_key(error.to_string()));
                }
                Some(_) => continue,
                None => {
                    return Err(invalid_key(
                        "no PKCS#8 \"PRIVATE KEY\" PEM block found".to_string(),
                    ));
                }
            }
        }
    }

    /// Loads the key from PKCS#8 DER bytes (v1 or v2).
    pub fn from_pkcs8_der(pkcs8_der: &[u8]) -> Result<SigningKey, PkiError> {
        // `maybe_unchecked` also accepts v1 documents, which is what `openssl genpkey` writes.
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der).map_err(|error| {
            PkiError::InvalidSigningKey {
                reason: error.to_string(),
            }
        })?;
        Ok(SigningKey { key_pair })
    }

    /// Signs `message`, returning the 64-byte Ed25519 signature.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let signature = self.key_pair.sign(message);
        let mut signature_bytes = [0u8; SIGNATURE_LEN];
        // Ed25519 signatures are always 64 bytes, so the lengths match.
        signature_bytes.copy_from_slice(signature.as_ref());
        signature_bytes
    }

    /// Returns the public half of this key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut public_key = [0u8; PUBLIC_KEY_LEN];
        // Ed25519 public keys are always 32 bytes, so the lengths match.
        public_key.copy_from_slice(self.key_pair.public_key().as_ref());
        VerifyingKey { public_key }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the public half: debug output ends up in logs.
        formatter
            .debug_struct("SigningKey")
            .field("public_key", &hex::encode(self.key_pair.public_key()))
            .finish()
    }
}

/// A participant's Ed25519 public key, used to verify message envelope signatures.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey {
    public_key: [u8; PUBLIC_KEY_LEN],
}

impl VerifyingKey {
    /// Parses a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem_str(pem: &str) -> Result<VerifyingKey, PkiError> {
        let mut reader = pem.as_bytes();
        loop {
            let item = rustls_pemfile::read_one(&mut reader).map_err(|error| {
                PkiError::InvalidVerifyingKey {
                    reason: format!("invalid PEM: {error}"),
                }
            })?;
            match item {
                Some(Item::SubjectPublicKeyInfo(spki)) => {
                    return VerifyingKey::from_spki_der(spki.as_ref());
                }
                Some(_) => continue,
                None => {
                    return Err(PkiError::InvalidVerifyingKey {
                        reason: "no \"PUBLIC KEY\" PEM block found".to_string(),
                    });
                }
            }
        }
    }

    /// Loads a SubjectPublicKeyInfo PEM file (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem_file(path: &Path) -> Result<VerifyingKey, PkiError> {
        let pem = read_file_to_string(path)?;
        VerifyingKey::from_pem_str(&pem).map_err(|error| PkiError::InvalidKeyFile {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
    }

    /// Parses a DER SubjectPublicKeyInfo holding an Ed25519 key.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<VerifyingKey, PkiError> {
        let (remaining, spki) = SubjectPublicKeyInfo::from_der(spki_der).map_err(|error| {
            PkiError::InvalidVerifyingKey {
                reason: format!("invalid SubjectPublicKeyInfo: {error}"),
            }
        })?;
        if !remaining.is_empty() {
            return Err(PkiError::InvalidVerifyingKey {
                reason: "trailing bytes after SubjectPublicKeyInfo".to_string(),
            });
        }
        if spki.algorithm.algorithm != OID_SIG_ED25519 {
            return Err(PkiError::InvalidVerifyingKey {
                reason: format!(
                    "expected an Ed25519 key ({OID_SIG_ED25519}), got algorithm {}",
                    spki.algorithm.algorithm
                ),
            });
        }
        VerifyingKey::from_bytes(&spki.subject_public_key.data)
    }

    /// Wraps a raw 32-byte Ed25519 public key.
    pub fn from_bytes(public_key: &[u8]) -> Result<VerifyingKey, PkiError> {
        let public_key: [u8; PUBLIC_KEY_LEN] =
            public_key
                .try_into()
                .map_err(|_| PkiError::InvalidVerifyingKey {
                    reason: format!("expected {PUBLIC_KEY_LEN} bytes, got {}", public_key.len()),
                })?;
        Ok(VerifyingKey { public_key })
    }

    /// Returns the raw 32-byte public key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public_key
    }

    /// Checks that `signature` is this key's signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), PkiError> {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(message, signature)
            .map_err(|_| PkiError::InvalidSignature)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_tuple("VerifyingKey")
            .field(&hex::encode(self.public_key))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{KeyPair, PKCS_ED25519};

    use super::*;

    /// A fresh key as (signing key, SubjectPublicKeyInfo PEM).
    fn generate_signing_key() -> (SigningKey, String) {
        let key_pair = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        let signing_key = SigningKey::from_pkcs8_der(key_pair.serialized_der()).unwrap();
        (signing_key, key_pair.public_key_pem())
    }

    #[test]
    fn sign_verify_round_trip() {
        let (signing_key, public_key_pem) = generate_signing_key();
        let verifying_key = VerifyingKey::from_pem_str(&public_key_pem).unwrap();
        let message = b"{\"envelope\":\"housing.application.submitted\"}";

        let signature = signing_key.sign(message);

        assert_eq!(verifying_key, signing_key.verifying_key());
        verifying_key.verify(message, &signature).unwrap();
    }

    #[test]
    fn signature_by_another_key_fails() {
        let (signing_key, _) = generate_signing_key();
        let (other_signing_key, _) = generate_signing_key();
        let message = b"envelope";

        let signature = other_signing_key.sign(message);
        let error = signing_key
            .verifying_key()
            .verify(message, &signature)
            .unwrap_err();

        assert!(matches!(error, PkiError::InvalidSignature));
    }

    #[test]
    fn tampered_message_fails() {
        let (signing_key, _) = generate_signing_key();
        let signature = signing_key.sign(b"pay 100 tenge");

        let error = signing_key
            .verifying_key()
            .verify(b"pay 900 tenge", &signature)
            .unwrap_err();

        assert!(matches!(error, PkiError::InvalidSignature));
    }

    #[test]
    fn truncated_signature_fails() {
        let (signing_key, _) = generate_signing_key();
        let signature = signing_key.sign(b"envelope");

        let error = signing_key
            .verifying_key()
            .verify(b"envelope", &signature[..63])
            .unwrap_err();

        assert!(matches!(error, PkiError::InvalidSignature));
    }

    #[test]
    fn verifying_key_from_raw_bytes() {
        let (signing_key, _) = generate_signing_key();
        let verifying_key = signing_key.verifying_key();

        let from_bytes = VerifyingKey::from_bytes(verifying_key.as_bytes()).unwrap();
        let wrong_length_error = VerifyingKey::from_bytes(&[0u8; 31]).unwrap_err();

        assert_eq!(from_bytes, verifying_key);
        assert!(wrong_length_error.to_string().contains("expected 32 bytes"));
    }

    #[test]
    fn verifying_key_rejects_non_ed25519_public_key() {
        let ecdsa_key_pair = KeyPair::generate().unwrap();

        let error = VerifyingKey::from_pem_str(&ecdsa_key_pair.public_key_pem()).unwrap_err();

        assert!(
            error.to_string().contains("expected an Ed25519 key"),
            "{error}"
        );
    }

    #[test]
    fn signing_key_from_pem_file_rejects_a_certificate() {
        let temp_dir = tempfile::tempdir().unwrap();
        let path = temp_dir.path().join("signing.key");
        std::fs::write(&path, KeyPair::generate().unwrap().public_key_pem()).unwrap();

        let error = SigningKey::from_pem_file(&path).unwrap_err();

        assert!(matches!(error, PkiError::InvalidKeyFile { .. }), "{error}");
        assert!(error.to_string().contains("signing.key"), "{error}");
    }

    #[test]
    fn debug_output_hides_the_private_key() {
        let (signing_key, _) = generate_signing_key();

        let debug_output = format!("{signing_key:?}");

        assert!(debug_output.contains(&hex::encode(signing_key.verifying_key().as_bytes())));
    }
}
