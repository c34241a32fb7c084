//! Where a citizen's phone comes from when a notice names only the IIN: the registry's
//! MobileCitizensService, called through the gateway as `notify` with purpose
//! CITIZEN_NOTIFICATION and the IIN as the subject.

use futures::future::BoxFuture;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::gateway_client::{GatewayClient, with_envelope};
use shlyuz_proto::registry::v1::GetPhoneRequest;
use shlyuz_proto::registry::v1::mobile_citizens_service_client::MobileCitizensServiceClient;

use shlyuz_kit::purpose::CITIZEN_NOTIFICATION;

/// Finds a citizen's phone.
pub trait PhoneDirectory: Send + Sync + 'static {
    /// The E.164 phone of `iin`; `Ok(None)` when the database has none; `Err` when the look-up
    /// could not be made (worth retrying).
    fn lookup<'a>(&'a self, iin: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;
}

/// No directory: every look-up finds nothing (a notify without a gateway).
#[derive(Debug, Default)]
pub struct NoPhoneDirectory;

impl PhoneDirectory for NoPhoneDirectory {
    fn lookup<'a>(&'a self, _iin: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// The mobile citizens database through the gateway.
#[derive(Debug, Clone)]
pub struct GatewayPhoneDirectory {
    gateway: GatewayClient,
}

impl GatewayPhoneDirectory {
    /// A directory calling through `gateway`.
    pub fn new(gateway: GatewayClient) -> Self {
        Self { gateway }
    }
}

impl PhoneDirectory for GatewayPhoneDirectory {
    fn lookup<'a>(&'a self, iin: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let envelope = EnvelopeBuilder {
                purpose: CITIZEN_NOTIFICATION.to_string(),
                subject_iin: iin.to_string(),
                ..EnvelopeBuilder::default()
            };
            let request = with_envelope(
                envelope,
                GetPhoneRequest {
                    iin: iin.to_string(),
                },
            );
            let mut client = MobileCitizensServiceClient::new(self.gateway.signed_channel());
            match client.get_phone(request).await {
                Ok(response) => Ok(response
                    .into_inner()
                    .phone
                    .map(|phone| phone.phone_number)
                    .filter(|number| !number.is_empty())),
                Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
                Err(status) => Err(format!(
                    "mobile citizens look-up failed: {:?}: {}",
                    status.code(),
                    status.message()
                )),
            }
        })
    }
}
