//! The personal file (личное дело): look-ups in the state registries behind [`RegistryLookups`],
//! the eligibility rules of Art. 38 p.1 that registry data can decide, and the minimal data set
//! the medical commission receives (seed 000 step 10).

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use shlyuz_proto::intake::v1 as pb;
use shlyuz_proto::registry::v1 as registry;
use time::Date;

/// Purpose code of every registry look-up intake makes.
pub const PURPOSE: &str = "MILITARY_RECRUITMENT";

/// Source names, as `dossier_missing_sources` reports them.
pub const SOURCE_PERSON: &str = "person";
/// Civil registry (АХАЖ): family.
pub const SOURCE_CIVIL: &str = "civil";
/// The four dispensaries (tuberculosis, skin-venereal, psychiatric, narcological).
pub const SOURCE_DISPENSARIES: &str = "dispensaries";
/// Criminal records.
pub const SOURCE_CRIMINAL: &str = "criminal";
/// Military register.
pub const SOURCE_MILITARY: &str = "military";

/// Who asks and on what grounds: the candidate is the subject, with their consent.
#[derive(Debug, Clone)]
pub struct LookupContext {
    /// The candidate's IIN (subject of every look-up).
    pub candidate_iin: String,
    /// The candidate's consent for MILITARY_RECRUITMENT.
    pub consent_id: String,
    /// The official on whose behalf intake asks (envelope user id).
    pub user_id: String,
}

/// What each registry answered: `Ok(None)` means the registry holds nothing about the candidate,
/// `Err` that it could not be asked (the dossier is then incomplete).
#[derive(Debug, Clone)]
pub struct RegistryAnswers {
    /// ГБД ФЛ.
    pub person: Result<Option<registry::Person>, String>,
    /// АХАЖ.
    pub family: Result<Option<registry::Family>, String>,
    /// The dispensaries.
    pub dispensaries: Result<Vec<registry::DispensaryRecord>, String>,
    /// Criminal records.
    pub criminal: Result<Option<registry::CriminalRecord>, String>,
    /// Military register.
    pub military: Result<Option<registry::MilitaryRegistration>, String>,
}

/// Where the personal file's data comes from; the production implementation calls the registry
/// services through the gateway (`crate::gateway::GatewayRegistryLookups`).
pub trait RegistryLookups: Send + Sync {
    /// Asks every registry about the candidate, in parallel.
    fn collect<'a>(&'a self, context: &'a LookupContext) -> BoxFuture<'a, RegistryAnswers>;
}

/// Person data as the file keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonData {
    /// Full name.
    pub full_name: String,
    /// ISO date.
    pub birth_date: String,
    /// ISO 3166 alpha-2.
    pub citizenship: String,
    /// Registry life status code.
    pub life_status: i32,
    /// Registry legal capacity code.
    pub legal_capacity: i32,
    /// Registered address, one line.
    pub registered_address: String,
    /// Region of the registered address, KATO.
    pub region_kato: String,
    /// Identity document number.
    pub identity_document_number: String,
}

/// One dispensary registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispensaryData {
    /// Registry dispensary code (1 TB, 2 skin-venereal, 3 psychiatric, 4 narcological).
    pub dispensary: i32,
    /// ICD-10 code.
    pub diagnosis_code: String,
    /// ISO date.
    pub registered_on: String,
    /// ISO date; empty while registered.
    pub deregistered_on: String,
}

/// Criminal record summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriminalData {
    /// Articles of the convictions not expunged.
    pub unexpunged_articles: Vec<String>,
    /// Currently imprisoned.
    pub currently_imprisoned: bool,
    /// An active conviction.
    pub has_active_conviction: bool,
}

/// The personal file, stored as JSON on the application.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dossier {
    /// ГБД ФЛ; `None` when not found or not obtained.
    pub person: Option<PersonData>,
    /// Close relatives' IINs from АХАЖ (for the special check).
    pub relatives: Vec<String>,
    /// Dispensary registrations.
    pub dispensaries: Vec<DispensaryData>,
    /// Criminal record.
    pub criminal: Option<CriminalData>,
    /// Military register status code; 0 when unknown.
    pub military_status: i32,
    /// Sources that did not answer.
    pub missing_sources: Vec<String>,
}

impl Dossier {
    /// The file built from the registries' answers.
    pub fn from_answers(answers: RegistryAnswers) -> Dossier {
        let mut dossier = Dossier::default();
        let mut missing = |source: &str, error: &str| {
            tracing::warn!(source, error, "dossier source failed");
            dossier.missing_sources.push(source.to_string());
        };
        match answers.person {
            Ok(person) => {
                dossier.person = person.map(|person| {
                    let address = person.registered_address.unwrap_or_default();
                    PersonData {
                        full_name: [person.last_name, person.first_name, person.patronymic]
                            .into_iter()
                            .filter(|part| !part.is_empty())
                            .collect::<Vec<_>>()
                            .join(" "),
                        birth_date: person.birth_date,
                        citizenship: person.citizenship,
                        life_status: person.life_status,
                        legal_capacity: person.legal_capacity,
                        registered_address: [
                            address.region_name.as_str(),
                            address.locality_name.as_str(),
                            address.street_address.as_str(),
                        ]
                        .into_iter()
                        .filter(|part| !part.is_empty())
                        .collect::<Vec<_>>()
                        .join(", "),
                        region_kato: address.region_kato,
                        identity_document_number: person.identity_document_number,
                    }
                })
            }
            Err(error) => missing(SOURCE_PERSON, &error),
        }
        let mut relatives = Vec::new();
        match answers.family {
            Ok(family) => {
                if let Some(family) = family {
                    relatives.extend([family.mother_iin, family.father_iin]);
                    relatives.extend(
                        family
                            .marriages
                            .into_iter()
                            .filter(|marriage| marriage.dissolved_on.is_empty())
                            .map(|marriage| marriage.spouse_iin),
                    );
                    relatives.extend(family.children.into_iter().map(|child| child.iin));
                }
            }
            Err(error) => missing(SOURCE_CIVIL, &error),
        }
        match answers.dispensaries {
            Ok(records) => {
                dossier.dispensaries = records
                    .into_iter()
                    .map(|record| DispensaryData {
                        dispensary: record.dispensary,
                        diagnosis_code: record.diagnosis_code,
                        registered_on: record.registered_on,
                        deregistered_on: record.deregistered_on,
                    })
                    .collect();
            }
            Err(error) => missing(SOURCE_DISPENSARIES, &error),
        }
        match answers.criminal {
            Ok(record) => {
                dossier.criminal = Some(record.map_or_else(CriminalData::default, |record| {
                    CriminalData {
                        unexpunged_articles: record
                            .convictions
                            .into_iter()
                            .filter(|conviction| !conviction.expunged)
                            .map(|conviction| conviction.article)
                            .collect(),
                        currently_imprisoned: record.currently_imprisoned,
                        has_active_conviction: record.has_active_conviction,
                    }
                }))
            }
            Err(error) => missing(SOURCE_CRIMINAL, &error),
        }
        match answers.military {
            Ok(registration) => {
                dossier.military_status = registration.map_or(
                    registry::RegistrationStatus::NotRegistered as i32,
                    |registration| registration.status,
                )
            }
            Err(error) => missing(SOURCE_MILITARY, &error),
        }
        relatives.retain(|iin| !iin.is_empty());
        dossier.relatives = relatives;
        dossier
    }

    /// Complete when every registry answered.
    pub fn is_complete(&self) -> bool {
        self.missing_sources.is_empty()
    }

    /// The region of the registered address, KATO; empty when unknown.
    pub fn region_kato(&self) -> &str {
        self.person
            .as_ref()
            .map_or("", |person| person.region_kato.as_str())
    }

    /// The minimal data set for the medical commission, and nothing else.
    pub fn medical_data(&self) -> pb::MedicalDataSet {
        let person = self.person.clone().unwrap_or_default();
        let entries = |kind: registry::Dispensary| {
            self.dispensaries
                .iter()
                .filter(|record| record.dispensary == kind as i32)
                .map(|record| pb::DispensaryEntry {
                    diagnosis_code: record.diagnosis_code.clone(),
                    registered_on: record.registered_on.clone(),
                    deregistered_on: record.deregistered_on.clone(),
                })
                .collect()
        };
        pb::MedicalDataSet {
            full_name: person.full_name,
            birth_date: person.birth_date,
            registered_address: person.registered_address,
            identity_document_number: person.identity_document_number,
            tuberculosis: entries(registry::Dispensary::Tuberculosis),
            skin_venereal: entries(registry::Dispensary::SkinVenereal),
            psychiatric: entries(registry::Dispensary::Psychiatric),
            narcological: entries(registry::Dispensary::Narcological),
        }
    }
}

/// Minimum age for contract service.
pub const MINIMUM_AGE: i32 = 18;

/// Why a complete file makes the candidate ineligible (internal; never shown to the candidate),
/// or `None` when every rule registry data can decide passes.
pub fn ineligibility(dossier: &Dossier, today: Date) -> Option<String> {
    let Some(person) = dossier.person.as_ref() else {
        return Some("ГБД ФЛ: лицо не найдено".to_string());
    };
    if person.citizenship != "KZ" {
        return Some(format!(
            "ст. 38 п. 1: не гражданин Республики Казахстан ({})",
            person.citizenship
        ));
    }
    if person.life_status != registry::LifeStatus::Alive as i32 {
        return Some("ГБД ФЛ: лицо не значится живым".to_string());
    }
    if person.legal_capacity != registry::LegalCapacity::Full as i32 {
        return Some("ст. 38 п. 1: ограниченная дееспособность или недееспособность".to_string());
    }
    match age_on(&person.birth_date, today) {
        Some(age) if age >= MINIMUM_AGE => {}
        Some(age) => return Some(format!("ст. 38 п. 1: возраст {age} лет, менее 18")),
        None => return Some("ГБД ФЛ: дата рождения не распознана".to_string()),
    }
    for (kind, name) in [
        (registry::Dispensary::Narcological, "наркологическом"),
        (registry::Dispensary::Psychiatric, "психиатрическом"),
    ] {
        if let Some(record) = dossier
            .dispensaries
            .iter()
            .find(|record| record.dispensary == kind as i32 && record.deregistered_on.is_empty())
        {
            return Some(format!(
                "состоит на учёте в {name} диспансере ({}, с {})",
                record.diagnosis_code, record.registered_on
            ));
        }
    }
    if let Some(criminal) = dossier.criminal.as_ref()
        && (criminal.currently_imprisoned
            || criminal.has_active_conviction
            || !criminal.unexpunged_articles.is_empty())
    {
        return Some(format!(
            "имеет непогашенную судимость (ст. {})",
            criminal.unexpunged_articles.join(", ")
        ));
    }
    None
}

/// Full years between an ISO `birth_date` and `today`.
pub fn age_on(birth_date: &str, today: Date) -> Option<i32> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let birth = Date::parse(birth_date, &format).ok()?;
    let mut age = today.year() - birth.year();
    if (today.month() as u8, today.day()) < (birth.month() as u8, birth.day()) {
        age -= 1;
    }
    Some(age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn person(birth_date: &str) -> registry::Person {
        registry::Person {
            iin: "980512391010".into(),
            last_name: "Қасымов".into(),
            first_name: "Ерлан".into(),
            birth_date: birth_date.into(),
            citizenship: "KZ".into(),
            life_status: registry::LifeStatus::Alive as i32,
            legal_capacity: registry::LegalCapacity::Full as i32,
            registered_address: Some(registry::Address {
                region_kato: "110000000".into(),
                region_name: "Ақмола облысы".into(),
                ..Default::default()
            }),
            identity_document_number: "051239101".into(),
            ..Default::default()
        }
    }

    fn answers(person: registry::Person) -> RegistryAnswers {
        RegistryAnswers {
            person: Ok(Some(person)),
            family: Ok(None),
            dispensaries: Ok(Vec::new()),
            criminal: Ok(None),
            military: Ok(None),
        }
    }

    #[test]
    fn seventeen_year_olds_are_not_eligible_until_their_birthday() {
        let dossier = Dossier::from_answers(answers(person("2008-06-01")));
        assert!(ineligibility(&dossier, date!(2026 - 05 - 31)).is_some());
        assert_eq!(ineligibility(&dossier, date!(2026 - 06 - 01)), None);
    }

    #[test]
    fn a_person_the_registry_does_not_know_is_not_eligible() {
        let mut answers = answers(person("1998-05-12"));
        answers.person = Ok(None);
        let dossier = Dossier::from_answers(answers);
        assert!(dossier.is_complete(), "{:?}", dossier.missing_sources);
        assert!(
            ineligibility(&dossier, date!(2026 - 11 - 25))
                .is_some_and(|reason| reason.contains("не найдено")),
            "{dossier:?}"
        );
    }

    #[test]
    fn a_failing_registry_makes_the_dossier_incomplete() {
        let mut answers = answers(person("1998-05-12"));
        answers.criminal = Err("unavailable".into());
        let dossier = Dossier::from_answers(answers);
        assert!(!dossier.is_complete());
        assert_eq!(dossier.missing_sources, vec![SOURCE_CRIMINAL.to_string()]);
    }

    #[test]
    fn the_medical_set_holds_no_criminal_data() {
        let mut answers = answers(person("1998-05-12"));
        answers.criminal = Ok(Some(registry::CriminalRecord {
            convictions: vec![registry::Conviction {
                article: "188 ч.2".into(),
                ..Default::default()
            }],
            ..Default::default()
        }));
        let dossier = Dossier::from_answers(answers);
        let encoded = format!("{:?}", dossier.medical_data());
        assert!(!encoded.contains("188"));
        assert!(ineligibility(&dossier, date!(2026 - 01 - 01)).is_some());
    }
}
