//! The НУЦ mimic on SQLite and PostgreSQL, with documents verified by the kit's verifier against
//! the statuses the service answers.

use std::sync::Arc;

use crate::certificate_authority::CertificateAuthorityServiceImpl;
use crate::embedded::EmbeddedRegistry;
use crate::fixtures::{self, rules};
use futures::future::BoxFuture;
use shlyuz_kit::clock::system_clock;
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_kit::iin::Iin;
use shlyuz_kit::signed_document::{
    DocumentError, DocumentVerifier, RevocationSource, RevocationStatus, sign_document,
};
use shlyuz_proto::registry::v1 as pb;
use shlyuz_proto::registry::v1::certificate_authority_service_server::CertificateAuthorityService;
use tonic::Code;

async fn service(database: Database) -> CertificateAuthorityServiceImpl {
    database.migrate(&crate::MIGRATIONS).await.expect("migrate");
    let registry = EmbeddedRegistry::new(database.clone());
    let population = fixtures::parse(fixtures::RULES_FIXTURE).expect("fixture");
    fixtures::load(&registry, &population).await.expect("load");
    CertificateAuthorityServiceImpl::new(database, Arc::new(registry), system_clock())
}

/// The CA service as the verifier's revocation source (what intake does through the gateway).
struct ServiceStatus<'a>(&'a CertificateAuthorityServiceImpl);

impl RevocationSource for ServiceStatus<'_> {
    fn status<'a>(
        &'a self,
        serial_hex: &'a str,
    ) -> BoxFuture<'a, Result<RevocationStatus, String>> {
        Box::pin(async move {
            let response = self
                .0
                .get_certificate_status(tonic::Request::new(pb::GetCertificateStatusRequest {
                    serial_number: serial_hex.to_string(),
                }))
                .await
                .map_err(|status| status.message().to_string())?
                .into_inner();
            match pb::CertificateStatus::try_from(response.status) {
                Ok(pb::CertificateStatus::Good) => Ok(RevocationStatus::Good),
                Ok(pb::CertificateStatus::Revoked) => Ok(RevocationStatus::Revoked),
                Ok(pb::CertificateStatus::Unknown) => Ok(RevocationStatus::Unknown),
                _ => Err("unspecified status".to_string()),
            }
        })
    }
}

fn issue_request(
    iin: &str,
    kind: pb::HolderKind,
    organization: &str,
) -> pb::IssueCertificateRequest {
    pb::IssueCertificateRequest {
        iin: iin.to_string(),
        full_name: "Қасымов Ерлан Серікұлы".to_string(),
        holder_kind: kind as i32,
        organization: organization.to_string(),
        validity_days: 0,
    }
}

shlyuz_kit::storage_test!(
    issued_certificates_sign_documents_until_revoked,
    |database: Database| async move {
        let service = service(database).await;
        let issued = service
            .issue_certificate(tonic::Request::new(issue_request(
                rules::CLEAN_CANDIDATE,
                pb::HolderKind::Citizen,
                "",
            )))
            .await
            .expect("issue")
            .into_inner();
        let ca_pem = service
            .get_ca_certificate(tonic::Request::new(pb::GetCaCertificateRequest {}))
            .await
            .expect("ca")
            .into_inner()
            .certificate_pem;
        let again = service
            .get_ca_certificate(tonic::Request::new(pb::GetCaCertificateRequest {}))
            .await
            .expect("ca")
            .into_inner()
            .certificate_pem;
        assert_eq!(ca_pem, again, "one CA, created once");

        let verifier = DocumentVerifier::new(&ca_pem).expect("verifier");
        let agreement = "Келісімшарт жасасу туралы келісім".as_bytes();
        let signature = sign_document(&issued.private_key_pem, agreement).expect("sign");
        let candidate = Iin::parse(rules::CLEAN_CANDIDATE).expect("iin");
        let now = time::OffsetDateTime::now_utc();
        let signer = verifier
            .verify(
                agreement,
                &signature,
                &issued.certificate_pem,
                &candidate,
                now,
                &ServiceStatus(&service),
            )
            .await
            .expect("verified");
        assert_eq!(signer.iin, rules::CLEAN_CANDIDATE);

        service
            .revoke_certificate(tonic::Request::new(pb::RevokeCertificateRequest {
                serial_number: issued.serial_number.clone(),
                reason: "key compromise".to_string(),
            }))
            .await
            .expect("revoke");
        let status = service
            .get_certificate_status(tonic::Request::new(pb::GetCertificateStatusRequest {
                serial_number: issued.serial_number.clone(),
            }))
            .await
            .expect("status")
            .into_inner();
        assert_eq!(status.status, pb::CertificateStatus::Revoked as i32);
        assert_eq!(status.revocation_reason, "key compromise");
        let refused = verifier
            .verify(
                agreement,
                &signature,
                &issued.certificate_pem,
                &candidate,
                now,
                &ServiceStatus(&service),
            )
            .await;
        assert_eq!(refused, Err(DocumentError::Revoked));

        let unknown = service
            .get_certificate_status(tonic::Request::new(pb::GetCertificateStatusRequest {
                serial_number: "0a0b0c".to_string(),
            }))
            .await
            .expect("status")
            .into_inner();
        assert_eq!(unknown.status, pb::CertificateStatus::Unknown as i32);
    }
);

shlyuz_kit::storage_test!(
    bad_issue_requests_are_refused,
    |database: Database| async move {
        let service = service(database).await;
        let status = service
            .issue_certificate(tonic::Request::new(issue_request(
                rules::CLEAN_CANDIDATE,
                pb::HolderKind::Official,
                "",
            )))
            .await
            .expect_err("official without organization");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["organization".to_string()]
        );

        let status = service
            .issue_certificate(tonic::Request::new(issue_request(
                "850101399906",
                pb::HolderKind::Citizen,
                "",
            )))
            .await
            .expect_err("unknown person");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(summarize_status(&status).reason, "PERSON_NOT_FOUND");

        let status = service
            .revoke_certificate(tonic::Request::new(pb::RevokeCertificateRequest {
                serial_number: "not-hex".to_string(),
                reason: String::new(),
            }))
            .await
            .expect_err("bad serial");
        assert_eq!(
            summarize_status(&status).fields,
            vec!["serial_number".to_string()]
        );
    }
);
