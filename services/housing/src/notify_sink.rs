//! What an outbox message asks notify for: `NotificationService.SendNotification` through the
//! gateway (the kit's [`shlyuz_kit::outbox::NotifySender`]), as participant `housing` with purpose
//! `CITIZEN_NOTIFICATION` and the recipient as the envelope's subject. The offer SMS (seed 003,
//! Russian) names only the IIN — notify looks the phone up in the mobile citizens database — and
//! opens a reply window so codes 6521–6527 from that phone come back to housing's inbox; the
//! removal notice (seed 002, Kazakh) goes to the personal cabinet.

use std::collections::HashMap;

use shlyuz_kit::outbox::DeliveryFailure;
use shlyuz_proto::notify::v1 as pb;

use crate::outbox::{OutboxChannel, OutboxMessage};

/// The first and last reply codes of the offer SMS.
const REPLY_CODES: std::ops::RangeInclusive<i64> = 6521..=6527;

/// The `SendNotification` request for one outbox message; the idempotency key is the outbox id,
/// so a message relayed twice (the relay died before marking it sent) is sent once. A message
/// without a template is refused for good; unreadable parameters are retried.
pub fn notification_request(
    message: &OutboxMessage,
) -> Result<pb::SendNotificationRequest, DeliveryFailure> {
    let parameters: HashMap<String, String> =
        serde_json::from_str(&message.parameters).map_err(|error| {
            DeliveryFailure::Transient(format!(
                "outbox message {} has unreadable parameters: {error}",
                message.id
            ))
        })?;
    if message.template_id.is_empty() {
        return Err(DeliveryFailure::Refused(format!(
            "outbox message {} names no template",
            message.id
        )));
    }
    let (channel, language, conversation) = if message.channel == OutboxChannel::Sms.as_str() {
        let conversation = (!message.correlation_id.is_empty()).then(|| pb::Conversation {
            reply_participant: crate::PARTICIPANT_ID.to_string(),
            accepted_reply_codes: REPLY_CODES.map(|code| code.to_string()).collect(),
            expires_at_ms: message.expires_at_ms,
            correlation_id: message.correlation_id.clone(),
        });
        // The seed-003 original is Russian.
        (pb::Channel::Sms, pb::Language::Ru, conversation)
    } else {
        // The seed-002 original is Kazakh.
        (pb::Channel::Cabinet, pb::Language::Kk, None)
    };
    Ok(pb::SendNotificationRequest {
        recipient_iin: message.iin.clone(),
        recipient_phone: String::new(),
        channels: vec![channel as i32],
        template_id: message.template_id.clone(),
        parameters,
        language: language as i32,
        idempotency_key: message.id.clone(),
        conversation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer_message() -> OutboxMessage {
        OutboxMessage {
            id: "0190a4c2-7e1f-7000-8000-000000000009".to_string(),
            channel: "SMS".to_string(),
            iin: "900315391113".to_string(),
            phone: "+77015550113".to_string(),
            body: String::new(),
            template_id: crate::texts::OFFER_TEMPLATE.to_string(),
            parameters: crate::texts::offer_parameters("А", "Б", 2, 54.3),
            correlation_id: "0190a4c2-7e1f-7000-8000-000000000001".to_string(),
            expires_at_ms: 1_700_172_800_000,
        }
    }

    #[test]
    fn an_offer_opens_a_reply_window_for_housing_until_the_deadline() {
        let request = notification_request(&offer_message()).expect("request");
        assert_eq!(request.channels, [pb::Channel::Sms as i32]);
        assert_eq!(request.language, pb::Language::Ru as i32);
        assert_eq!(request.recipient_phone, "", "notify looks the phone up");
        assert_eq!(request.idempotency_key, offer_message().id);
        assert_eq!(request.parameters["area"], "54.3");
        assert_eq!(request.parameters["rooms"], "2");
        let conversation = request.conversation.expect("reply window");
        assert_eq!(conversation.reply_participant, "housing");
        assert_eq!(conversation.accepted_reply_codes.len(), 7);
        assert_eq!(conversation.accepted_reply_codes[0], "6521");
        assert_eq!(conversation.expires_at_ms, 1_700_172_800_000);
        assert_eq!(
            conversation.correlation_id,
            "0190a4c2-7e1f-7000-8000-000000000001"
        );
    }

    #[test]
    fn a_removal_goes_to_the_cabinet_in_kazakh_without_a_window() {
        let message = OutboxMessage {
            channel: "CABINET".to_string(),
            phone: String::new(),
            template_id: crate::texts::REMOVAL_TEMPLATE.to_string(),
            parameters: crate::texts::removal_parameters(
                crate::model::RemovalReason::EquityContract,
            ),
            correlation_id: String::new(),
            expires_at_ms: 0,
            ..offer_message()
        };
        let request = notification_request(&message).expect("request");
        assert_eq!(request.channels, [pb::Channel::Cabinet as i32]);
        assert_eq!(request.language, pb::Language::Kk as i32);
        assert!(request.conversation.is_none());
        assert_eq!(
            request.parameters["finding"],
            "тұрғын үй салуға үлестік қатысу туралы шарт"
        );
    }
}
