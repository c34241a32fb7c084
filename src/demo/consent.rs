//! Seed 001: a citizen consents by SMS code to intake reading their data for recruitment. The
//! portal asks the registry's ConsentService, the code reaches the citizen through notify, the
//! citizen types it and the portal confirms. The recruitment scenario runs it for each candidate.

use anyhow::{Context, ensure};
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::fixture_people::FixturePerson;
use shlyuz_kit::gateway_client::with_envelope;
use shlyuz_proto::registry::v1 as registry_pb;

use super::{CANDIDATE, Demo, Described, Progress, phone, six_digit_code};

impl Demo {
    /// The step in which the candidate consents; returns the consent id.
    pub(super) async fn candidate_consents(
        &self,
        progress: &mut Progress,
    ) -> anyhow::Result<String> {
        progress
            .step(
                "the candidate consents by SMS code to intake reading their data (seed 001)",
                async {
                    let (consent_id, code) = self.consent_by_sms(CANDIDATE).await?;
                    Ok((
                        consent_id.clone(),
                        format!(
                            "code {code} from the SMS confirmed consent {consent_id}: ACTIVE for \
                             intake, MILITARY_RECRUITMENT"
                        ),
                    ))
                },
            )
            .await
    }

    /// `subject`'s consent to intake processing their data for recruitment, confirmed with the
    /// code from the SMS. Returns the consent id and the code.
    pub(super) async fn consent_by_sms(
        &self,
        subject: FixturePerson,
    ) -> anyhow::Result<(String, String)> {
        // A fresh envelope (message id) per call: the gateway refuses a replayed one.
        let envelope = || EnvelopeBuilder {
            purpose: "PERSONAL_DATA_CONSENT".to_string(),
            subject_iin: subject.iin.to_string(),
            ..EnvelopeBuilder::default()
        };
        let mut consents = registry_pb::consent_service_client::ConsentServiceClient::new(
            self.portal.signed_channel(),
        );
        let now_ms = shlyuz_kit::clock::system_clock().now_millis();
        let pending = consents
            .request_consent(with_envelope(
                envelope(),
                registry_pb::RequestConsentRequest {
                    subject_iin: subject.iin.to_string(),
                    participant: "intake".to_string(),
                    purpose: "MILITARY_RECRUITMENT".to_string(),
                    scopes: vec![
                        "shlyuz.registry.v1.PersonRegistryService".to_string(),
                        "shlyuz.registry.v1.CriminalRecordsService".to_string(),
                        "shlyuz.registry.v1.MedicalRegistryService".to_string(),
                    ],
                    expire_time_ms: now_ms + 30 * 86_400_000,
                },
            ))
            .await
            .described()?
            .consent
            .context("no consent in the response")?;
        let text = self
            .wait_for_sms(phone(subject)?, |text| {
                text.contains(&pending.participant) && text.contains("Код подтверждения")
            })
            .await?;
        let code = six_digit_code(&text)?;
        let active = consents
            .confirm_consent(with_envelope(
                envelope(),
                registry_pb::ConfirmConsentRequest {
                    consent_id: pending.consent_id.clone(),
                    otp: code.clone(),
                },
            ))
            .await
            .described()?
            .consent
            .context("no consent in the response")?;
        ensure!(
            active.state() == registry_pb::ConsentState::Active,
            "the consent is {:?}",
            active.state()
        );
        Ok((pending.consent_id, code))
    }
}
