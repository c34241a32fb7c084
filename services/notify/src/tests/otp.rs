//! OTP on SQLite and PostgreSQL: the code arrives by SMS, matches once, expires, allows a limited
//! number of attempts, is limited per phone, and is never stored in clear.

use std::sync::Arc;

use crate::otp::{
    OtpIssuer, OtpSettings, OtpText, REASON_OTP_ATTEMPTS_EXHAUSTED, REASON_OTP_EXPIRED,
    REASON_OTP_RATE_LIMITED, REASON_OTP_SUBJECT_MISMATCH, REASON_OTP_USED,
};
use crate::phone::NoPhoneDirectory;
use crate::sms::Language;
use crate::tests::common::{fast_retries, harness};
use shlyuz_kit::db::Database;
use sqlx::Row;

fn settings() -> OtpSettings {
    OtpSettings {
        ttl_secs: 300,
        max_attempts: 3,
        max_per_window: 2,
        rate_window_secs: 600,
    }
}

/// The code in the last SMS the log provider recorded.
fn last_code(harness: &crate::tests::common::Harness) -> String {
    let sent = harness.sms.sent();
    let text = &sent.last().expect("an sms").text;
    let code: String = text
        .split(|character: char| !character.is_ascii_digit())
        .find(|part| part.len() == 6)
        .expect("six digits in the sms")
        .to_string();
    code
}

fn wrong(code: &str) -> String {
    let last = code
        .chars()
        .last()
        .and_then(|digit| digit.to_digit(10))
        .unwrap_or(0);
    format!("{}{}", &code[..5], (last + 1) % 10)
}

shlyuz_kit::storage_test!(
    a_code_matches_once_and_is_stored_hashed,
    |database: Database| async move {
        let harness = harness(database).await;
        let issuer = OtpIssuer::new(harness.notifier.clone(), settings());
        let issued = issuer
            .issue("+77011234567", "", "CONSENT", Language::Kk)
            .await
            .expect("issued");
        harness
            .worker(Arc::new(NoPhoneDirectory), fast_retries(3))
            .run_once()
            .await
            .expect("sent");
        let code = last_code(&harness);
        assert!(harness.sms.sent()[0].text.starts_with("Растау коды: "));
        let row = sqlx::query("SELECT salt, code_hash, purpose, phone FROM otps WHERE id = $1")
            .bind(issued.otp_id.clone())
            .fetch_one(harness.database.pool())
            .await
            .expect("row");
        let hash: Vec<u8> = row.try_get("code_hash").expect("hash");
        assert_eq!(hash.len(), 32);
        assert!(!hash.windows(6).any(|window| window == code.as_bytes()));
        for column in ["purpose", "phone"] {
            let value: String = row.try_get(column).expect("text");
            assert!(!value.contains(&code));
        }

        let miss = issuer
            .verify(&issued.otp_id, &wrong(&code), "CONSENT")
            .await
            .expect("verify");
        assert!(!miss.verified);
        assert_eq!(miss.attempts_left, 2);
        let other_purpose = issuer
            .verify(&issued.otp_id, &code, "SIGN_APPLICATION")
            .await
            .expect("verify");
        assert!(
            !other_purpose.verified,
            "a code confirms only its own purpose"
        );
        let hit = issuer
            .verify(&issued.otp_id, &code, "CONSENT")
            .await
            .expect("verify");
        assert!(hit.verified);
        let again = issuer
            .verify(&issued.otp_id, &code, "CONSENT")
            .await
            .expect_err("used");
        assert_eq!(again.reason(), REASON_OTP_USED);
    }
);

shlyuz_kit::storage_test!(
    codes_expire_and_attempts_run_out,
    |database: Database| async move {
        let harness = harness(database).await;
        let issuer = OtpIssuer::new(harness.notifier.clone(), settings());
        let worker = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
        let expiring = issuer
            .issue("+77011234567", "", "CONSENT", Language::Ru)
            .await
            .expect("issued");
        worker.run_once().await.expect("sent");
        let expiring_code = last_code(&harness);
        harness.clock.advance(time::Duration::seconds(300));
        let expired = issuer
            .verify(&expiring.otp_id, &expiring_code, "CONSENT")
            .await
            .expect_err("expired");
        assert_eq!(expired.reason(), REASON_OTP_EXPIRED);
        assert_eq!(expired.code(), tonic::Code::FailedPrecondition);

        let guessed = issuer
            .issue("+77011234567", "", "CONSENT", Language::Ru)
            .await
            .expect("issued");
        worker.run_once().await.expect("sent");
        let code = last_code(&harness);
        for left in [2, 1, 0] {
            let miss = issuer
                .verify(&guessed.otp_id, &wrong(&code), "CONSENT")
                .await
                .expect("verify");
            assert_eq!((miss.verified, miss.attempts_left), (false, left));
        }
        let exhausted = issuer
            .verify(&guessed.otp_id, &code, "CONSENT")
            .await
            .expect_err("exhausted");
        assert_eq!(exhausted.reason(), REASON_OTP_ATTEMPTS_EXHAUSTED);
    }
);

shlyuz_kit::storage_test!(
    codes_are_limited_per_phone,
    |database: Database| async move {
        let harness = harness(database).await;
        let issuer = OtpIssuer::new(harness.notifier.clone(), settings());
        for _ in 0..2 {
            issuer
                .issue("+77011234567", "", "CONSENT", Language::Ru)
                .await
                .expect("issued");
        }
        let limited = issuer
            .issue("+77011234567", "", "CONSENT", Language::Ru)
            .await
            .expect_err("limited");
        assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
        assert_eq!(limited.reason(), REASON_OTP_RATE_LIMITED);
        // Another phone is not affected; the first one is again after the window.
        issuer
            .issue("+77019876543", "", "CONSENT", Language::Ru)
            .await
            .expect("other phone");
        harness.clock.advance(time::Duration::seconds(601));
        issuer
            .issue("+77011234567", "", "CONSENT", Language::Ru)
            .await
            .expect("after the window");
        let bad = issuer
            .issue("+77011234567", "", "", Language::Ru)
            .await
            .expect_err("no purpose");
        assert_eq!(bad.field_violations()[0].field, "purpose");
    }
);

shlyuz_kit::storage_test!(
    a_code_confirms_only_the_person_it_was_issued_for,
    |database: Database| async move {
        let harness = harness(database).await;
        let issuer = OtpIssuer::new(harness.notifier.clone(), settings());
        let candidate = crate::tests::common::iin(1);
        let issued = issuer
            .issue(
                "+77011234567",
                &candidate,
                "JAUYNGER_APPLICATION",
                Language::Kk,
            )
            .await
            .expect("issued");
        let bare_phone = issuer
            .issue("+77017654321", "", "JAUYNGER_APPLICATION", Language::Kk)
            .await
            .expect("issued");
        let worker = harness.worker(Arc::new(NoPhoneDirectory), fast_retries(3));
        worker.run_once().await.expect("sent");
        let sent = harness.sms.sent();
        let code_of = |phone: &str| {
            sent.iter()
                .find(|sms| sms.phone == phone)
                .and_then(|sms| {
                    sms.text
                        .split(|character: char| !character.is_ascii_digit())
                        .find(|part| part.len() == 6)
                        .map(str::to_string)
                })
                .expect("a code")
        };

        // Someone else's IIN, or a code that went to a bare phone: refused, no attempt used.
        for (otp_id, code) in [
            (&issued.otp_id, code_of("+77011234567")),
            (&bare_phone.otp_id, code_of("+77017654321")),
        ] {
            let refused = issuer
                .verify_for(
                    otp_id,
                    &code,
                    "JAUYNGER_APPLICATION",
                    Some(&crate::tests::common::iin(2)),
                )
                .await
                .expect_err("another person");
            assert_eq!(refused.reason(), REASON_OTP_SUBJECT_MISMATCH);
        }
        let confirmed = issuer
            .verify_for(
                &issued.otp_id,
                &code_of("+77011234567"),
                "JAUYNGER_APPLICATION",
                Some(&candidate),
            )
            .await
            .expect("verify");
        assert!(confirmed.verified);
        assert_eq!(confirmed.attempts_left, 2, "the refusals used no attempt");
    }
);

shlyuz_kit::storage_test!(
    a_code_can_carry_an_otp_template_that_says_who_asks,
    |database: Database| async move {
        let harness = harness(database).await;
        let issuer = OtpIssuer::new(harness.notifier.clone(), settings());
        let consent_text = |parameters: &[(&str, &str)]| OtpText {
            template_id: "otp.consent".to_string(),
            parameters: parameters
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
        };
        let asked = consent_text(&[
            ("participant", "intake"),
            ("purpose", "MILITARY_RECRUITMENT"),
        ]);
        let issued = issuer
            .issue_with_text("+77011234567", "", "CONSENT", Language::Ru, &asked)
            .await
            .expect("issued");
        harness
            .worker(Arc::new(NoPhoneDirectory), fast_retries(3))
            .run_once()
            .await
            .expect("sent");
        let text = harness.sms.sent()[0].text.clone();
        assert!(
            text.starts_with(
                "intake запрашивает согласие на доступ к персональным данным (MILITARY_RECRUITMENT). \
                 Код подтверждения: "
            ),
            "{text}"
        );
        assert!(text.contains("келісім сұрайды"), "{text}");
        let code = last_code(&harness);
        let hit = issuer
            .verify(&issued.otp_id, &code, "CONSENT")
            .await
            .expect("verify");
        assert!(hit.verified);

        // Refused before a code is counted: a template that is not an OTP template, a parameter
        // notify fills, a missing one, an unknown one.
        let refusals = [
            (
                OtpText {
                    template_id: "housing.register_removal".to_string(),
                    ..consent_text(&[("finding", "x"), ("reason", "y")])
                },
                "template_id",
            ),
            (
                consent_text(&[
                    ("participant", "intake"),
                    ("purpose", "MILITARY_RECRUITMENT"),
                    ("code", "000000"),
                ]),
                "parameters.code",
            ),
            (
                consent_text(&[("participant", "intake")]),
                "parameters.purpose",
            ),
            (
                consent_text(&[
                    ("participant", "intake"),
                    ("purpose", "MILITARY_RECRUITMENT"),
                    ("colour", "red"),
                ]),
                "parameters.colour",
            ),
        ];
        for (text, field) in refusals {
            let refused = issuer
                .issue_with_text("+77019876543", "", "CONSENT", Language::Kk, &text)
                .await
                .expect_err(field);
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{field}");
            assert_eq!(refused.field_violations()[0].field, field);
        }
        // None of them used the phone's allowance of two codes.
        for _ in 0..2 {
            issuer
                .issue_with_text("+77019876543", "", "CONSENT", Language::Kk, &asked)
                .await
                .expect("within the limit");
        }
    }
);
