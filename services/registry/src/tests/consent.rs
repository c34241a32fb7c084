//! ConsentService on SQLite and PostgreSQL, its codes kept by a notify `OtpService` that behaves
//! like notify's: the SMS says who asks and for what; wrong, foreign, expired and exhausted codes;
//! replayed confirmations; the per-phone limit; notify down; listing and revocation.

use std::sync::Arc;

use crate::consent::ConsentServiceImpl;
use crate::consent_otp::ConsentOtp;
use crate::embedded::EmbeddedRegistry;
use crate::fixtures::{self, rules};
use crate::tests::fake_notify::FakeNotify;
use shlyuz_kit::clock::{Clock as _, ManualClock};
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::gateway_client::GatewayClient;
use shlyuz_kit::subject::SUBJECT_IIN_METADATA;
use shlyuz_proto::registry::v1 as pb;
use shlyuz_proto::registry::v1::consent_service_server::ConsentService;
use tonic::Code;

const SUBJECT: &str = rules::CLEAN_CANDIDATE;
const SUBJECT_PHONE: &str = "+77015550010";

struct Setup {
    database: Database,
    clock: ManualClock,
    notify: FakeNotify,
    service: ConsentServiceImpl,
}

impl Setup {
    async fn start(database: Database) -> Setup {
        database.migrate(&crate::MIGRATIONS).await.expect("migrate");
        let registry = EmbeddedRegistry::new(database.clone());
        let population = fixtures::parse(fixtures::RULES_FIXTURE).expect("fixture");
        fixtures::load(&registry, &population).await.expect("load");
        let clock = ManualClock::new(time::macros::datetime!(2026-03-02 09:00 UTC));
        let notify = FakeNotify::start(clock.shared()).await;
        let service = Self::service_over(&database, &clock, Some(notify.client.clone()));
        Setup {
            database,
            clock,
            notify,
            service,
        }
    }

    /// Another consent service over the same database, calling notify through `gateway`.
    fn service_over(
        database: &Database,
        clock: &ManualClock,
        gateway: Option<GatewayClient>,
    ) -> ConsentServiceImpl {
        ConsentServiceImpl::new(
            database.clone(),
            Arc::new(EmbeddedRegistry::new(database.clone())),
            clock.shared(),
            ConsentOtp::new(gateway),
        )
    }

    /// Requests a consent of `subject`; returns its id and the code in the SMS.
    async fn request(&self, subject: &str) -> (String, String) {
        let response = self
            .service
            .request_consent(about(
                subject,
                consent_request(subject, self.clock.now_millis()),
            ))
            .await
            .expect("request consent")
            .into_inner();
        let consent = response.consent.expect("consent");
        assert_eq!(consent.state, pb::ConsentState::Pending as i32);
        let sms = self.notify.last_sms();
        assert_eq!(sms.iin, subject, "the code is bound to the subject");
        (consent.consent_id, sms.code)
    }

    async fn confirm_as(
        &self,
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

    async fn confirm(&self, consent_id: &str, otp: &str) -> Result<pb::Consent, tonic::Status> {
        self.confirm_as(&self.service, consent_id, otp).await
    }

    async fn state(&self, consent_id: &str) -> i32 {
        self.service
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

    async fn consent_count(&self) -> i64 {
        use sqlx::Row as _;
        sqlx::query("SELECT COUNT(*) AS consents FROM consents")
            .fetch_one(self.database.pool())
            .await
            .and_then(|row| row.try_get("consents"))
            .expect("count")
    }

    async fn stop(self) {
        self.notify.stop().await;
    }
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

fn wrong(otp: &str) -> String {
    let first = otp.as_bytes()[0];
    let changed = if first == b'9' {
        '0'
    } else {
        char::from(first + 1)
    };
    format!("{changed}{}", &otp[1..])
}

shlyuz_kit::storage_test!(
    the_code_from_notify_confirms_once_then_revocation_ends_the_consent,
    |database: Database| async move {
        let setup = Setup::start(database).await;
        let (consent_id, otp) = setup.request(SUBJECT).await;
        // The SMS goes to the subject's phone and says who asks and for what.
        let sms = setup.notify.last_sms();
        assert_eq!(sms.phone, SUBJECT_PHONE);
        assert_eq!(sms.template_id, "otp.consent");
        assert_eq!(sms.parameters["participant"], "intake");
        assert_eq!(sms.parameters["purpose"], "MILITARY_RECRUITMENT");

        let status = setup
            .confirm(&consent_id, &wrong(&otp))
            .await
            .expect_err("wrong otp");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::InvalidArgument);
        assert_eq!(summary.reason, "OTP_CODE_WRONG");
        assert_eq!(summary.fields, vec!["otp".to_string()]);
        assert_eq!(
            setup.state(&consent_id).await,
            pb::ConsentState::Pending as i32
        );

        let active = setup.confirm(&consent_id, &otp).await.expect("right otp");
        assert_eq!(active.state, pb::ConsentState::Active as i32);
        // A replayed confirmation changes nothing.
        let status = setup
            .confirm(&consent_id, &otp)
            .await
            .expect_err("replayed");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::FailedPrecondition);
        assert_eq!(summary.reason, "CONSENT_NOT_PENDING");

        let listed = setup
            .service
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

        let revoked = setup
            .service
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
            setup.state(&consent_id).await,
            pb::ConsentState::Revoked as i32
        );

        // Someone else cannot revoke or read it through the gateway.
        let status = setup
            .service
            .revoke_consent(about(
                rules::CONVICTED_CANDIDATE,
                pb::RevokeConsentRequest { consent_id },
            ))
            .await
            .expect_err("other subject");
        assert_eq!(summarize_status(&status).reason, "SUBJECT_MISMATCH");
        setup.stop().await;
    }
);

shlyuz_kit::storage_test!(
    a_code_of_another_consent_or_person_confirms_nothing,
    |database: Database| async move {
        let setup = Setup::start(database).await;
        let (first_id, first_code) = setup.request(SUBJECT).await;
        let (second_id, second_code) = setup.request(SUBJECT).await;
        assert_ne!(first_code, second_code);

        // The second consent's code does not confirm the first.
        let status = setup
            .confirm(&first_id, &second_code)
            .await
            .expect_err("another consent's code");
        assert_eq!(summarize_status(&status).reason, "OTP_CODE_WRONG");
        assert_eq!(
            setup.state(&first_id).await,
            pb::ConsentState::Pending as i32
        );
        assert_eq!(
            setup.state(&second_id).await,
            pb::ConsentState::Pending as i32
        );

        // A consent of another person: the subject cannot confirm it, not even with its code.
        let (foreign_id, foreign_code) = setup.request(rules::CONVICTED_CANDIDATE).await;
        let status = setup
            .confirm(&foreign_id, &foreign_code)
            .await
            .expect_err("someone else's consent");
        assert_eq!(summarize_status(&status).reason, "SUBJECT_MISMATCH");
        assert_eq!(
            setup.state(&foreign_id).await,
            pb::ConsentState::Pending as i32
        );

        // Were a consent row to point at a code issued for someone else, notify refuses it.
        let foreign_otp_id: String = {
            use sqlx::Row as _;
            sqlx::query("SELECT otp_id FROM consents WHERE consent_id = $1")
                .bind(&foreign_id)
                .fetch_one(setup.database.pool())
                .await
                .and_then(|row| row.try_get("otp_id"))
                .expect("otp id")
        };
        sqlx::query("UPDATE consents SET otp_id = $2 WHERE consent_id = $1")
            .bind(&second_id)
            .bind(&foreign_otp_id)
            .execute(setup.database.pool())
            .await
            .expect("point at the foreign code");
        let status = setup
            .confirm(&second_id, &foreign_code)
            .await
            .expect_err("a code issued for another person");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::FailedPrecondition);
        assert_eq!(summary.reason, "OTP_SUBJECT_MISMATCH");
        assert_eq!(
            setup.state(&second_id).await,
            pb::ConsentState::Pending as i32
        );

        // The first consent's own code still works: the refusals above took nothing from it
        // beyond the one wrong attempt.
        let active = setup
            .confirm(&first_id, &first_code)
            .await
            .expect("its own code");
        assert_eq!(active.state, pb::ConsentState::Active as i32);
        setup.stop().await;
    }
);

shlyuz_kit::storage_test!(
    an_expired_code_does_not_grant,
    |database: Database| async move {
        let setup = Setup::start(database).await;
        let (consent_id, otp) = setup.request(SUBJECT).await;
        setup.clock.advance(time::Duration::minutes(6));
        let status = setup.confirm(&consent_id, &otp).await.expect_err("expired");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::FailedPrecondition);
        assert_eq!(summary.reason, "OTP_EXPIRED");
        assert_eq!(
            setup.state(&consent_id).await,
            pb::ConsentState::Pending as i32
        );
        setup.stop().await;
    }
);

shlyuz_kit::storage_test!(
    code_guessing_locks_the_consent,
    |database: Database| async move {
        let setup = Setup::start(database).await;
        let (consent_id, otp) = setup.request(SUBJECT).await;
        for attempt in 1..=5 {
            let status = setup
                .confirm(&consent_id, &wrong(&otp))
                .await
                .expect_err("wrong");
            let expected = if attempt < 5 {
                "OTP_CODE_WRONG"
            } else {
                "OTP_ATTEMPTS_EXHAUSTED"
            };
            assert_eq!(
                summarize_status(&status).reason,
                expected,
                "attempt {attempt}"
            );
        }
        // Even the right code no longer works.
        let status = setup.confirm(&consent_id, &otp).await.expect_err("locked");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::FailedPrecondition);
        assert_eq!(summary.reason, "OTP_ATTEMPTS_EXHAUSTED");
        assert_eq!(
            setup.state(&consent_id).await,
            pb::ConsentState::Locked as i32
        );
        setup.stop().await;
    }
);

shlyuz_kit::storage_test!(
    codes_are_limited_per_phone_and_need_a_phone,
    |database: Database| async move {
        let setup = Setup::start(database).await;
        for _ in 0..3 {
            setup.request(SUBJECT).await;
        }
        let status = setup
            .service
            .request_consent(about(
                SUBJECT,
                consent_request(SUBJECT, setup.clock.now_millis()),
            ))
            .await
            .expect_err("fourth code in the window");
        let summary = summarize_status(&status);
        assert_eq!(summary.code, Code::ResourceExhausted);
        assert_eq!(summary.reason, "OTP_RATE_LIMITED");
        assert_eq!(
            summary.retry_after,
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(setup.consent_count().await, 3, "no row without a code");

        let no_phone = rules::NO_PHONE_PERSON;
        let status = setup
            .service
            .request_consent(about(
                no_phone,
                consent_request(no_phone, setup.clock.now_millis()),
            ))
            .await
            .expect_err("no phone");
        assert_eq!(summarize_status(&status).reason, "PHONE_NOT_FOUND");

        let mut past = consent_request(SUBJECT, setup.clock.now_millis());
        past.expire_time_ms = setup.clock.now_millis() - 1;
        let status = setup
            .service
            .request_consent(about(SUBJECT, past))
            .await
            .expect_err("past expiry");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["expire_time_ms".to_string()]
        );
        assert_eq!(setup.notify.sms().len(), 3);
        setup.stop().await;
    }
);

shlyuz_kit::storage_test!(
    without_notify_nothing_is_written_or_activated,
    |database: Database| async move {
        let setup = Setup::start(database).await;
        let unavailable = |status: &tonic::Status| {
            let summary = summarize_status(status);
            assert_eq!(summary.code, Code::Unavailable, "{status:?}");
            assert_eq!(summary.reason, "OTP_UNAVAILABLE");
        };
        let no_gateway = Setup::service_over(&setup.database, &setup.clock, None);
        let (down_client, _down_socket) = setup.notify.unreachable_client();
        let notify_down = Setup::service_over(&setup.database, &setup.clock, Some(down_client));
        for service in [&no_gateway, &notify_down] {
            let status = service
                .request_consent(about(
                    SUBJECT,
                    consent_request(SUBJECT, setup.clock.now_millis()),
                ))
                .await
                .expect_err("no notify");
            unavailable(&status);
        }
        assert_eq!(setup.consent_count().await, 0, "no half-written consent");

        // Requested while notify was up, confirmed while it is down: nothing is activated, and
        // the code still works once notify is back.
        let (consent_id, otp) = setup.request(SUBJECT).await;
        for service in [&no_gateway, &notify_down] {
            let status = setup
                .confirm_as(service, &consent_id, &otp)
                .await
                .expect_err("no notify");
            unavailable(&status);
        }
        assert_eq!(
            setup.state(&consent_id).await,
            pb::ConsentState::Pending as i32
        );
        let active = setup.confirm(&consent_id, &otp).await.expect("notify back");
        assert_eq!(active.state, pb::ConsentState::Active as i32);
        setup.stop().await;
    }
);
