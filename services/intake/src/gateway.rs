//! The production [`RegistryLookups`] and [`RevocationSource`]: the registry services called
//! through the gateway with intake's own signed envelope (purpose MILITARY_RECRUITMENT, the
//! candidate as subject, their consent), in parallel. The channel must present intake's client
//! certificate; the gateway identifies the sender by it.

use std::sync::Arc;

use futures::future::BoxFuture;
use shlyuz_kit::application_form::APPLICATION_OTP_PURPOSE;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::gateway_client::{SignedChannel, SigningService, with_envelope};
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::signed_document::RevocationStatus;
use shlyuz_proto::registry::v1 as registry;
use tonic::transport::Channel;

use crate::dossier::{LookupContext, PURPOSE, RegistryAnswers, RegistryLookups};
use crate::grpc::{CertificateAuthority, OtpCheck, OtpVerifier, REASON_OTP_UNAVAILABLE};
use shlyuz_kit::error::ApiError;
use shlyuz_kit::iin::Iin;
use shlyuz_proto::notify::v1 as notify;

/// `ErrorInfo` reason the registry gives for an IIN it does not know.
const REASON_PERSON_NOT_FOUND: &str = shlyuz_kit::error::reasons::PERSON_NOT_FOUND;
/// Purpose of certificate status queries.
const PURPOSE_SIGNATURE: &str = "DIGITAL_SIGNATURE";
/// Dispensary records fetched per page.
const DISPENSARY_PAGE: i32 = 100;
/// Pages read at most (a person with more records is a data error, reported as such).
const MAX_DISPENSARY_PAGES: usize = 20;

/// Registry look-ups through the gateway.
#[derive(Clone)]
pub struct GatewayRegistryLookups {
    channel: SignedChannel,
}

impl GatewayRegistryLookups {
    /// Calls through `channel` (to the gateway, with intake's client certificate), signing
    /// with intake's `signing_key`.
    pub fn new(channel: Channel, signing_key: Arc<SigningKey>) -> Self {
        Self {
            channel: SigningService::new(channel, signing_key),
        }
    }

    fn envelope(&self, context: &LookupContext) -> EnvelopeBuilder {
        EnvelopeBuilder {
            user_id: context.user_id.clone(),
            purpose: PURPOSE.to_string(),
            subject_iin: context.candidate_iin.clone(),
            consent_id: context.consent_id.clone(),
            ..EnvelopeBuilder::default()
        }
    }

    async fn person(&self, context: &LookupContext) -> Result<Option<registry::Person>, String> {
        let mut client = registry::person_registry_service_client::PersonRegistryServiceClient::new(
            self.channel.clone(),
        );
        let request = with_envelope(
            self.envelope(context),
            registry::GetPersonRequest {
                iin: context.candidate_iin.clone(),
            },
        );
        absent_if_unknown(
            client
                .get_person(request)
                .await
                .map(|r| r.into_inner().person),
        )
    }

    async fn family(&self, context: &LookupContext) -> Result<Option<registry::Family>, String> {
        let mut client = registry::civil_registry_service_client::CivilRegistryServiceClient::new(
            self.channel.clone(),
        );
        let request = with_envelope(
            self.envelope(context),
            registry::GetFamilyRequest {
                iin: context.candidate_iin.clone(),
            },
        );
        absent_if_unknown(
            client
                .get_family(request)
                .await
                .map(|r| r.into_inner().family),
        )
    }

    async fn dispensaries(
        &self,
        context: &LookupContext,
    ) -> Result<Vec<registry::DispensaryRecord>, String> {
        let mut client =
            registry::medical_registry_service_client::MedicalRegistryServiceClient::new(
                self.channel.clone(),
            );
        let mut records = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_DISPENSARY_PAGES {
            let request = with_envelope(
                self.envelope(context),
                registry::ListDispensaryRecordsRequest {
                    iin: context.candidate_iin.clone(),
                    page_size: DISPENSARY_PAGE,
                    page_token: page_token.clone(),
                },
            );
            let page = match client.list_dispensary_records(request).await {
                Ok(response) => response.into_inner(),
                Err(status) if is_unknown_person(&status) => return Ok(records),
                Err(status) => return Err(describe(&status)),
            };
            records.extend(page.records);
            if page.next_page_token.is_empty() {
                return Ok(records);
            }
            page_token = page.next_page_token;
        }
        Err("dispensary records: too many pages".to_string())
    }

    async fn criminal(
        &self,
        context: &LookupContext,
    ) -> Result<Option<registry::CriminalRecord>, String> {
        let mut client =
            registry::criminal_records_service_client::CriminalRecordsServiceClient::new(
                self.channel.clone(),
            );
        let request = with_envelope(
            self.envelope(context),
            registry::GetCriminalRecordRequest {
                iin: context.candidate_iin.clone(),
            },
        );
        absent_if_unknown(
            client
                .get_criminal_record(request)
                .await
                .map(|r| r.into_inner().record),
        )
    }

    async fn military(
        &self,
        context: &LookupContext,
    ) -> Result<Option<registry::MilitaryRegistration>, String> {
        let mut client =
            registry::military_register_service_client::MilitaryRegisterServiceClient::new(
                self.channel.clone(),
            );
        let request = with_envelope(
            self.envelope(context),
            registry::GetMilitaryRegistrationRequest {
                iin: context.candidate_iin.clone(),
            },
        );
        absent_if_unknown(
            client
                .get_military_registration(request)
                .await
                .map(|r| r.into_inner().registration),
        )
    }
}

fn is_unknown_person(status: &tonic::Status) -> bool {
    // Only the registry's own "unknown IIN" means "no data"; a NOT_FOUND from the gateway
    // (no route) is a failure and must leave the dossier incomplete.
    status.code() == tonic::Code::NotFound
        && summarize_status(status).reason == REASON_PERSON_NOT_FOUND
}

fn describe(status: &tonic::Status) -> String {
    let summary = summarize_status(status);
    format!(
        "{:?} {}: {}",
        summary.code,
        summary.reason,
        status.message()
    )
}

fn absent_if_unknown<T>(result: Result<Option<T>, tonic::Status>) -> Result<Option<T>, String> {
    match result {
        Ok(value) => Ok(value),
        Err(status) if is_unknown_person(&status) => Ok(None),
        Err(status) => Err(describe(&status)),
    }
}

impl RegistryLookups for GatewayRegistryLookups {
    fn collect<'a>(&'a self, context: &'a LookupContext) -> BoxFuture<'a, RegistryAnswers> {
        Box::pin(async move {
            let (person, family, dispensaries, criminal, military) = tokio::join!(
                self.person(context),
                self.family(context),
                self.dispensaries(context),
                self.criminal(context),
                self.military(context),
            );
            RegistryAnswers {
                person,
                family,
                dispensaries,
                criminal,
                military,
            }
        })
    }
}

/// The registry's CertificateAuthorityService through the gateway, with the signer as the
/// subject of each query.
#[derive(Clone)]
pub struct GatewayCertificateAuthority {
    channel: SignedChannel,
}

impl GatewayCertificateAuthority {
    /// Asks through `channel`, signing with `signing_key`.
    pub fn new(channel: Channel, signing_key: Arc<SigningKey>) -> Self {
        Self {
            channel: SigningService::new(channel, signing_key),
        }
    }

    fn client(
        &self,
    ) -> registry::certificate_authority_service_client::CertificateAuthorityServiceClient<
        SignedChannel,
    > {
        registry::certificate_authority_service_client::CertificateAuthorityServiceClient::new(
            self.channel.clone(),
        )
    }

    fn envelope(subject: &Iin) -> EnvelopeBuilder {
        EnvelopeBuilder {
            purpose: PURPOSE_SIGNATURE.to_string(),
            subject_iin: subject.as_str().to_string(),
            ..EnvelopeBuilder::default()
        }
    }
}

impl CertificateAuthority for GatewayCertificateAuthority {
    fn ca_certificate_pem<'a>(&'a self, subject: &'a Iin) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let request = with_envelope(
                Self::envelope(subject),
                registry::GetCaCertificateRequest::default(),
            );
            self.client()
                .get_ca_certificate(request)
                .await
                .map(|response| response.into_inner().certificate_pem)
                .map_err(|status| describe(&status))
        })
    }

    fn status<'a>(
        &'a self,
        serial_hex: &'a str,
        subject: &'a Iin,
    ) -> BoxFuture<'a, Result<RevocationStatus, String>> {
        Box::pin(async move {
            let request = with_envelope(
                Self::envelope(subject),
                registry::GetCertificateStatusRequest {
                    serial_number: serial_hex.to_string(),
                },
            );
            let response = self
                .client()
                .get_certificate_status(request)
                .await
                .map_err(|status| describe(&status))?
                .into_inner();
            match registry::CertificateStatus::try_from(response.status) {
                Ok(registry::CertificateStatus::Good) => Ok(RevocationStatus::Good),
                Ok(registry::CertificateStatus::Revoked) => Ok(RevocationStatus::Revoked),
                Ok(registry::CertificateStatus::Unknown) => Ok(RevocationStatus::Unknown),
                _ => Err(format!("unexpected certificate status {}", response.status)),
            }
        })
    }
}

/// Stands in for the gateway while intake has no gateway address (`serve` before the gateway
/// address key exists): every look-up fails, so dossiers stay incomplete and signatures cannot
/// be checked — loudly, never silently passed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGateway;

const NO_GATEWAY: &str = "intake has no gateway address configured";

impl RegistryLookups for NoGateway {
    fn collect<'a>(&'a self, _context: &'a LookupContext) -> BoxFuture<'a, RegistryAnswers> {
        Box::pin(async move {
            RegistryAnswers {
                person: Err(NO_GATEWAY.to_string()),
                family: Err(NO_GATEWAY.to_string()),
                dispensaries: Err(NO_GATEWAY.to_string()),
                criminal: Err(NO_GATEWAY.to_string()),
                military: Err(NO_GATEWAY.to_string()),
            }
        })
    }
}

impl CertificateAuthority for NoGateway {
    fn ca_certificate_pem<'a>(
        &'a self,
        _subject: &'a Iin,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { Err(NO_GATEWAY.to_string()) })
    }

    fn status<'a>(
        &'a self,
        _serial_hex: &'a str,
        _subject: &'a Iin,
    ) -> BoxFuture<'a, Result<RevocationStatus, String>> {
        Box::pin(async move { Err(NO_GATEWAY.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shlyuz_kit::error::ApiError;

    #[test]
    fn only_the_registrys_unknown_person_means_no_data() {
        let unknown: tonic::Status =
            ApiError::not_found(REASON_PERSON_NOT_FOUND, "no person with this iin").into();
        assert_eq!(absent_if_unknown::<()>(Err(unknown)), Ok(None));
        // A NOT_FOUND from the gateway (no route) is a failure, never "no record".
        let no_route: tonic::Status =
            ApiError::not_found("UNKNOWN_SERVICE", "no such service").into();
        assert!(absent_if_unknown::<()>(Err(no_route)).is_err());
        let unavailable: tonic::Status = ApiError::unavailable(
            shlyuz_kit::error::reasons::UPSTREAM_UNAVAILABLE,
            "registry down",
        )
        .into();
        assert!(absent_if_unknown::<()>(Err(unavailable)).is_err());
    }
}

/// The candidate's one-time password checked with notify's `OtpService.VerifyOtp` through the
/// gateway (purpose DIGITAL_SIGNATURE, the candidate as subject), bound to the candidate's IIN.
#[derive(Clone)]
pub struct GatewayOtpVerifier {
    channel: SignedChannel,
}

impl GatewayOtpVerifier {
    /// Asks through `channel`, signing with `signing_key`.
    pub fn new(channel: Channel, signing_key: Arc<SigningKey>) -> Self {
        Self {
            channel: SigningService::new(channel, signing_key),
        }
    }
}

impl OtpVerifier for GatewayOtpVerifier {
    fn verify<'a>(
        &'a self,
        otp_id: &'a str,
        code: &'a str,
        candidate: &'a Iin,
    ) -> BoxFuture<'a, Result<OtpCheck, ApiError>> {
        Box::pin(async move {
            let envelope = EnvelopeBuilder {
                purpose: PURPOSE_SIGNATURE.to_string(),
                subject_iin: candidate.as_str().to_string(),
                ..EnvelopeBuilder::default()
            };
            let request = with_envelope(
                envelope,
                notify::VerifyOtpRequest {
                    otp_id: otp_id.to_string(),
                    code: code.to_string(),
                    purpose: APPLICATION_OTP_PURPOSE.to_string(),
                    iin: candidate.as_str().to_string(),
                },
            );
            match notify::otp_service_client::OtpServiceClient::new(self.channel.clone())
                .verify_otp(request)
                .await
            {
                Ok(response) => {
                    let answer = response.into_inner();
                    Ok(if answer.verified {
                        OtpCheck::Confirmed
                    } else {
                        OtpCheck::Wrong {
                            attempts_left: answer.attempts_left,
                        }
                    })
                }
                Err(status) => Err(otp_refusal(&status)),
            }
        })
    }
}

/// notify's refusal of an OTP in intake's terms: its fields renamed to the request's, its reasons
/// kept; anything else (gateway, transport) is UNAVAILABLE.
fn otp_refusal(status: &tonic::Status) -> ApiError {
    let summary = summarize_status(status);
    match status.code() {
        tonic::Code::InvalidArgument => {
            let field = if summary.fields.iter().any(|field| field == "code") {
                "otp_code"
            } else {
                "otp_reference"
            };
            ApiError::invalid_field(field, status.message().to_string())
        }
        tonic::Code::NotFound => {
            ApiError::invalid_field("otp_reference", "no such one-time password")
                .with_reason(summary.reason)
        }
        tonic::Code::FailedPrecondition => {
            ApiError::failed_precondition(summary.reason, status.message().to_string())
        }
        _ => {
            tracing::warn!(error = %describe(status), "one-time password check failed");
            ApiError::unavailable(
                REASON_OTP_UNAVAILABLE,
                "the one-time password cannot be checked now; try again",
            )
        }
    }
}
