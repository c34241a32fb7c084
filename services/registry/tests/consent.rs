//! ConsentService on SQLite and PostgreSQL: OTP by SMS outbox, wrong and expired OTPs, the
//! attempt limit, listing and revocation.

use std::sync::Arc;

use shlyuz_kit::clock::ManualClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::subject::SUBJECT_IIN_METADATA;
use shlyuz_proto::registry::v1 as pb;
use shlyuz_proto::registry::v1::consent_service_server::ConsentService;
use shlyuz_registry::consent::ConsentServiceImpl;
use shlyuz_registry::embedded::EmbeddedRegistry;
use shlyuz_registry::fixtures::{self, rules};
use tonic::Code;

const SUBJECT: &str = rules::CLEAN_CANDIDATE;

async fn service(database: Database) -> (ConsentServiceImpl, ManualClock) {
    database
        .migrate(&shlyuz_registry::MIGRATIONS)
        .await
        .expect("migrate");
    let registry = EmbeddedRegistry::new(database.clone());
    let population = fixtures::parse(fixtures::RULES_FIXTURE).expect("fixture");
    fixtures::load(&registry, &population).await.expect("load");
    let clock = ManualClock::new(time::macros::datetime!(2026-03-02 09:00 UTC));
    let service = ConsentServiceImpl::new(database, Arc::new(registry), clock.shared());
    (service, clock)
}

fn about<M>(subject: &str, message: M) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SUBJECT_IIN_METADATA, subject.parse().expect("ascii"));
    request
}

fn consent_request(subject: &str, now_ms: i64) -> pb::RequestConsentRequest {
    pb::RequestConsentRequest {
        subject_iin: subject.to_string(),
        participant: "intake".to_string(),
        purpose: "MILITARY_RECRUITMENT".to_string(),
        scopes: vec!["shlyuz.registry.v1.PersonRegistryService".to_string()],
        expire_time_ms: now_ms + 30 * 24 * 3600 * 1000,
    }
}

async fn request(service: &ConsentServiceImpl, clock: &ManualClock) -> (String, String) {
    use shlyuz_kit::clock::Clock as _;
    let response = service
        .request_consent(about(SUBJECT, consent_request(SUBJECT, clock.now_millis())))
        .await
        .expect("request consent")
        .into_inner();
    let consent = response.consent.expect("consent");
    assert_eq!(consent.state, pb::ConsentState::Pending as i32);
    let outbox = service.outbox(&consent.consent_id).await.expect("outbox");
    assert_eq!(outbox.len(), 1, "one SMS per request");
    assert!(outbox[0].phone_number.starts_with("+7701"));
    let marker = "Код подтверждения: ";
    let start = outbox[0].body.find(marker).expect("otp in the sms") + marker.len();
    let otp = outbox[0].body[start..start + 6].to_string();
    (consent.consent_id, otp)
}

fn wrong(otp: &str) -> String {
    let first = otp.as_bytes()[0];
    let changed = if first == b'9' {
        '0'
    } else {
        char::from(first + 1)
    };
    format!("{changed}{}", &otp[1..])
}

async fn confirm(
    service: &ConsentServiceImpl,
    consent_id: &str,
    otp: &str,
) -> Result<pb::Consent, tonic::Status> {
    service
        .confirm_consent(about(
            SUBJECT,
            pb::ConfirmConsentRequest {
                consent_id: consent_id.to_string(),
                otp: otp.to_string(),
            },
        ))
        .await
        .map(|response| response.into_inner().consent.unwrap_or_default())
}

async fn state(service: &ConsentServiceImpl, consent_id: &str) -> i32 {
    service
        .get_consent(tonic::Request::new(pb::GetConsentRequest {
            consent_id: consent_id.to_string(),
        }))
        .await
        .expect("get consent")
        .into_inner()
        .consent
        .expect("consent")
        .state
}

shlyuz_kit::storage_test!(
    otp_confirms_then_revocation_ends_the_consent,
    |database: Database| async move {
        let (service, clock) = service(database).await;
        let (consent_id, otp) = request(&service, &clock).await;

        let status = confirm(&service, &consent_id, &wrong(&otp))
            .await
            .expect_err("wrong otp");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::PermissionDenied);
        assert_eq!(summary.reason, "OTP_INVALID");
        assert_eq!(
            state(&service, &consent_id).await,
            pb::ConsentState::Pending as i32
        );

        let active = confirm(&service, &consent_id, &otp)
            .await
            .expect("right otp");
        assert_eq!(active.state, pb::ConsentState::Active as i32);

        let listed = service
            .list_consents(about(
                SUBJECT,
                pb::ListConsentsRequest {
                    subject_iin: SUBJECT.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.consents.len(), 1);

        let revoked = service
            .revoke_consent(about(
                SUBJECT,
                pb::RevokeConsentRequest {
                    consent_id: consent_id.clone(),
                },
            ))
            .await
            .expect("revoke")
            .into_inner()
            .consent
            .expect("consent");
        assert_eq!(revoked.state, pb::ConsentState::Revoked as i32);
        assert_eq!(
            state(&service, &consent_id).await,
            pb::ConsentState::Revoked as i32
        );

        // Someone else cannot revoke or read it through the gateway.
        let status = service
            .revoke_consent(about(
                rules::CONVICTED_CANDIDATE,
                pb::RevokeConsentRequest { consent_id },
            ))
            .await
            .expect_err("other subject");
        assert_eq!(summarize_status(&status).reason, "SUBJECT_MISMATCH");
    }
);

shlyuz_kit::storage_test!(
    an_expired_otp_does_not_grant,
    |database: Database| async move {
        let (service, clock) = service(database).await;
        let (consent_id, otp) = request(&service, &clock).await;
        clock.advance(time::Duration::minutes(6));
        let status = confirm(&service, &consent_id, &otp)
            .await
            .expect_err("expired");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::FailedPrecondition);
        assert_eq!(summary.reason, "OTP_EXPIRED");
        assert_eq!(
            state(&service, &consent_id).await,
            pb::ConsentState::Pending as i32
        );
    }
);

shlyuz_kit::storage_test!(
    otp_guessing_locks_the_consent,
    |database: Database| async move {
        let (service, clock) = service(database).await;
        let (consent_id, otp) = request(&service, &clock).await;
        for attempt in 1..=5 {
            let status = confirm(&service, &consent_id, &wrong(&otp))
                .await
                .expect_err("wrong");
            let expected = if attempt < 5 {
                "OTP_INVALID"
            } else {
                "OTP_ATTEMPTS_EXCEEDED"
            };
            assert_eq!(
                summarize_status(&status).reason,
                expected,
                "attempt {attempt}"
            );
        }
        // Even the right OTP no longer works.
        let status = confirm(&service, &consent_id, &otp)
            .await
            .expect_err("locked");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::ResourceExhausted);
        assert_eq!(summary.reason, "OTP_ATTEMPTS_EXCEEDED");
        assert_eq!(
            state(&service, &consent_id).await,
            pb::ConsentState::Locked as i32
        );
    }
);

shlyuz_kit::storage_test!(
    requests_are_limited_and_need_a_phone,
    |database: Database| async move {
        use shlyuz_kit::clock::Clock as _;
        let (service, clock) = service(database).await;
        for _ in 0..5 {
            request(&service, &clock).await;
        }
        let status = service
            .request_consent(about(SUBJECT, consent_request(SUBJECT, clock.now_millis())))
            .await
            .expect_err("sixth request");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::ResourceExhausted);
        assert_eq!(summary.reason, "OTP_REQUESTS_EXCEEDED");

        let no_phone = rules::NO_PHONE_PERSON;
        let status = service
            .request_consent(about(
                no_phone,
                consent_request(no_phone, clock.now_millis()),
            ))
            .await
            .expect_err("no phone");
        assert_eq!(summarize_status(&status).reason, "PHONE_NOT_FOUND");

        let mut past = consent_request(SUBJECT, clock.now_millis());
        past.expire_time_ms = clock.now_millis() - 1;
        let status = service
            .request_consent(about(SUBJECT, past))
            .await
            .expect_err("past expiry");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["expire_time_ms".to_string()]
        );
    }
);
