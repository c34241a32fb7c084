//! Citizen and official signatures (ЭЦП) mimicked with X.509: a test national certification
//! authority ("НУЦ РК (test)") issues ECDSA P-256 certificates whose subject serialNumber is
//! `IIN<12 digits>`, and [`DocumentVerifier`] checks a signed document the way seed 004 lists:
//! the chain to the trusted CA, the validity period, revocation, and that the signer's IIN is the
//! IIN the document belongs to — plus the signature over the document itself.

use futures::future::BoxFuture;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::iin::Iin;

/// Common name of the test national CA.
pub const NATIONAL_CA_NAME: &str = "НУЦ РК (test)";

/// OID of the X.520 `serialNumber` attribute that carries `IIN<iin>`.
const SERIAL_NUMBER_OID: [u64; 4] = [2, 5, 4, 5];

/// Why a certificate could not be issued or a document not verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// Key or certificate generation failed.
    #[error("cannot generate {0}")]
    Generate(String),
    /// A PEM or DER input could not be read.
    #[error("{what} is not valid: {reason}")]
    Malformed {
        /// Which input.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The certificate was not issued by the trusted CA.
    #[error("the signer's certificate is not issued by the trusted certification authority")]
    UntrustedChain,
    /// Outside its validity period at the time of the check.
    #[error("the signer's certificate is not valid at this time")]
    OutsideValidity,
    /// Revoked by the CA.
    #[error("the signer's certificate is revoked")]
    Revoked,
    /// The CA does not know the certificate.
    #[error("the certification authority does not know the signer's certificate")]
    UnknownToCa,
    /// The revocation status could not be obtained; the document is not accepted meanwhile.
    #[error("revocation status unavailable: {0}")]
    StatusUnavailable(String),
    /// The certificate carries no `IIN<iin>` serialNumber.
    #[error("the signer's certificate names no IIN")]
    NoIin,
    /// The certificate belongs to someone else.
    #[error("the document is signed by IIN {found}, not by {expected}")]
    IinMismatch {
        /// IIN the document must be signed by.
        expected: String,
        /// IIN in the certificate.
        found: String,
    },
    /// The signature does not match the document.
    #[error("the signature does not match the document")]
    BadSignature,
}

impl DocumentError {
    /// A stable `ErrorInfo` reason for services that report verification failures.
    pub fn reason(&self) -> &'static str {
        match self {
            DocumentError::Generate(_) => "CERTIFICATE_GENERATION_FAILED",
            DocumentError::Malformed { .. } => "SIGNATURE_MALFORMED",
            DocumentError::UntrustedChain => "CERTIFICATE_UNTRUSTED",
            DocumentError::OutsideValidity => "CERTIFICATE_EXPIRED",
            DocumentError::Revoked => "CERTIFICATE_REVOKED",
            DocumentError::UnknownToCa => "CERTIFICATE_UNKNOWN",
            DocumentError::StatusUnavailable(_) => "CERTIFICATE_STATUS_UNAVAILABLE",
            DocumentError::NoIin | DocumentError::IinMismatch { .. } => "SIGNER_IIN_MISMATCH",
            DocumentError::BadSignature => crate::error::reasons::SIGNATURE_INVALID,
        }
    }
}

/// A certificate and its key, as the CA hands them out (test CA only: real keys never leave
/// the holder's token).
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// Serial number, lowercase hex.
    pub serial_hex: String,
    /// Certificate, PEM.
    pub certificate_pem: String,
    /// PKCS#8 private key, PEM.
    pub private_key_pem: String,
    /// First instant of validity.
    pub not_before: OffsetDateTime,
    /// Last instant of validity.
    pub not_after: OffsetDateTime,
}

/// The test national certification authority.
pub struct NationalCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    key_pem: String,
}

fn generation(what: &str) -> impl Fn(rcgen::Error) -> DocumentError + '_ {
    move |error| DocumentError::Generate(format!("{what}: {error}"))
}

impl NationalCa {
    /// A new CA with a fresh key, valid ten years from `now`.
    pub fn generate(now: OffsetDateTime) -> Result<NationalCa, DocumentError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generation("ca key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, NATIONAL_CA_NAME);
        params.distinguished_name.push(DnType::CountryName, "KZ");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let certificate = params
            .self_signed(&key)
            .map_err(generation("ca certificate"))?;
        let certificate_pem = certificate.pem();
        let key_pem = key.serialize_pem();
        Self::from_pem(&certificate_pem, &key_pem)
    }

    /// The CA from its certificate and key (PEM), e.g. as stored by the registry.
    pub fn from_pem(certificate_pem: &str, key_pem: &str) -> Result<NationalCa, DocumentError> {
        let malformed = |what: &'static str| {
            move |error: rcgen::Error| DocumentError::Malformed {
                what,
                reason: error.to_string(),
            }
        };
        let key = KeyPair::from_pem(key_pem).map_err(malformed("ca key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(certificate_pem, key).map_err(malformed("ca certificate"))?;
        Ok(NationalCa {
            issuer,
            certificate_pem: certificate_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA key, PEM (for storing it).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a signing certificate for the holder of `iin`; `organization` is set for officials.
    pub fn issue(
        &self,
        iin: &Iin,
        full_name: &str,
        organization: Option<&str>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCertificate, DocumentError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generation("holder key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, full_name);
        params.distinguished_name.push(
            DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec()),
            format!("IIN{}", iin.as_str()),
        );
        params.distinguished_name.push(DnType::CountryName, "KZ");
        if let Some(organization) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let mut serial = uuid::Uuid::new_v4().into_bytes();
        // Positive and without a leading zero byte: DER keeps all 16 bytes, so the serial read
        // back from the certificate is the one recorded at issue (a leading zero would be dropped).
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let certificate = params
            .signed_by(&key, &self.issuer)
            .map_err(generation("holder certificate"))?;
        Ok(IssuedCertificate {
            serial_hex: hex::encode(serial),
            certificate_pem: certificate.pem(),
            private_key_pem: key.serialize_pem(),
            not_before,
            not_after,
        })
    }
}

/// Signs `document` with a holder's PKCS#8 PEM key (ECDSA P-256, SHA-256, ASN.1 signature):
/// what the citizen's NCALayer would do.
pub fn sign_document(private_key_pem: &str, document: &[u8]) -> Result<Vec<u8>, DocumentError> {
    let malformed = |reason: String| DocumentError::Malformed {
        what: "private key",
        reason,
    };
    let der = pem_body(private_key_pem, "PRIVATE KEY").map_err(malformed)?;
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &der,
        &rng,
    )
    .map_err(|error| malformed(error.to_string()))?;
    key.sign(&rng, document)
        .map(|signature| signature.as_ref().to_vec())
        .map_err(|error| malformed(error.to_string()))
}

fn pem_body(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem
        .find(&begin)
        .ok_or_else(|| format!("no {begin} block"))?
        + begin.len();
    let stop = pem[start..]
        .find(&end)
        .ok_or_else(|| format!("no {end} line"))?
        + start;
    let body: String = pem[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|error| error.to_string())
}

/// Revocation status of a certificate, as the CA answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Issued and not revoked.
    Good,
    /// Revoked.
    Revoked,
    /// Not issued by the CA.
    Unknown,
}

/// Where the verifier asks about revocation (the registry's CertificateAuthorityService, or a
/// table in tests).
pub trait RevocationSource: Send + Sync {
    /// The status of the certificate with serial `serial_hex`; `Err` when it cannot be known.
    fn status<'a>(&'a self, serial_hex: &'a str)
    -> BoxFuture<'a, Result<RevocationStatus, String>>;
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSigner {
    /// The signer's IIN.
    pub iin: String,
    /// The signer's name (certificate common name).
    pub common_name: String,
    /// Certificate serial, hex.
    pub serial_hex: String,
}

/// Verifies documents signed under one trusted CA.
pub struct DocumentVerifier {
    ca_der: Vec<u8>,
}

impl DocumentVerifier {
    /// A verifier that trusts the CA certificate `ca_certificate_pem`.
    pub fn new(ca_certificate_pem: &str) -> Result<DocumentVerifier, DocumentError> {
        let ca_der = pem_body(ca_certificate_pem, "CERTIFICATE").map_err(|reason| {
            DocumentError::Malformed {
                what: "ca certificate",
                reason,
            }
        })?;
        X509Certificate::from_der(&ca_der).map_err(|error| DocumentError::Malformed {
            what: "ca certificate",
            reason: error.to_string(),
        })?;
        Ok(DocumentVerifier { ca_der })
    }

    /// Checks that `signature` over `document` was made by the holder of `expected_iin` with a
    /// certificate of the trusted CA, valid at `now` and not revoked. Cheap local checks run
    /// first, so a forged document never costs a revocation query.
    pub async fn verify(
        &self,
        document: &[u8],
        signature: &[u8],
        signer_certificate_pem: &str,
        expected_iin: &Iin,
        now: OffsetDateTime,
        revocation: &dyn RevocationSource,
    ) -> Result<VerifiedSigner, DocumentError> {
        let malformed = |reason: String| DocumentError::Malformed {
            what: "signer certificate",
            reason,
        };
        let signer_der = pem_body(signer_certificate_pem, "CERTIFICATE").map_err(malformed)?;
        let (_, signer) =
            X509Certificate::from_der(&signer_der).map_err(|error| malformed(error.to_string()))?;
        let (_, ca) =
            X509Certificate::from_der(&self.ca_der).map_err(|error| DocumentError::Malformed {
                what: "ca certificate",
                reason: error.to_string(),
            })?;

        if signer.issuer() != ca.subject()
            || signer.verify_signature(Some(ca.public_key())).is_err()
        {
            return Err(DocumentError::UntrustedChain);
        }
        let at = x509_parser::time::ASN1Time::from(now);
        if !signer.validity().is_valid_at(at) {
            return Err(DocumentError::OutsideValidity);
        }
        let found_iin = signer
            .subject()
            .iter_attributes()
            .find(|attribute| {
                attribute
                    .attr_type()
                    .iter()
                    .map(|arcs| arcs.collect::<Vec<u64>>())
                    == Some(SERIAL_NUMBER_OID.to_vec())
            })
            .and_then(|attribute| attribute.as_str().ok())
            .and_then(|value| value.strip_prefix("IIN"))
            .map(str::to_string)
            .ok_or(DocumentError::NoIin)?;
        if found_iin != expected_iin.as_str() {
            return Err(DocumentError::IinMismatch {
                expected: expected_iin.as_str().to_string(),
                found: found_iin,
            });
        }
        let public_key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            signer.public_key().subject_public_key.data.as_ref(),
        );
        public_key
            .verify(document, signature)
            .map_err(|_| DocumentError::BadSignature)?;

        let serial_hex = hex::encode(signer.raw_serial());
        match revocation.status(&serial_hex).await {
            Ok(RevocationStatus::Good) => {}
            Ok(RevocationStatus::Revoked) => return Err(DocumentError::Revoked),
            Ok(RevocationStatus::Unknown) => return Err(DocumentError::UnknownToCa),
            Err(reason) => return Err(DocumentError::StatusUnavailable(reason)),
        }
        let common_name = signer
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(VerifiedSigner {
            iin: found_iin,
            common_name,
            serial_hex,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    struct Table(Mutex<HashMap<String, RevocationStatus>>);

    impl RevocationSource for Table {
        fn status<'a>(
            &'a self,
            serial_hex: &'a str,
        ) -> BoxFuture<'a, Result<RevocationStatus, String>> {
            let status = self
                .0
                .lock()
                .map(|table| table.get(serial_hex).copied())
                .unwrap_or(None)
                .ok_or_else(|| "no status".to_string());
            Box::pin(async move { status })
        }
    }

    fn holder() -> Iin {
        Iin::parse("900101300017").expect("iin")
    }

    fn setup() -> (NationalCa, IssuedCertificate, Table, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let ca = NationalCa::generate(now).expect("ca");
        let issued = ca
            .issue(
                &holder(),
                "Қасымов Ерлан",
                None,
                now - time::Duration::hours(1),
                now + time::Duration::days(365),
            )
            .expect("issue");
        let table = Table(Mutex::new(HashMap::from([(
            issued.serial_hex.clone(),
            RevocationStatus::Good,
        )])));
        (ca, issued, table, now)
    }

    #[test]
    fn the_issued_serial_is_the_serial_in_the_certificate() {
        // A leading zero byte (1 serial in 128 before the fix) was dropped by DER, so revocation
        // queries asked about a serial the CA had never recorded.
        let (ca, _, _, now) = setup();
        for _ in 0..200 {
            let issued = ca
                .issue(
                    &holder(),
                    "Қасымов Ерлан",
                    None,
                    now,
                    now + time::Duration::days(1),
                )
                .expect("issue");
            let der = pem_body(&issued.certificate_pem, "CERTIFICATE").expect("pem");
            let (_, certificate) = X509Certificate::from_der(&der).expect("der");
            assert_eq!(hex::encode(certificate.raw_serial()), issued.serial_hex);
        }
    }

    #[tokio::test]
    async fn a_good_signature_by_the_right_person_verifies() {
        let (ca, issued, table, now) = setup();
        let document = "Келісім / Соглашение".as_bytes();
        let signature = sign_document(&issued.private_key_pem, document).expect("sign");
        let verifier = DocumentVerifier::new(ca.certificate_pem()).expect("verifier");
        let signer = verifier
            .verify(
                document,
                &signature,
                &issued.certificate_pem,
                &holder(),
                now,
                &table,
            )
            .await
            .expect("verified");
        assert_eq!(signer.iin, "900101300017");
        assert_eq!(signer.common_name, "Қасымов Ерлан");
    }

    #[tokio::test]
    async fn each_failed_check_has_its_reason() {
        let (ca, issued, table, now) = setup();
        let document = b"order";
        let signature = sign_document(&issued.private_key_pem, document).expect("sign");
        let verifier = DocumentVerifier::new(ca.certificate_pem()).expect("verifier");

        let tampered = verifier
            .verify(
                b"other",
                &signature,
                &issued.certificate_pem,
                &holder(),
                now,
                &table,
            )
            .await;
        assert_eq!(tampered, Err(DocumentError::BadSignature));

        let someone_else = Iin::parse("850101399906").expect("iin");
        let mismatch = verifier
            .verify(
                document,
                &signature,
                &issued.certificate_pem,
                &someone_else,
                now,
                &table,
            )
            .await;
        assert!(matches!(mismatch, Err(DocumentError::IinMismatch { .. })));

        let later = now + time::Duration::days(400);
        let expired = verifier
            .verify(
                document,
                &signature,
                &issued.certificate_pem,
                &holder(),
                later,
                &table,
            )
            .await;
        assert_eq!(expired, Err(DocumentError::OutsideValidity));

        let other_ca = NationalCa::generate(now).expect("other ca");
        let foreign = DocumentVerifier::new(other_ca.certificate_pem()).expect("verifier");
        let untrusted = foreign
            .verify(
                document,
                &signature,
                &issued.certificate_pem,
                &holder(),
                now,
                &table,
            )
            .await;
        assert_eq!(untrusted, Err(DocumentError::UntrustedChain));

        table
            .0
            .lock()
            .expect("table")
            .insert(issued.serial_hex.clone(), RevocationStatus::Revoked);
        let revoked = verifier
            .verify(
                document,
                &signature,
                &issued.certificate_pem,
                &holder(),
                now,
                &table,
            )
            .await;
        assert_eq!(revoked, Err(DocumentError::Revoked));

        table.0.lock().expect("table").clear();
        let unavailable = verifier
            .verify(
                document,
                &signature,
                &issued.certificate_pem,
                &holder(),
                now,
                &table,
            )
            .await;
        assert!(matches!(
            unavailable,
            Err(DocumentError::StatusUnavailable(_))
        ));
    }
}
