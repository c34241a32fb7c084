//! Hands the consent OTP SMS of the `sms_outbox` table to notify (`NotificationService.
//! SendNotification`, template `consent.otp`) through the gateway, as participant `registry`,
//! purpose PERSONAL_DATA_CONSENT, the subject as the envelope's subject. The row is written with
//! the consent; once notify has taken it, its OTP is blanked here (the code then exists only as
//! notify's SMS and the consent's hash). Outages leave rows for the next pass, in order; a message
//! notify refuses for good is parked with the refusal so it does not hold back the others.

use std::collections::HashMap;
use std::time::Duration;

use shlyuz_kit::db::Database;
use shlyuz_kit::envelope::EnvelopeBuilder;
use shlyuz_kit::gateway_client::GatewayClient;
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_proto::notify::v1 as notify;
use sqlx::Row;
use tonic::Code;

/// notify's template of the consent confirmation SMS.
pub const TEMPLATE: &str = "consent.otp";
/// Purpose of the call to notify.
pub const PURPOSE: &str = "PERSONAL_DATA_CONSENT";
const SEND_NOTIFICATION: &str = "/shlyuz.notify.v1.NotificationService/SendNotification";

/// What one relay pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayPass {
    /// Taken by notify.
    pub sent: usize,
    /// Refused for good and parked.
    pub refused: usize,
}

struct Pending {
    message_id: String,
    phone_number: String,
    subject_iin: String,
    parameters: String,
}

/// One pass: hands up to `limit` waiting SMS to notify, oldest first.
pub async fn relay_once(
    database: &Database,
    gateway: &GatewayClient,
    now_ms: i64,
    limit: i64,
) -> Result<RelayPass, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT message_id, phone_number, subject_iin, parameters FROM sms_outbox
         WHERE sent_time_ms IS NULL AND refused_time_ms IS NULL
         ORDER BY create_time_ms, message_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(database.pool())
    .await?;
    let mut pass = RelayPass::default();
    for row in rows {
        let pending = Pending {
            message_id: row.try_get("message_id")?,
            phone_number: row.try_get("phone_number")?,
            subject_iin: row.try_get("subject_iin")?,
            parameters: row.try_get("parameters")?,
        };
        match send(gateway, &pending).await {
            Ok(()) => {
                sqlx::query(
                    "UPDATE sms_outbox SET sent_time_ms = $2, body = '', parameters = '{}'
                     WHERE message_id = $1 AND sent_time_ms IS NULL",
                )
                .bind(&pending.message_id)
                .bind(now_ms)
                .execute(database.pool())
                .await?;
                pass.sent += 1;
            }
            Err(status) if refuses_the_message(&status) => {
                let refusal = format!("{:?}: {}", status.code(), status.message());
                tracing::error!(
                    message_id = %pending.message_id,
                    refusal = %refusal,
                    "consent sms refused for good; parked, the relay goes on"
                );
                sqlx::query(
                    "UPDATE sms_outbox SET refused_time_ms = $2, refusal = $3, body = '', parameters = '{}'
                     WHERE message_id = $1 AND sent_time_ms IS NULL",
                )
                .bind(&pending.message_id)
                .bind(now_ms)
                .bind(refusal)
                .execute(database.pool())
                .await?;
                pass.refused += 1;
            }
            Err(status) => {
                tracing::warn!(
                    message_id = %pending.message_id,
                    code = ?status.code(),
                    error = status.message(),
                    "consent sms not handed to notify; retried on the next pass"
                );
                break;
            }
        }
    }
    Ok(pass)
}

/// A refusal of this message (its content or subject), not an outage.
fn refuses_the_message(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied | Code::NotFound
    )
}

async fn send(gateway: &GatewayClient, pending: &Pending) -> Result<(), tonic::Status> {
    let parameters: HashMap<String, String> =
        serde_json::from_str(&pending.parameters).map_err(|error| {
            tonic::Status::invalid_argument(format!("stored parameters are not valid: {error}"))
        })?;
    let request = notify::SendNotificationRequest {
        recipient_iin: pending.subject_iin.clone(),
        recipient_phone: pending.phone_number.clone(),
        channels: vec![notify::Channel::Sms as i32],
        template_id: TEMPLATE.to_string(),
        parameters,
        language: notify::Language::Kk as i32,
        idempotency_key: pending.message_id.clone(),
        conversation: None,
    };
    let envelope = EnvelopeBuilder {
        purpose: PURPOSE.to_string(),
        subject_iin: pending.subject_iin.clone(),
        ..EnvelopeBuilder::default()
    };
    notify::notification_service_client::NotificationServiceClient::new(gateway.channel())
        .send_notification(gateway.signed_request(&envelope, SEND_NOTIFICATION, request))
        .await
        .map(|_| ())
}

/// Relays every `interval` until shutdown.
pub async fn run(
    database: Database,
    gateway: GatewayClient,
    clock: shlyuz_kit::clock::SharedClock,
    interval: Duration,
    shutdown: ShutdownSignal,
) {
    let (database, gateway, clock) = (&database, &gateway, &clock);
    shlyuz_kit::task::every(interval, shutdown, || async move {
        if let Err(error) = relay_once(database, gateway, clock.now_millis(), 100).await {
            tracing::warn!(error = %error, "consent sms relay pass failed");
        }
    })
    .await;
}
