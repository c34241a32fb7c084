//! [`RegistryChecks`] through the gateway: the registries' batch methods, at most
//! [`MAX_SUBJECTS`] IINs per call, every IIN named in `x-shlyuz-subject-iin` and purpose
//! `HOUSING_REGISTER_REVIEW`, each call signed with housing's key. The channel and the key are
//! constructor parameters so that the target wiring (gateway address, mTLS) stays outside.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use shlyuz_kit::envelope::{EnvelopeBuilder, MAX_SUBJECTS};
use shlyuz_kit::gateway_client::{SignedChannel, SigningService, with_envelope};
use shlyuz_kit::pki::SigningKey;
use shlyuz_proto::registry::v1 as registry;
use tonic::transport::Channel;

use crate::review::{LookupFailed, PersonFacts, RegistryChecks};

/// The purpose code of every review call (directory: `HOUSING_REGISTER_REVIEW`).
pub const REVIEW_PURPOSE: &str = "HOUSING_REGISTER_REVIEW";

/// The registries of seed 002, reached through the gateway.
#[derive(Clone)]
pub struct GatewayRegistryChecks {
    channel: SignedChannel,
}

impl GatewayRegistryChecks {
    /// Checks over `channel` (an mTLS channel to the gateway as participant `housing`), signing
    /// with `signing_key`.
    pub fn new(channel: Channel, signing_key: Arc<SigningKey>) -> Self {
        Self {
            channel: SigningService::new(channel, signing_key),
        }
    }

    /// A request naming every IIN of `iins` as a subject, for the signing channel.
    fn request<M>(iins: &[String], message: M) -> tonic::Request<M> {
        let envelope = EnvelopeBuilder {
            purpose: REVIEW_PURPOSE.to_string(),
            subject_iin: iins.join(","),
            ..EnvelopeBuilder::default()
        };
        with_envelope(envelope, message)
    }
}

fn upstream_error(service: &str, status: tonic::Status) -> LookupFailed {
    tracing::warn!(service, code = ?status.code(), message = status.message(), "registry look-up failed");
    LookupFailed {
        registry: service.to_string(),
        message: format!("through the gateway: {}", status.message()),
    }
}

impl RegistryChecks for GatewayRegistryChecks {
    async fn families(
        &self,
        iins: &[String],
    ) -> Result<HashMap<String, Vec<String>>, LookupFailed> {
        let mut client = registry::civil_registry_service_client::CivilRegistryServiceClient::new(
            self.channel.clone(),
        );
        let mut families = HashMap::new();
        for batch in iins.chunks(MAX_SUBJECTS) {
            let request = Self::request(
                batch,
                registry::BatchGetFamiliesRequest {
                    iins: batch.to_vec(),
                },
            );
            let response = client
                .batch_get_families(request)
                .await
                .map_err(|status| upstream_error("civil registry", status))?
                .into_inner();
            for family in response.families {
                // The family of the register: the current spouse and the children.
                let mut members: Vec<String> = family
                    .marriages
                    .iter()
                    .filter(|marriage| {
                        marriage.dissolved_on.is_empty() && !marriage.spouse_iin.is_empty()
                    })
                    .map(|marriage| marriage.spouse_iin.clone())
                    .collect();
                members.extend(
                    family
                        .children
                        .iter()
                        .map(|child| child.iin.clone())
                        .filter(|iin| !iin.is_empty()),
                );
                families.insert(family.iin, members);
            }
        }
        Ok(families)
    }

    async fn with_privatisation_contract(
        &self,
        iins: &[String],
    ) -> Result<HashSet<String>, LookupFailed> {
        let mut client = registry::state_property_registry_service_client::StatePropertyRegistryServiceClient::new(self.channel.clone());
        let mut holders = HashSet::new();
        for batch in iins.chunks(MAX_SUBJECTS) {
            let request = Self::request(
                batch,
                registry::BatchListPrivatisationContractsRequest {
                    iins: batch.to_vec(),
                },
            );
            let response = client
                .batch_list_privatisation_contracts(request)
                .await
                .map_err(|status| upstream_error("state property register", status))?
                .into_inner();
            holders.extend(
                response
                    .results
                    .into_iter()
                    .filter(|result| !result.contracts.is_empty())
                    .map(|result| result.iin),
            );
        }
        Ok(holders)
    }

    async fn with_equity_contract(&self, iins: &[String]) -> Result<HashSet<String>, LookupFailed> {
        let mut client = registry::equity_registry_service_client::EquityRegistryServiceClient::new(
            self.channel.clone(),
        );
        let mut holders = HashSet::new();
        for batch in iins.chunks(MAX_SUBJECTS) {
            let request = Self::request(
                batch,
                registry::BatchListEquityContractsRequest {
                    iins: batch.to_vec(),
                },
            );
            let response = client
                .batch_list_equity_contracts(request)
                .await
                .map_err(|status| upstream_error("kaztizilim", status))?
                .into_inner();
            // A terminated contract no longer gives a claim to housing.
            holders.extend(
                response
                    .results
                    .into_iter()
                    .filter(|result| {
                        result
                            .contracts
                            .iter()
                            .any(|contract| contract.terminated_on.is_empty())
                    })
                    .map(|result| result.iin),
            );
        }
        Ok(holders)
    }

    async fn with_earlier_service_housing(
        &self,
        iins: &[String],
    ) -> Result<HashSet<String>, LookupFailed> {
        let mut client =
            registry::military_register_service_client::MilitaryRegisterServiceClient::new(
                self.channel.clone(),
            );
        let mut holders = HashSet::new();
        for batch in iins.chunks(MAX_SUBJECTS) {
            let request = Self::request(
                batch,
                registry::BatchListServiceHousingRequest {
                    iins: batch.to_vec(),
                },
            );
            let response = client
                .batch_list_service_housing(request)
                .await
                .map_err(|status| upstream_error("military register", status))?
                .into_inner();
            holders.extend(
                response
                    .results
                    .into_iter()
                    .filter(|result| !result.housing.is_empty())
                    .map(|result| result.iin),
            );
        }
        Ok(holders)
    }

    async fn with_permanent_use_in(
        &self,
        iins: &[String],
        locality_kato: &str,
    ) -> Result<HashSet<String>, LookupFailed> {
        let mut client =
            registry::real_estate_cadastre_service_client::RealEstateCadastreServiceClient::new(
                self.channel.clone(),
            );
        let mut holders = HashSet::new();
        for batch in iins.chunks(MAX_SUBJECTS) {
            let request = Self::request(
                batch,
                registry::BatchListRealEstateRightsRequest {
                    iins: batch.to_vec(),
                    only_in_force: true,
                    locality_kato: locality_kato.to_string(),
                },
            );
            let response = client
                .batch_list_real_estate_rights(request)
                .await
                .map_err(|status| upstream_error("real-estate cadastre", status))?
                .into_inner();
            holders.extend(
                response
                    .results
                    .into_iter()
                    .filter(|result| {
                        result.rights.iter().any(|right| {
                            right.right_type() == registry::RightType::PermanentUseStateHousing
                        })
                    })
                    .map(|result| result.iin),
            );
        }
        Ok(holders)
    }

    async fn persons(&self, iins: &[String]) -> Result<HashMap<String, PersonFacts>, LookupFailed> {
        let mut client = registry::person_registry_service_client::PersonRegistryServiceClient::new(
            self.channel.clone(),
        );
        let mut facts = HashMap::new();
        for batch in iins.chunks(MAX_SUBJECTS) {
            let request = Self::request(
                batch,
                registry::BatchGetPersonsRequest {
                    iins: batch.to_vec(),
                },
            );
            let response = client
                .batch_get_persons(request)
                .await
                .map_err(|status| upstream_error("person registry", status))?
                .into_inner();
            for person in response.persons {
                let life_status = person.life_status();
                facts.insert(
                    person.iin.clone(),
                    PersonFacts {
                        missing_or_dead: matches!(
                            life_status,
                            registry::LifeStatus::Dead | registry::LifeStatus::Missing
                        ),
                        citizen: person.citizenship == "KZ",
                        residence_abroad: !person.residence_abroad_country.is_empty(),
                        incapable: person.legal_capacity() == registry::LegalCapacity::Incapable,
                    },
                );
            }
        }
        Ok(facts)
    }

    async fn imprisoned(&self, iins: &[String]) -> Result<HashSet<String>, LookupFailed> {
        let mut client =
            registry::criminal_records_service_client::CriminalRecordsServiceClient::new(
                self.channel.clone(),
            );
        let mut imprisoned = HashSet::new();
        for batch in iins.chunks(MAX_SUBJECTS) {
            let request = Self::request(
                batch,
                registry::BatchGetCriminalRecordsRequest {
                    iins: batch.to_vec(),
                },
            );
            let response = client
                .batch_get_criminal_records(request)
                .await
                .map_err(|status| upstream_error("criminal records", status))?
                .into_inner();
            imprisoned.extend(
                response
                    .records
                    .into_iter()
                    .filter(|record| record.currently_imprisoned)
                    .map(|record| record.iin),
            );
        }
        Ok(imprisoned)
    }
}
