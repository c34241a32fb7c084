//! The registry services called in-process (no gateway): batch subjects, "unknown" rules,
//! pagination and defaults that the gateway tests do not reach.

use std::sync::Arc;

use crate::embedded::EmbeddedRegistry;
use crate::fixtures::{self, rules};
use crate::grpc::RegistryServices;
use shlyuz_kit::db::testing::TestDatabase;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::subject::SUBJECT_IIN_METADATA;
use shlyuz_proto::registry::v1 as pb;
use shlyuz_proto::registry::v1::civil_registry_service_server::CivilRegistryService;
use shlyuz_proto::registry::v1::criminal_records_service_server::CriminalRecordsService;
use shlyuz_proto::registry::v1::military_register_service_server::MilitaryRegisterService;
use shlyuz_proto::registry::v1::mobile_citizens_service_server::MobileCitizensService;
use shlyuz_proto::registry::v1::person_registry_service_server::PersonRegistryService;
use shlyuz_proto::registry::v1::real_estate_cadastre_service_server::RealEstateCadastreService;
use tonic::Code;

async fn services() -> (RegistryServices, TestDatabase) {
    let test_database = TestDatabase::sqlite().await;
    let database = test_database.database().clone();
    database.migrate(&crate::MIGRATIONS).await.expect("migrate");
    let registry = EmbeddedRegistry::new(database);
    let population = fixtures::parse(fixtures::RULES_FIXTURE).expect("fixture");
    fixtures::load(&registry, &population).await.expect("load");
    (RegistryServices::new(Arc::new(registry)), test_database)
}

fn about<M>(subjects: &str, message: M) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(SUBJECT_IIN_METADATA, subjects.parse().expect("ascii"));
    request
}

#[tokio::test]
async fn a_batch_answers_in_request_order_for_every_named_subject() {
    let (services, database) = services().await;
    let unknown = "850101399906";
    let header = format!(
        "{},{unknown},{}",
        rules::SERVICEMAN_CLEAN,
        rules::SERVICEMAN_CLEAN_SPOUSE
    );
    let response = services
        .batch_get_persons(about(
            &header,
            pb::BatchGetPersonsRequest {
                iins: vec![
                    rules::SERVICEMAN_CLEAN_SPOUSE.to_string(),
                    unknown.to_string(),
                    rules::SERVICEMAN_CLEAN.to_string(),
                    rules::SERVICEMAN_CLEAN_SPOUSE.to_string(),
                ],
            },
        ))
        .await
        .expect("batch")
        .into_inner();
    let found: Vec<&str> = response.persons.iter().map(|p| p.iin.as_str()).collect();
    assert_eq!(
        found,
        vec![rules::SERVICEMAN_CLEAN_SPOUSE, rules::SERVICEMAN_CLEAN],
        "request order, duplicates once"
    );
    assert_eq!(response.not_found_iins, vec![unknown.to_string()]);

    // One IIN outside the header refuses the whole batch.
    let status = services
        .batch_get_persons(about(
            rules::SERVICEMAN_CLEAN,
            pb::BatchGetPersonsRequest {
                iins: vec![
                    rules::SERVICEMAN_CLEAN.to_string(),
                    rules::SERVICEMAN_CLEAN_SPOUSE.to_string(),
                ],
            },
        ))
        .await
        .expect_err("second iin not a subject");
    assert_eq!(summarize_status(&status).reason, "SUBJECT_MISMATCH");

    let status = services
        .batch_get_persons(about(
            rules::SERVICEMAN_CLEAN,
            pb::BatchGetPersonsRequest { iins: vec![] },
        ))
        .await
        .expect_err("empty batch");
    assert_eq!(summarize_status(&status).fields, vec!["iins".to_string()]);
    database.cleanup().await;
}

#[tokio::test]
async fn family_criminal_and_military_answers_for_fixture_people() {
    let (services, database) = services().await;
    let father = rules::SERVICEMAN_CHILD_IMPRISONED;
    let son = rules::SERVICEMAN_CHILD_IMPRISONED_CHILD;
    let family = services
        .get_family(about(
            father,
            pb::GetFamilyRequest {
                iin: father.to_string(),
            },
        ))
        .await
        .expect("family")
        .into_inner()
        .family
        .expect("family");
    assert!(!family.married);
    assert_eq!(family.children[0].iin, son);

    let record = services
        .get_criminal_record(about(
            son,
            pb::GetCriminalRecordRequest {
                iin: son.to_string(),
            },
        ))
        .await
        .expect("record")
        .into_inner()
        .record
        .expect("record");
    assert!(record.currently_imprisoned);
    assert!(record.has_active_conviction);

    let clean = services
        .get_criminal_record(about(
            father,
            pb::GetCriminalRecordRequest {
                iin: father.to_string(),
            },
        ))
        .await
        .expect("record")
        .into_inner()
        .record
        .expect("record");
    assert!(clean.convictions.is_empty() && !clean.currently_imprisoned);

    // A known person never put on the military register is NOT_REGISTERED, not NOT_FOUND.
    let woman = rules::NO_PHONE_PERSON;
    let registration = services
        .get_military_registration(about(
            woman,
            pb::GetMilitaryRegistrationRequest {
                iin: woman.to_string(),
            },
        ))
        .await
        .expect("registration")
        .into_inner()
        .registration
        .expect("registration");
    assert_eq!(
        registration.status,
        pb::RegistrationStatus::NotRegistered as i32
    );
    database.cleanup().await;
}

#[tokio::test]
async fn a_known_person_without_a_phone_is_phone_not_found() {
    let (services, database) = services().await;
    let status = services
        .get_phone(about(
            rules::NO_PHONE_PERSON,
            pb::GetPhoneRequest {
                iin: rules::NO_PHONE_PERSON.to_string(),
            },
        ))
        .await
        .expect_err("no phone");
    let summary = summarize_status(&status);
    assert_eq!(summary.code, Code::NotFound);
    assert_eq!(summary.reason, "PHONE_NOT_FOUND");
    database.cleanup().await;
}

#[tokio::test]
async fn service_record_pages_and_locality_is_validated() {
    let (services, database) = services().await;
    let officer = rules::SERVICEMAN_EARLIER_HOUSING;
    let first = services
        .list_service_record(about(
            officer,
            pb::ListServiceRecordRequest {
                iin: officer.to_string(),
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .expect("first page")
        .into_inner();
    assert_eq!(first.periods.len(), 1);
    assert_eq!(first.periods[0].locality_kato, "471010000", "oldest first");
    assert!(!first.next_page_token.is_empty());
    let second = services
        .list_service_record(about(
            officer,
            pb::ListServiceRecordRequest {
                iin: officer.to_string(),
                page_size: 1,
                page_token: first.next_page_token,
            },
        ))
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.periods.len(), 1);
    assert!(
        second.periods[0].ended_on.is_empty(),
        "current duty station last"
    );
    assert!(second.next_page_token.is_empty());

    let status = services
        .list_real_estate_rights(about(
            officer,
            pb::ListRealEstateRightsRequest {
                iin: officer.to_string(),
                locality_kato: "Astana".to_string(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("bad locality");
    assert_eq!(
        summarize_status(&status).fields,
        vec!["locality_kato".to_string()]
    );
    database.cleanup().await;
}
