//! CertificateAuthorityService: the НУЦ mimic. Issues test signing certificates (subject
//! serialNumber `IIN<iin>`) for citizens and officials, answers their status like an OCSP
//! responder (good / revoked / unknown) and revokes them. The CA key lives in the registry
//! database, created on first use: this is a test CA, never a production one.

use std::sync::Arc;

use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::{ApiError, parse_iin_field};
use shlyuz_kit::signed_document::NationalCa;
use shlyuz_kit::subject::{SUBJECT_IIN_METADATA, Subjects};
use shlyuz_proto::registry::v1 as pb;
use sqlx::Row;
use tonic::{Request, Response, Status};

use crate::records::kinds;
use crate::source::{RecordLookup as _, RegistrySource};

/// Row id of the one CA this registry runs.
const CA_ID: &str = "national";
/// Validity when the request leaves it at 0.
const DEFAULT_VALIDITY_DAYS: i32 = 365;
/// Longest validity.
const MAX_VALIDITY_DAYS: i32 = 730;

fn to_millis(instant: time::OffsetDateTime) -> i64 {
    i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn validate_serial(serial: &str) -> Result<String, ApiError> {
    let normalized = serial.to_ascii_lowercase();
    if normalized.is_empty()
        || normalized.len() > 40
        || !normalized.bytes().all(|byte| byte.is_ascii_hexdigit())
    {
        return Err(ApiError::invalid_field(
            "serial_number",
            "must be 1 to 40 hexadecimal digits",
        ));
    }
    Ok(normalized)
}

/// The CA service over the registry database.
#[derive(Clone)]
pub struct CertificateAuthorityServiceImpl {
    database: Database,
    source: Arc<dyn RegistrySource>,
    clock: SharedClock,
}

impl CertificateAuthorityServiceImpl {
    /// The service over `database`; `source` tells which persons exist.
    pub fn new(database: Database, source: Arc<dyn RegistrySource>, clock: SharedClock) -> Self {
        Self {
            database,
            source,
            clock,
        }
    }

    /// The tonic server.
    pub fn into_server(
        self,
    ) -> pb::certificate_authority_service_server::CertificateAuthorityServiceServer<Self> {
        pb::certificate_authority_service_server::CertificateAuthorityServiceServer::new(self)
    }

    /// The CA, created and stored on first use; concurrent first uses agree on one key.
    pub async fn national_ca(&self) -> Result<NationalCa, ApiError> {
        if let Some(ca) = self.load_ca().await? {
            return Ok(ca);
        }
        let generated = NationalCa::generate(self.clock.now())
            .map_err(|error| ApiError::internal(format!("cannot create the ca: {error}")))?;
        sqlx::query(
            "INSERT INTO ca_keys (ca_id, certificate_pem, key_pem, create_time_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (ca_id) DO NOTHING",
        )
        .bind(CA_ID)
        .bind(generated.certificate_pem())
        .bind(generated.key_pem())
        .bind(self.clock.now_millis())
        .execute(self.database.pool())
        .await?;
        self.load_ca()
            .await?
            .ok_or_else(|| ApiError::internal("the ca was not stored"))
    }

    async fn load_ca(&self) -> Result<Option<NationalCa>, ApiError> {
        let row = sqlx::query("SELECT certificate_pem, key_pem FROM ca_keys WHERE ca_id = $1")
            .bind(CA_ID)
            .fetch_optional(self.database.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let certificate_pem: String = row.try_get("certificate_pem")?;
        let key_pem: String = row.try_get("key_pem")?;
        NationalCa::from_pem(&certificate_pem, &key_pem)
            .map(Some)
            .map_err(|error| ApiError::internal(format!("stored ca is unusable: {error}")))
    }
}

#[tonic::async_trait]
impl pb::certificate_authority_service_server::CertificateAuthorityService
    for CertificateAuthorityServiceImpl
{
    async fn issue_certificate(
        &self,
        request: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::IssueCertificateResponse>, Status> {
        let message = request.get_ref();
        let iin = parse_iin_field("iin", &message.iin)?;
        let full_name = message.full_name.trim();
        if full_name.is_empty() || full_name.chars().count() > 200 {
            return Err(ApiError::invalid_field("full_name", "must be 1 to 200 characters").into());
        }
        let organization = match pb::HolderKind::try_from(message.holder_kind) {
            Ok(pb::HolderKind::Citizen) => None,
            Ok(pb::HolderKind::Official) => {
                let organization = message.organization.trim();
                if organization.is_empty() || organization.chars().count() > 200 {
                    return Err(ApiError::invalid_field(
                        "organization",
                        "an official's certificate names the organization (1 to 200 characters)",
                    )
                    .into());
                }
                Some(organization)
            }
            _ => {
                return Err(
                    ApiError::invalid_field("holder_kind", "must be CITIZEN or OFFICIAL").into(),
                );
            }
        };
        let validity_days = match message.validity_days {
            0 => DEFAULT_VALIDITY_DAYS,
            days if (1..=MAX_VALIDITY_DAYS).contains(&days) => days,
            _ => {
                return Err(ApiError::invalid_field(
                    "validity_days",
                    format!("must be 0 (365) or 1 to {MAX_VALIDITY_DAYS}"),
                )
                .into());
            }
        };
        if request.metadata().get(SUBJECT_IIN_METADATA).is_some() {
            Subjects::from_metadata(request.metadata())?.require("iin", &iin)?;
        }
        let known = self
            .source
            .records(&kinds::PERSONS, std::slice::from_ref(&iin))
            .await
            .map_err(ApiError::from)?;
        if known.is_empty() {
            return Err(crate::grpc::person_not_found(&iin).into());
        }
        let ca = self.national_ca().await?;
        let now = self.clock.now();
        let issued = ca
            .issue(
                &iin,
                full_name,
                organization,
                now - time::Duration::minutes(5),
                now + time::Duration::days(i64::from(validity_days)),
            )
            .map_err(|error| ApiError::internal(format!("cannot issue: {error}")))?;
        sqlx::query(
            "INSERT INTO certificates (serial_hex, iin, holder_kind, full_name, organization,
                 not_before_ms, not_after_ms, certificate_pem, issue_time_ms, revoke_time_ms,
                 revocation_reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, '')",
        )
        .bind(&issued.serial_hex)
        .bind(iin.as_str())
        .bind(i64::from(message.holder_kind))
        .bind(full_name)
        .bind(organization.unwrap_or_default())
        .bind(to_millis(issued.not_before))
        .bind(to_millis(issued.not_after))
        .bind(&issued.certificate_pem)
        .bind(self.clock.now_millis())
        .execute(self.database.pool())
        .await
        .map_err(ApiError::from)?;
        tracing::info!(serial = %issued.serial_hex, "test certificate issued");
        Ok(Response::new(pb::IssueCertificateResponse {
            serial_number: issued.serial_hex,
            certificate_pem: issued.certificate_pem,
            private_key_pem: issued.private_key_pem,
        }))
    }

    async fn get_certificate_status(
        &self,
        request: Request<pb::GetCertificateStatusRequest>,
    ) -> Result<Response<pb::GetCertificateStatusResponse>, Status> {
        let serial = validate_serial(&request.get_ref().serial_number)?;
        let row = sqlx::query(
            "SELECT revoke_time_ms, revocation_reason FROM certificates WHERE serial_hex = $1",
        )
        .bind(&serial)
        .fetch_optional(self.database.pool())
        .await
        .map_err(ApiError::from)?;
        let response = match row {
            None => pb::GetCertificateStatusResponse {
                status: pb::CertificateStatus::Unknown as i32,
                ..Default::default()
            },
            Some(row) => {
                let revoke_time_ms: i64 = row.try_get("revoke_time_ms").map_err(ApiError::from)?;
                if revoke_time_ms > 0 {
                    pb::GetCertificateStatusResponse {
                        status: pb::CertificateStatus::Revoked as i32,
                        revoke_time_ms,
                        revocation_reason: row
                            .try_get("revocation_reason")
                            .map_err(ApiError::from)?,
                    }
                } else {
                    pb::GetCertificateStatusResponse {
                        status: pb::CertificateStatus::Good as i32,
                        ..Default::default()
                    }
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let serial = validate_serial(&request.get_ref().serial_number)?;
        let reason = request.get_ref().reason.trim();
        if reason.chars().count() > 500 {
            return Err(ApiError::invalid_field("reason", "at most 500 characters").into());
        }
        let row = sqlx::query("SELECT iin FROM certificates WHERE serial_hex = $1")
            .bind(&serial)
            .fetch_optional(self.database.pool())
            .await
            .map_err(ApiError::from)?;
        let Some(row) = row else {
            return Err(ApiError::not_found(
                crate::reasons::CERTIFICATE_NOT_FOUND,
                "no certificate with this serial number",
            )
            .into());
        };
        let holder: String = row.try_get("iin").map_err(ApiError::from)?;
        if request.metadata().get(SUBJECT_IIN_METADATA).is_some() {
            let holder_iin = parse_iin_field("iin", &holder)?;
            Subjects::from_metadata(request.metadata())?.require("serial_number", &holder_iin)?;
        }
        let now_ms = self.clock.now_millis();
        // Revoking twice keeps the first revocation time.
        sqlx::query(
            "UPDATE certificates SET revoke_time_ms = $2, revocation_reason = $3
             WHERE serial_hex = $1 AND revoke_time_ms = 0",
        )
        .bind(&serial)
        .bind(now_ms)
        .bind(reason)
        .execute(self.database.pool())
        .await
        .map_err(ApiError::from)?;
        let row = sqlx::query("SELECT revoke_time_ms FROM certificates WHERE serial_hex = $1")
            .bind(&serial)
            .fetch_one(self.database.pool())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::RevokeCertificateResponse {
            revoke_time_ms: row.try_get("revoke_time_ms").map_err(ApiError::from)?,
        }))
    }

    async fn get_ca_certificate(
        &self,
        _request: Request<pb::GetCaCertificateRequest>,
    ) -> Result<Response<pb::GetCaCertificateResponse>, Status> {
        let ca = self.national_ca().await?;
        Ok(Response::new(pb::GetCaCertificateResponse {
            certificate_pem: ca.certificate_pem().to_string(),
        }))
    }
}
