//! The gRPC services over a [`RegistrySource`]: input validation, the subject check, the
//! "unknown person" rule, pagination, and the mapping of records to the wire messages.

mod convert;
mod services;

use std::collections::HashMap;
use std::sync::Arc;

use shlyuz_kit::error::{ApiError, parse_iin_field};
use shlyuz_kit::iin::Iin;
use shlyuz_kit::paging::{decode_page_token, encode_page_token, page_size};
use shlyuz_kit::subject::{Subjects, parse_iin_list, require_all};
use shlyuz_proto::registry::v1 as pb;

use crate::records::TableRow;
use crate::source::RegistrySource;

/// `ErrorInfo` reason of a single-person look-up about an IIN the registry does not know.
pub const REASON_PERSON_NOT_FOUND: &str = crate::reasons::PERSON_NOT_FOUND;

/// `ErrorInfo` reason of a phone look-up for a known person without a phone.
pub const REASON_PHONE_NOT_FOUND: &str = crate::reasons::PHONE_NOT_FOUND;

/// Every data registry service (not consent or the certificate authority) over one source.
#[derive(Clone)]
pub struct RegistryServices {
    source: Arc<dyn RegistrySource>,
}

impl RegistryServices {
    /// The services over `source`.
    pub fn new(source: Arc<dyn RegistrySource>) -> Self {
        Self { source }
    }

    /// The tonic routes of the nine data registry services.
    pub fn routes(self) -> tonic::service::Routes {
        tonic::service::Routes::new(
            pb::person_registry_service_server::PersonRegistryServiceServer::new(self.clone()),
        )
        .add_service(
            pb::civil_registry_service_server::CivilRegistryServiceServer::new(self.clone()),
        )
        .add_service(
            pb::real_estate_cadastre_service_server::RealEstateCadastreServiceServer::new(
                self.clone(),
            ),
        )
        .add_service(
            pb::state_property_registry_service_server::StatePropertyRegistryServiceServer::new(
                self.clone(),
            ),
        )
        .add_service(
            pb::equity_registry_service_server::EquityRegistryServiceServer::new(self.clone()),
        )
        .add_service(
            pb::military_register_service_server::MilitaryRegisterServiceServer::new(self.clone()),
        )
        .add_service(
            pb::medical_registry_service_server::MedicalRegistryServiceServer::new(self.clone()),
        )
        .add_service(
            pb::criminal_records_service_server::CriminalRecordsServiceServer::new(self.clone()),
        )
        .add_service(pb::mobile_citizens_service_server::MobileCitizensServiceServer::new(self))
    }

    pub(crate) fn source(&self) -> &dyn RegistrySource {
        self.source.as_ref()
    }
}

/// Validates the IIN of a single-person request and checks it is the envelope's subject.
pub(crate) fn subject_iin<T>(request: &tonic::Request<T>, value: &str) -> Result<Iin, ApiError> {
    let iin = parse_iin_field("iin", value)?;
    let subjects = Subjects::from_metadata(request.metadata())?;
    subjects.require("iin", &iin)?;
    Ok(iin)
}

/// Validates the IINs of a batch request and checks each is a subject of the envelope.
pub(crate) fn subject_iins<T>(
    request: &tonic::Request<T>,
    values: &[String],
) -> Result<Vec<Iin>, ApiError> {
    let iins = parse_iin_list("iins", values)?;
    let subjects = Subjects::from_metadata(request.metadata())?;
    require_all(&subjects, "iins", &iins)?;
    Ok(iins)
}

/// The records of each requested IIN, in request order (IINs without records get an empty list).
pub(crate) fn group_by_iin<T: TableRow>(iins: &[Iin], records: Vec<T>) -> Vec<(String, Vec<T>)> {
    let mut by_iin: HashMap<String, Vec<T>> = HashMap::new();
    for record in records {
        by_iin
            .entry(record.iin().to_string())
            .or_default()
            .push(record);
    }
    iins.iter()
        .map(|iin| {
            let records = by_iin.remove(iin.as_str()).unwrap_or_default();
            (iin.as_str().to_string(), records)
        })
        .collect()
}

/// One page of `records` sorted by `key` (unique per record), AIP-158 style.
pub fn paginate<T>(
    mut records: Vec<T>,
    key: impl Fn(&T) -> String,
    scope: &str,
    requested_size: i32,
    page_token: &str,
) -> Result<(Vec<T>, String), ApiError> {
    let size = page_size(requested_size)?;
    let after = decode_page_token(page_token, scope)?;
    records.sort_by_key(|record| key(record));
    let mut page: Vec<T> = records
        .into_iter()
        .filter(|record| after.as_ref().is_none_or(|last| key(record) > *last))
        .take(size + 1)
        .collect();
    let next_page_token = if page.len() > size {
        page.truncate(size);
        page.last()
            .map(|record| encode_page_token(scope, &key(record)))
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok((page, next_page_token))
}

/// `NOT_FOUND` / `PERSON_NOT_FOUND` for a single-person look-up.
pub fn person_not_found(iin: &Iin) -> ApiError {
    ApiError::not_found(
        REASON_PERSON_NOT_FOUND,
        "no person with this iin in the registry",
    )
    .with_metadata("iin", iin.as_str())
}
