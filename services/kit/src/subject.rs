//! The envelope's subject, as a service behind the gateway sees it: `x-shlyuz-subject-iin` names
//! the person (or, for batch calls, a comma-separated list of at most [`MAX_SUBJECTS`] persons)
//! the caller stated — and the gateway logged — as the subject. A service answers only about
//! those persons, so the access log never under-reports whose data left the service.

use std::collections::BTreeSet;

use tonic::metadata::MetadataMap;

use crate::error::{ApiError, parse_iin_field};
use crate::iin::Iin;

/// Metadata key of the subject IIN(s), as forwarded by the gateway.
pub use crate::envelope::SUBJECT_IIN as SUBJECT_IIN_METADATA;

/// Most persons one call may name, in the header and in a batch request.
pub use crate::envelope::MAX_SUBJECTS;

/// `ErrorInfo` reason when a request asks about someone the envelope does not name.
pub const REASON_SUBJECT_MISMATCH: &str = crate::error::reasons::SUBJECT_MISMATCH;

/// The persons the envelope names as subjects of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subjects {
    iins: BTreeSet<String>,
}

impl Subjects {
    /// Reads the subjects from request metadata. A missing, malformed or oversized header is
    /// `PERMISSION_DENIED` / `SUBJECT_MISMATCH`: nothing the request asks for can be covered by it.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Subjects, ApiError> {
        let mismatch =
            |message: String| ApiError::permission_denied(REASON_SUBJECT_MISMATCH, message);
        let Some(value) = metadata.get(SUBJECT_IIN_METADATA) else {
            return Err(mismatch(format!(
                "{SUBJECT_IIN_METADATA} is missing: the request names no subject"
            )));
        };
        let text = value
            .to_str()
            .map_err(|_| mismatch(format!("{SUBJECT_IIN_METADATA} is not ASCII")))?;
        Self::parse(text).map_err(mismatch)
    }

    /// Parses a comma-separated list of IINs (spaces around commas allowed).
    pub fn parse(text: &str) -> Result<Subjects, String> {
        let mut iins = BTreeSet::new();
        for part in text.split(',') {
            let candidate = part.trim();
            let iin = Iin::parse(candidate)
                .map_err(|error| format!("{SUBJECT_IIN_METADATA}: {error}"))?;
            iins.insert(iin.as_str().to_string());
        }
        if iins.len() > MAX_SUBJECTS {
            return Err(format!(
                "{SUBJECT_IIN_METADATA} names {} persons, at most {MAX_SUBJECTS} are allowed",
                iins.len()
            ));
        }
        Ok(Subjects { iins })
    }

    /// Whether `iin` is a subject of the call.
    pub fn contains(&self, iin: &Iin) -> bool {
        self.iins.contains(iin.as_str())
    }

    /// `Ok` when `iin` (taken from request field `field`) is a subject, else `PERMISSION_DENIED` /
    /// `SUBJECT_MISMATCH` naming the field.
    pub fn require(&self, field: &str, iin: &Iin) -> Result<(), ApiError> {
        if self.contains(iin) {
            return Ok(());
        }
        Err(ApiError::permission_denied(
            REASON_SUBJECT_MISMATCH,
            format!("{field} is not a subject named in {SUBJECT_IIN_METADATA}"),
        )
        .with_metadata("field", field))
    }

    /// Every subject IIN, sorted.
    pub fn iins(&self) -> impl Iterator<Item = &str> {
        self.iins.iter().map(String::as_str)
    }
}

/// Validates the IINs of a batch request field: 1 to [`MAX_SUBJECTS`] values, each a valid IIN.
/// Every bad value is reported (`iins[3]`); duplicates are dropped keeping the first occurrence.
pub fn parse_iin_list(field: &str, values: &[String]) -> Result<Vec<Iin>, ApiError> {
    if values.is_empty() {
        return Err(ApiError::invalid_field(field, "must name at least one iin"));
    }
    if values.len() > MAX_SUBJECTS {
        return Err(ApiError::invalid_field(
            field,
            format!(
                "names {} iins, at most {MAX_SUBJECTS} are allowed per call",
                values.len()
            ),
        ));
    }
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    let mut iins = Vec::with_capacity(values.len());
    for (index, value) in values.iter().enumerate() {
        let item_field = format!("{field}[{index}]");
        match parse_iin_field(&item_field, value) {
            Ok(iin) => {
                if seen.insert(iin.as_str().to_string()) {
                    iins.push(iin);
                }
            }
            Err(error) => violations.extend(error.field_violations().iter().cloned()),
        }
    }
    if !violations.is_empty() {
        return Err(ApiError::invalid_fields(violations));
    }
    Ok(iins)
}

/// Names the persons whose data `response` carries (see [`crate::envelope::RESPONSE_SUBJECTS`]),
/// so the gateway writes their subject-access rows: services whose answers are about people other
/// than the envelope's subject (a head listing applications, an inbox of messages) declare them.
/// Duplicates are dropped; an empty list declares nothing.
pub fn declare_response_subjects<'a, T>(
    mut response: tonic::Response<T>,
    iins: impl IntoIterator<Item = &'a str>,
) -> tonic::Response<T> {
    let unique: BTreeSet<&str> = iins.into_iter().filter(|iin| !iin.is_empty()).collect();
    if unique.is_empty() {
        return response;
    }
    let joined = unique.into_iter().collect::<Vec<_>>().join(",");
    if let Ok(value) = tonic::metadata::MetadataValue::try_from(joined.as_str()) {
        response
            .metadata_mut()
            .insert(crate::envelope::RESPONSE_SUBJECTS, value);
    }
    response
}

/// Checks that every IIN is a subject of the call, naming the first one that is not.
pub fn require_all(subjects: &Subjects, field: &str, iins: &[Iin]) -> Result<(), ApiError> {
    for (index, iin) in iins.iter().enumerate() {
        subjects.require(&format!("{field}[{index}]"), iin)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::summarize_status;

    const FIRST: &str = "900101300017";

    fn metadata_with(value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(SUBJECT_IIN_METADATA, value.parse().expect("ascii"));
        metadata
    }

    #[test]
    fn declared_response_subjects_are_unique_and_sorted() {
        let response = declare_response_subjects(
            tonic::Response::new(()),
            ["900101300017", "", "850315400025", "900101300017"],
        );
        let value = response
            .metadata()
            .get(crate::envelope::RESPONSE_SUBJECTS)
            .and_then(|value| value.to_str().ok());
        assert_eq!(value, Some("850315400025,900101300017"));
        let nobody = declare_response_subjects(tonic::Response::new(()), []);
        assert!(nobody.metadata().is_empty());
    }

    #[test]
    fn a_request_about_the_named_subject_passes() {
        let subjects = Subjects::from_metadata(&metadata_with(FIRST)).expect("subjects");
        let iin = Iin::parse(FIRST).expect("iin");
        assert!(subjects.require("iin", &iin).is_ok());
    }

    #[test]
    fn a_request_about_someone_else_is_subject_mismatch() {
        let other = Iin::from_parts(
            time::macros::date!(1985 - 03 - 04),
            crate::iin::Sex::Female,
            7,
        )
        .expect("iin");
        let subjects = Subjects::from_metadata(&metadata_with(FIRST)).expect("subjects");
        let status: tonic::Status = subjects
            .require("iin", &other)
            .expect_err("mismatch")
            .into();
        let summary = summarize_status(&status);
        assert_eq!(summary.code, tonic::Code::PermissionDenied);
        assert_eq!(summary.reason, REASON_SUBJECT_MISMATCH);
    }

    #[test]
    fn a_missing_header_is_subject_mismatch() {
        let error = Subjects::from_metadata(&MetadataMap::new()).expect_err("missing");
        assert_eq!(error.reason(), REASON_SUBJECT_MISMATCH);
    }

    #[test]
    fn a_comma_separated_header_names_several_subjects() {
        let other = Iin::from_parts(
            time::macros::date!(1985 - 03 - 04),
            crate::iin::Sex::Male,
            9,
        )
        .expect("iin");
        let subjects =
            Subjects::from_metadata(&metadata_with(&format!("{FIRST}, {}", other.as_str())))
                .expect("subjects");
        assert!(subjects.contains(&other));
        assert_eq!(subjects.iins().count(), 2);
    }

    #[test]
    fn batch_lists_name_each_bad_item_and_refuse_over_500() {
        let error = parse_iin_list(
            "iins",
            &[
                FIRST.to_string(),
                "12345".to_string(),
                "90010130001x".to_string(),
            ],
        )
        .expect_err("bad items");
        let fields: Vec<String> = error
            .field_violations()
            .iter()
            .map(|violation| violation.field.clone())
            .collect();
        assert_eq!(fields, vec!["iins[1]".to_string(), "iins[2]".to_string()]);

        let too_many = vec![FIRST.to_string(); MAX_SUBJECTS + 1];
        let error = parse_iin_list("iins", &too_many).expect_err("too many");
        assert_eq!(error.field_violations()[0].field, "iins");
        assert!(parse_iin_list("iins", &[]).is_err());
    }
}
