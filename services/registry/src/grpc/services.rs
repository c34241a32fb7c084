//! The nine data registry services.

use std::collections::HashMap;

use shlyuz_kit::error::ApiError;
use shlyuz_kit::iin::Iin;
use shlyuz_proto::registry::v1 as pb;
use tonic::{Request, Response, Status};

use super::convert;
use super::{
    REASON_PHONE_NOT_FOUND, RegistryServices, group_by_iin, paginate, person_not_found,
    subject_iin, subject_iins,
};
use crate::records::{PersonRecord, kinds};
use crate::source::RecordLookup as _;

/// Life status of a dead person, as stored.
const LIFE_STATUS_DEAD: i64 = 2;

/// Persons by IIN, for the "is this person known" checks.
fn persons_by_iin(records: Vec<PersonRecord>) -> HashMap<String, PersonRecord> {
    records
        .into_iter()
        .map(|person| (person.iin.clone(), person))
        .collect()
}

fn validate_locality(locality_kato: &str) -> Result<(), ApiError> {
    if locality_kato.is_empty()
        || (locality_kato.len() == 9 && locality_kato.bytes().all(|byte| byte.is_ascii_digit()))
    {
        return Ok(());
    }
    Err(ApiError::invalid_field(
        "locality_kato",
        "must be a 9-digit KATO code or empty",
    ))
}

impl RegistryServices {
    async fn require_known(&self, iin: &Iin) -> Result<PersonRecord, ApiError> {
        let persons = self
            .source()
            .records(&kinds::PERSONS, std::slice::from_ref(iin))
            .await?;
        persons
            .into_iter()
            .find(|person| person.iin == iin.as_str())
            .ok_or_else(|| person_not_found(iin))
    }

    async fn families(&self, iins: &[Iin]) -> Result<(Vec<pb::Family>, Vec<String>), ApiError> {
        let mut persons = persons_by_iin(self.source().records(&kinds::PERSONS, iins).await?);
        let marriages = self.source().records(&kinds::MARRIAGES, iins).await?;
        let children = self.source().records(&kinds::CHILDREN, iins).await?;
        let mut families = Vec::new();
        let mut not_found_iins = Vec::new();
        for iin in iins {
            let Some(person) = persons.remove(iin.as_str()) else {
                not_found_iins.push(iin.as_str().to_string());
                continue;
            };
            let mut own_marriages: Vec<pb::Marriage> = marriages
                .iter()
                .filter(|marriage| {
                    marriage.husband_iin == person.iin || marriage.wife_iin == person.iin
                })
                .map(|marriage| convert::marriage(marriage, &person.iin))
                .collect();
            own_marriages.sort_by(|left, right| left.registered_on.cmp(&right.registered_on));
            let married = own_marriages
                .iter()
                .any(|marriage| marriage.dissolved_on.is_empty());
            let own_children = children
                .iter()
                .filter(|child| child.mother_iin == person.iin || child.father_iin == person.iin)
                .map(convert::birth_record)
                .collect();
            let death_date = if person.life_status == LIFE_STATUS_DEAD {
                person.status_date.clone()
            } else {
                String::new()
            };
            families.push(pb::Family {
                iin: person.iin,
                married,
                marriages: own_marriages,
                children: own_children,
                mother_iin: person.mother_iin,
                father_iin: person.father_iin,
                death_date,
            });
        }
        Ok((families, not_found_iins))
    }
}

#[tonic::async_trait]
impl pb::person_registry_service_server::PersonRegistryService for RegistryServices {
    async fn get_person(
        &self,
        request: Request<pb::GetPersonRequest>,
    ) -> Result<Response<pb::GetPersonResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let person = self.require_known(&iin).await?;
        Ok(Response::new(pb::GetPersonResponse {
            person: Some(convert::person(person)),
        }))
    }

    async fn batch_get_persons(
        &self,
        request: Request<pb::BatchGetPersonsRequest>,
    ) -> Result<Response<pb::BatchGetPersonsResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let mut found = persons_by_iin(
            self.source()
                .records(&kinds::PERSONS, &iins)
                .await
                .map_err(ApiError::from)?,
        );
        let mut response = pb::BatchGetPersonsResponse::default();
        for iin in &iins {
            match found.remove(iin.as_str()) {
                Some(person) => response.persons.push(convert::person(person)),
                None => response.not_found_iins.push(iin.as_str().to_string()),
            }
        }
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl pb::civil_registry_service_server::CivilRegistryService for RegistryServices {
    async fn get_birth_record(
        &self,
        request: Request<pb::GetBirthRecordRequest>,
    ) -> Result<Response<pb::GetBirthRecordResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let person = self.require_known(&iin).await?;
        Ok(Response::new(pb::GetBirthRecordResponse {
            birth_record: Some(convert::birth_record(&person)),
        }))
    }

    async fn get_family(
        &self,
        request: Request<pb::GetFamilyRequest>,
    ) -> Result<Response<pb::GetFamilyResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let (families, _) = self.families(std::slice::from_ref(&iin)).await?;
        let family = families
            .into_iter()
            .next()
            .ok_or_else(|| person_not_found(&iin))?;
        Ok(Response::new(pb::GetFamilyResponse {
            family: Some(family),
        }))
    }

    async fn batch_get_families(
        &self,
        request: Request<pb::BatchGetFamiliesRequest>,
    ) -> Result<Response<pb::BatchGetFamiliesResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let (families, not_found_iins) = self.families(&iins).await?;
        Ok(Response::new(pb::BatchGetFamiliesResponse {
            families,
            not_found_iins,
        }))
    }
}

#[tonic::async_trait]
impl pb::real_estate_cadastre_service_server::RealEstateCadastreService for RegistryServices {
    async fn list_real_estate_rights(
        &self,
        request: Request<pb::ListRealEstateRightsRequest>,
    ) -> Result<Response<pb::ListRealEstateRightsResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let message = request.get_ref();
        validate_locality(&message.locality_kato)?;
        let records = self
            .source()
            .records(&kinds::REAL_ESTATE_RIGHTS, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .filter(|right| !message.only_in_force || right.terminated_on.is_empty())
            .filter(|right| {
                message.locality_kato.is_empty() || right.locality_kato == message.locality_kato
            })
            .collect();
        let scope = format!(
            "real-estate-rights/{}/{}/{}",
            iin.as_str(),
            message.only_in_force,
            message.locality_kato
        );
        let (page, next_page_token) = paginate(
            records,
            |right| right.right_id.clone(),
            &scope,
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListRealEstateRightsResponse {
            rights: page.into_iter().map(convert::real_estate_right).collect(),
            next_page_token,
        }))
    }

    async fn batch_list_real_estate_rights(
        &self,
        request: Request<pb::BatchListRealEstateRightsRequest>,
    ) -> Result<Response<pb::BatchListRealEstateRightsResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let message = request.get_ref();
        validate_locality(&message.locality_kato)?;
        let records = self
            .source()
            .records(&kinds::REAL_ESTATE_RIGHTS, &iins)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .filter(|right| !message.only_in_force || right.terminated_on.is_empty())
            .filter(|right| {
                message.locality_kato.is_empty() || right.locality_kato == message.locality_kato
            })
            .collect();
        let results = group_by_iin(&iins, records)
            .into_iter()
            .map(|(iin, rights)| pb::PersonRealEstateRights {
                iin,
                rights: rights.into_iter().map(convert::real_estate_right).collect(),
            })
            .collect();
        Ok(Response::new(pb::BatchListRealEstateRightsResponse {
            results,
        }))
    }
}

#[tonic::async_trait]
impl pb::state_property_registry_service_server::StatePropertyRegistryService for RegistryServices {
    async fn list_privatisation_contracts(
        &self,
        request: Request<pb::ListPrivatisationContractsRequest>,
    ) -> Result<Response<pb::ListPrivatisationContractsResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let message = request.get_ref();
        let records = self
            .source()
            .records(&kinds::PRIVATISATION_CONTRACTS, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = paginate(
            records,
            |contract| contract.contract_number.clone(),
            &format!("privatisation-contracts/{}", iin.as_str()),
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListPrivatisationContractsResponse {
            contracts: page
                .into_iter()
                .map(convert::privatisation_contract)
                .collect(),
            next_page_token,
        }))
    }

    async fn batch_list_privatisation_contracts(
        &self,
        request: Request<pb::BatchListPrivatisationContractsRequest>,
    ) -> Result<Response<pb::BatchListPrivatisationContractsResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let records = self
            .source()
            .records(&kinds::PRIVATISATION_CONTRACTS, &iins)
            .await
            .map_err(ApiError::from)?;
        let results = group_by_iin(&iins, records)
            .into_iter()
            .map(|(iin, contracts)| pb::PersonPrivatisationContracts {
                iin,
                contracts: contracts
                    .into_iter()
                    .map(convert::privatisation_contract)
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::BatchListPrivatisationContractsResponse {
            results,
        }))
    }
}

#[tonic::async_trait]
impl pb::equity_registry_service_server::EquityRegistryService for RegistryServices {
    async fn list_equity_contracts(
        &self,
        request: Request<pb::ListEquityContractsRequest>,
    ) -> Result<Response<pb::ListEquityContractsResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let message = request.get_ref();
        let records = self
            .source()
            .records(&kinds::EQUITY_CONTRACTS, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = paginate(
            records,
            |contract| contract.contract_number.clone(),
            &format!("equity-contracts/{}", iin.as_str()),
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListEquityContractsResponse {
            contracts: page.into_iter().map(convert::equity_contract).collect(),
            next_page_token,
        }))
    }

    async fn batch_list_equity_contracts(
        &self,
        request: Request<pb::BatchListEquityContractsRequest>,
    ) -> Result<Response<pb::BatchListEquityContractsResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let records = self
            .source()
            .records(&kinds::EQUITY_CONTRACTS, &iins)
            .await
            .map_err(ApiError::from)?;
        let results = group_by_iin(&iins, records)
            .into_iter()
            .map(|(iin, contracts)| pb::PersonEquityContracts {
                iin,
                contracts: contracts
                    .into_iter()
                    .map(convert::equity_contract)
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::BatchListEquityContractsResponse {
            results,
        }))
    }
}

#[tonic::async_trait]
impl pb::military_register_service_server::MilitaryRegisterService for RegistryServices {
    async fn get_military_registration(
        &self,
        request: Request<pb::GetMilitaryRegistrationRequest>,
    ) -> Result<Response<pb::GetMilitaryRegistrationResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        self.require_known(&iin).await?;
        let registration = self
            .source()
            .records(&kinds::MILITARY_REGISTRATIONS, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .find(|registration| registration.iin == iin.as_str())
            .map(convert::military_registration)
            .unwrap_or_else(|| pb::MilitaryRegistration {
                iin: iin.as_str().to_string(),
                status: pb::RegistrationStatus::NotRegistered as i32,
                ..pb::MilitaryRegistration::default()
            });
        Ok(Response::new(pb::GetMilitaryRegistrationResponse {
            registration: Some(registration),
        }))
    }

    async fn list_service_record(
        &self,
        request: Request<pb::ListServiceRecordRequest>,
    ) -> Result<Response<pb::ListServiceRecordResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let message = request.get_ref();
        let records = self
            .source()
            .records(&kinds::SERVICE_PERIODS, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = paginate(
            records,
            |period| format!("{}/{}", period.started_on, period.period_id),
            &format!("service-record/{}", iin.as_str()),
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListServiceRecordResponse {
            periods: page.into_iter().map(convert::service_period).collect(),
            next_page_token,
        }))
    }

    async fn list_service_housing(
        &self,
        request: Request<pb::ListServiceHousingRequest>,
    ) -> Result<Response<pb::ListServiceHousingResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let message = request.get_ref();
        let records = self
            .source()
            .records(&kinds::SERVICE_HOUSING, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = paginate(
            records,
            |housing| format!("{}/{}", housing.started_on, housing.housing_id),
            &format!("service-housing/{}", iin.as_str()),
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListServiceHousingResponse {
            housing: page.into_iter().map(convert::service_housing).collect(),
            next_page_token,
        }))
    }

    async fn batch_list_service_housing(
        &self,
        request: Request<pb::BatchListServiceHousingRequest>,
    ) -> Result<Response<pb::BatchListServiceHousingResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let records = self
            .source()
            .records(&kinds::SERVICE_HOUSING, &iins)
            .await
            .map_err(ApiError::from)?;
        let results = group_by_iin(&iins, records)
            .into_iter()
            .map(|(iin, housing)| pb::PersonServiceHousing {
                iin,
                housing: housing.into_iter().map(convert::service_housing).collect(),
            })
            .collect();
        Ok(Response::new(pb::BatchListServiceHousingResponse {
            results,
        }))
    }
}

#[tonic::async_trait]
impl pb::medical_registry_service_server::MedicalRegistryService for RegistryServices {
    async fn list_dispensary_records(
        &self,
        request: Request<pb::ListDispensaryRecordsRequest>,
    ) -> Result<Response<pb::ListDispensaryRecordsResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let message = request.get_ref();
        let records = self
            .source()
            .records(&kinds::DISPENSARY_RECORDS, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?;
        let (page, next_page_token) = paginate(
            records,
            |record| record.record_id.clone(),
            &format!("dispensary-records/{}", iin.as_str()),
            message.page_size,
            &message.page_token,
        )?;
        Ok(Response::new(pb::ListDispensaryRecordsResponse {
            records: page.into_iter().map(convert::dispensary_record).collect(),
            next_page_token,
        }))
    }

    async fn batch_list_dispensary_records(
        &self,
        request: Request<pb::BatchListDispensaryRecordsRequest>,
    ) -> Result<Response<pb::BatchListDispensaryRecordsResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let records = self
            .source()
            .records(&kinds::DISPENSARY_RECORDS, &iins)
            .await
            .map_err(ApiError::from)?;
        let results = group_by_iin(&iins, records)
            .into_iter()
            .map(|(iin, records)| pb::PersonDispensaryRecords {
                iin,
                records: records
                    .into_iter()
                    .map(convert::dispensary_record)
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::BatchListDispensaryRecordsResponse {
            results,
        }))
    }
}

impl RegistryServices {
    async fn criminal_records(
        &self,
        iins: &[Iin],
    ) -> Result<(Vec<pb::CriminalRecord>, Vec<String>), ApiError> {
        let mut persons = persons_by_iin(self.source().records(&kinds::PERSONS, iins).await?);
        let convictions = group_by_iin(
            iins,
            self.source().records(&kinds::CONVICTIONS, iins).await?,
        );
        let imprisonments = group_by_iin(
            iins,
            self.source().records(&kinds::IMPRISONMENTS, iins).await?,
        );
        let mut records = Vec::new();
        let mut not_found_iins = Vec::new();
        for ((iin, mut convictions), (_, mut imprisonments)) in
            convictions.into_iter().zip(imprisonments)
        {
            if persons.remove(&iin).is_none() {
                not_found_iins.push(iin);
                continue;
            }
            convictions.sort_by(|left, right| left.convicted_on.cmp(&right.convicted_on));
            imprisonments.sort_by(|left, right| left.started_on.cmp(&right.started_on));
            let currently_imprisoned = imprisonments.iter().any(|stay| stay.released_on.is_empty());
            let has_active_conviction = convictions
                .iter()
                .any(|conviction| conviction.expunged == 0);
            records.push(pb::CriminalRecord {
                iin,
                convictions: convictions.into_iter().map(convert::conviction).collect(),
                imprisonments: imprisonments
                    .into_iter()
                    .map(convert::imprisonment)
                    .collect(),
                currently_imprisoned,
                has_active_conviction,
            });
        }
        Ok((records, not_found_iins))
    }
}

#[tonic::async_trait]
impl pb::criminal_records_service_server::CriminalRecordsService for RegistryServices {
    async fn get_criminal_record(
        &self,
        request: Request<pb::GetCriminalRecordRequest>,
    ) -> Result<Response<pb::GetCriminalRecordResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let (records, _) = self.criminal_records(std::slice::from_ref(&iin)).await?;
        let record = records
            .into_iter()
            .next()
            .ok_or_else(|| person_not_found(&iin))?;
        Ok(Response::new(pb::GetCriminalRecordResponse {
            record: Some(record),
        }))
    }

    async fn batch_get_criminal_records(
        &self,
        request: Request<pb::BatchGetCriminalRecordsRequest>,
    ) -> Result<Response<pb::BatchGetCriminalRecordsResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let (records, not_found_iins) = self.criminal_records(&iins).await?;
        Ok(Response::new(pb::BatchGetCriminalRecordsResponse {
            records,
            not_found_iins,
        }))
    }
}

#[tonic::async_trait]
impl pb::mobile_citizens_service_server::MobileCitizensService for RegistryServices {
    async fn get_phone(
        &self,
        request: Request<pb::GetPhoneRequest>,
    ) -> Result<Response<pb::GetPhoneResponse>, Status> {
        let iin = subject_iin(&request, &request.get_ref().iin)?;
        let phone = self
            .source()
            .records(&kinds::PHONES, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .find(|phone| phone.iin == iin.as_str());
        let Some(phone) = phone else {
            self.require_known(&iin).await?;
            return Err(ApiError::not_found(
                REASON_PHONE_NOT_FOUND,
                "no phone is linked to this iin",
            )
            .into());
        };
        Ok(Response::new(pb::GetPhoneResponse {
            phone: Some(convert::phone(phone)),
        }))
    }

    async fn batch_get_phones(
        &self,
        request: Request<pb::BatchGetPhonesRequest>,
    ) -> Result<Response<pb::BatchGetPhonesResponse>, Status> {
        let iins = subject_iins(&request, &request.get_ref().iins)?;
        let phones = self
            .source()
            .records(&kinds::PHONES, &iins)
            .await
            .map_err(ApiError::from)?;
        let mut response = pb::BatchGetPhonesResponse::default();
        for (iin, mut found) in group_by_iin(&iins, phones) {
            match found.pop() {
                Some(phone) => response.phones.push(convert::phone(phone)),
                None => response.not_found_iins.push(iin),
            }
        }
        Ok(Response::new(response))
    }
}
