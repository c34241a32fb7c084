//! What a Jauynger candidate signs or confirms to file an application: the portal (and `shlyuz
//! demo`) builds it, intake checks it. One definition, so both sides agree byte for byte.

/// The OTP purpose a candidate's code must have been issued for (`IssueOtp(iin, purpose)`) when
/// the application is confirmed by SMS code instead of EDS.
pub const APPLICATION_OTP_PURPOSE: &str = "JAUYNGER_APPLICATION";

/// The canonical application form a candidate signs: binding the signature to the vacancy, the
/// candidate, the consent and each attachment (lowercase hex SHA-256, in order), so it cannot be
/// replayed for another vacancy nor the attachments swapped.
pub fn application_document(
    vacancy_id: &str,
    candidate_iin: &str,
    consent_id: &str,
    attachment_sha256: &[String],
) -> Vec<u8> {
    let mut text = format!(
        "shlyuz-intake-application-v1\nvacancy_id={vacancy_id}\ncandidate_iin={candidate_iin}\nconsent_id={consent_id}\n"
    );
    for hash in attachment_sha256 {
        text.push_str(&format!("attachment_sha256={hash}\n"));
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_names_each_binding_on_its_own_line() {
        let document = application_document(
            "vacancy-1",
            "980512391010",
            "consent-7",
            &["ab".repeat(32), "cd".repeat(32)],
        );
        assert_eq!(
            String::from_utf8(document).expect("utf-8"),
            format!(
                "shlyuz-intake-application-v1\nvacancy_id=vacancy-1\ncandidate_iin=980512391010\n\
                 consent_id=consent-7\nattachment_sha256={}\nattachment_sha256={}\n",
                "ab".repeat(32),
                "cd".repeat(32)
            )
        );
    }
}
