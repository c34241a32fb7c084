//! A service's outbound side: one channel to the gateway plus the participant's signing key, so
//! every call a service makes to another goes through the gateway with a signed envelope.
//! Generated clients run over [`GatewayClient::signed_channel`], which signs each call for the
//! path it is sent to; a call names its envelope with [`with_envelope`]:
//!
//! ```text
//! let mut people = PersonRegistryServiceClient::new(gateway.signed_channel());
//! let person = people.get_person(with_envelope(envelope, GetPersonRequest { iin })).await?;
//! ```

mod signing;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

use crate::client::{ClientSettings, connect_lazy};
use crate::envelope::EnvelopeBuilder;
use crate::pki::SigningKey;
use crate::server::TlsFiles;

pub use signing::{
    SignedChannel, SigningLayer, SigningService, with_envelope, with_streaming_envelope,
};

/// The name the gateway's certificate carries in the development PKI and the Kubernetes setup.
pub const DEFAULT_GATEWAY_SERVER_NAME: &str = "gateway";

/// Where and as whom a service calls the gateway.
#[derive(Debug, Clone)]
pub struct GatewayClientSettings {
    /// `host:port` of the gateway.
    pub address: String,
    /// The name the gateway's certificate must carry.
    pub server_name: String,
    /// The participant's certificate files; `None` means plaintext (tests only).
    pub tls: Option<TlsFiles>,
    /// Connection timeout.
    pub connect_timeout: Duration,
}

impl GatewayClientSettings {
    /// Where a service with `identity` calls the gateway under its configuration `section`;
    /// `None` when the section names no gateway.
    pub fn for_section(
        identity: &crate::service::Identity,
        section: &crate::config::TargetConfig,
    ) -> Option<Self> {
        if section.gateway_address.is_empty() {
            return None;
        }
        Some(Self {
            address: section.gateway_address.clone(),
            server_name: section.gateway_server_name.clone(),
            tls: identity.tls.clone(),
            connect_timeout: Duration::from_secs(2),
        })
    }
}

/// A lazily connected gateway channel and the key that signs this participant's envelopes.
#[derive(Clone)]
pub struct GatewayClient {
    channel: Channel,
    signing_key: Arc<SigningKey>,
    participant: String,
}

impl std::fmt::Debug for GatewayClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GatewayClient")
            .field("participant", &self.participant)
            .finish_non_exhaustive()
    }
}

impl GatewayClient {
    /// A client for `participant` that connects on first use.
    pub fn connect_lazy(
        settings: &GatewayClientSettings,
        participant: &str,
        signing_key: Arc<SigningKey>,
    ) -> anyhow::Result<Self> {
        let channel = connect_lazy(&ClientSettings {
            address: settings.address.clone(),
            tls: settings.tls.clone(),
            server_name: settings.server_name.clone(),
            connect_timeout: settings.connect_timeout,
        })
        .with_context(|| format!("{participant}: gateway channel to {}", settings.address))?;
        Ok(Self::from_channel(channel, participant, signing_key))
    }

    /// A client over an existing channel (tests, or a channel shared with other clients).
    pub fn from_channel(channel: Channel, participant: &str, signing_key: Arc<SigningKey>) -> Self {
        Self {
            channel,
            signing_key,
            participant: participant.to_string(),
        }
    }

    /// The client a service with `identity` uses under its configuration `section`: the
    /// section's `gateway_address`, verified as `gateway_server_name`, with the identity's
    /// certificate; `None` when the section names no gateway.
    pub fn for_section(
        identity: &crate::service::Identity,
        section: &crate::config::TargetConfig,
    ) -> anyhow::Result<Option<Self>> {
        let Some(settings) = GatewayClientSettings::for_section(identity, section) else {
            return Ok(None);
        };
        Self::connect_lazy(
            &settings,
            &identity.participant,
            identity.signing_key.clone(),
        )
        .map(Some)
    }

    /// The key this participant signs with (for clients that still sign by hand).
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.signing_key.clone()
    }

    /// The channel without signing (for clients that still sign by hand).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The channel signing every call as this participant, for generated gRPC clients.
    pub fn signed_channel(&self) -> SignedChannel {
        SigningService::new(self.channel.clone(), self.signing_key.clone())
    }

    /// The participant this client signs as.
    pub fn participant(&self) -> &str {
        &self.participant
    }

    /// `message` for the gRPC method `path` (`/package.Service/Method`), with `envelope` signed by
    /// this participant's key.
    pub fn signed_request<M: prost::Message>(
        &self,
        envelope: &EnvelopeBuilder,
        path: &str,
        message: M,
    ) -> tonic::Request<M> {
        envelope.signed_request(&self.signing_key, path, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetConfig;
    use crate::service::Identity;

    fn identity() -> Identity {
        Identity {
            participant: "intake".to_string(),
            tls: None,
            signing_key: Arc::new(
                SigningKey::from_pkcs8_der(
                    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
                        .expect("a key")
                        .serialized_der(),
                )
                .expect("an Ed25519 key"),
            ),
        }
    }

    #[test]
    fn a_service_calls_the_configured_gateway_under_the_configured_name() {
        let section = TargetConfig {
            gateway_address: "gw.example:443".to_string(),
            gateway_server_name: "gateway.example".to_string(),
            ..TargetConfig::on_port(50054)
        };
        let settings =
            GatewayClientSettings::for_section(&identity(), &section).expect("an address");
        assert_eq!(settings.address, "gw.example:443");
        assert_eq!(settings.server_name, "gateway.example");
        let without = TargetConfig {
            gateway_address: String::new(),
            ..section
        };
        assert!(GatewayClientSettings::for_section(&identity(), &without).is_none());
    }
}
