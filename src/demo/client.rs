//! How the demo calls as a participant: an mTLS channel to the gateway with the participant's
//! signing key ([`GatewayClient`]), requests in a signed envelope, and documents signed with a
//! test EDS certificate from the registry's CA.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shlyuz_kit::client::{ClientSettings, connect, connect_lazy};
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::fixture_people::FixturePerson;
use shlyuz_kit::gateway_client::{DEFAULT_GATEWAY_SERVER_NAME, GatewayClient, with_envelope};
use shlyuz_kit::pki::SigningKey;
use shlyuz_kit::signed_document::sign_document;
use shlyuz_proto::intake::v1 as intake_pb;
use shlyuz_proto::registry::v1 as registry_pb;
use tonic::transport::Channel;

use super::Described;
use crate::up::Endpoints;

/// The gateway client of participant `id` of `endpoints.json`: its certificate for mTLS and its
/// key for signing envelopes.
pub(super) fn connect_participant(
    endpoints: &Endpoints,
    id: &str,
) -> anyhow::Result<GatewayClient> {
    let files = endpoints
        .participants
        .get(id)
        .with_context(|| format!("no participant {id:?} in endpoints.json"))?;
    let key = SigningKey::from_pem_file(&files.signing_key)
        .with_context(|| format!("{id}: signing key"))?;
    let channel = connect_lazy(&ClientSettings {
        address: endpoints.gateway.clone(),
        tls: Some(endpoints.tls_files(id)?),
        server_name: DEFAULT_GATEWAY_SERVER_NAME.to_string(),
        connect_timeout: Duration::from_secs(5),
    })?;
    Ok(GatewayClient::from_channel(channel, id, Arc::new(key)))
}

/// The test clock at `address`: housing's own listener, not the gateway; only `ops` may move it.
pub(super) async fn connect_test_clock(
    endpoints: &Endpoints,
    address: &str,
) -> anyhow::Result<Channel> {
    connect(&ClientSettings {
        address: address.to_string(),
        tls: Some(endpoints.tls_files("ops")?),
        server_name: "localhost".to_string(),
        connect_timeout: Duration::from_secs(5),
    })
    .await
    .with_context(|| format!("test clock at {address}"))
}

/// A request in an envelope without a user, purpose or subject, for a signed channel.
pub(super) fn signed<M>(message: M) -> tonic::Request<M> {
    with_envelope(EnvelopeBuilder::default(), message)
}

/// A request with `user` acting in `role` (intake trusts the portal's and SDU's role
/// assertions), for a signed channel.
pub(super) fn as_user<M>(
    user: &str,
    role: &str,
    region: Option<&str>,
    message: M,
) -> anyhow::Result<tonic::Request<M>> {
    // The role and region are part of the signed envelope (v2): intake acts on them.
    let envelope = EnvelopeBuilder {
        user_id: user.to_string(),
        user_role: role.to_string(),
        user_region: region.unwrap_or_default().to_string(),
        ..EnvelopeBuilder::default()
    };
    Ok(with_envelope(envelope, message))
}

/// A test EDS certificate for `holder` from the registry's CA (НУЦ mimic), as the portal obtains
/// it; `official` for the ministry's officials.
pub(super) async fn certificate(
    portal: &GatewayClient,
    holder: FixturePerson,
    official: bool,
) -> anyhow::Result<registry_pb::IssueCertificateResponse> {
    let envelope = EnvelopeBuilder {
        purpose: "DIGITAL_SIGNATURE".to_string(),
        subject_iin: holder.iin.to_string(),
        ..EnvelopeBuilder::default()
    };
    let request = with_envelope(
        envelope,
        registry_pb::IssueCertificateRequest {
            iin: holder.iin.to_string(),
            full_name: holder.full_name.to_string(),
            holder_kind: if official {
                registry_pb::HolderKind::Official as i32
            } else {
                registry_pb::HolderKind::Citizen as i32
            },
            organization: if official {
                "Министерство обороны РК".to_string()
            } else {
                String::new()
            },
            validity_days: 30,
        },
    );
    registry_pb::certificate_authority_service_client::CertificateAuthorityServiceClient::new(
        portal.signed_channel(),
    )
    .issue_certificate(request)
    .await
    .described()
}

/// `document` signed with `certificate`'s key, with the certificate, as intake takes it.
pub(super) fn signed_document(
    certificate: &registry_pb::IssueCertificateResponse,
    document: &[u8],
) -> anyhow::Result<intake_pb::SignedDocument> {
    Ok(intake_pb::SignedDocument {
        document: document.to_vec(),
        signature: sign_document(&certificate.private_key_pem, document)?,
        signer_certificate_pem: certificate.certificate_pem.clone(),
    })
}
