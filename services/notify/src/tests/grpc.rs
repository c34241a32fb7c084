//! The gRPC surface on SQLite and PostgreSQL: validation names the field, the same idempotency key
//! returns the same id, the inbox pages with AIP-158 tokens and read marks.

use crate::grpc::NotificationGrpc;
use crate::tests::common::{harness, iin};
use shlyuz_kit::db::Database;
use shlyuz_kit::error::summarize_status;
use shlyuz_proto::notify::v1 as pb;
use shlyuz_proto::notify::v1::notification_service_server::NotificationService as _;

fn offer_request(key: &str) -> pb::SendNotificationRequest {
    pb::SendNotificationRequest {
        recipient_iin: iin(1),
        recipient_phone: "+7 701 123 45 67".to_string(),
        channels: vec![pb::Channel::Sms as i32, pb::Channel::Cabinet as i32],
        template_id: "jauynger.status.special_check".to_string(),
        parameters: [("application_number".to_string(), "J-7".to_string())]
            .into_iter()
            .collect(),
        language: pb::Language::Kk as i32,
        idempotency_key: key.to_string(),
        conversation: None,
    }
}

shlyuz_kit::storage_test!(
    send_validates_and_is_idempotent,
    |database: Database| async move {
        let harness = harness(database).await;
        let service = NotificationGrpc::new(harness.notifier.clone());
        let first = service
            .send_notification(tonic::Request::new(offer_request("k-1")))
            .await
            .expect("sent")
            .into_inner();
        let notification = first.notification.expect("notification");
        assert_eq!(notification.state, pb::NotificationState::Queued as i32);
        assert_eq!(notification.recipient_phone_masked, "+7******4567");
        assert_eq!(notification.sms_segments, 2);
        assert!(notification.text.contains("\"Арнайы тексеруге жіберілді\""));
        let again = service
            .send_notification(tonic::Request::new(offer_request("k-1")))
            .await
            .expect("sent")
            .into_inner();
        assert!(again.duplicate);
        assert_eq!(
            again.notification.expect("notification").id,
            notification.id
        );

        let cases: Vec<(pb::SendNotificationRequest, &str)> = vec![
            (
                pb::SendNotificationRequest {
                    parameters: Default::default(),
                    ..offer_request("k-2")
                },
                "parameters.application_number",
            ),
            (
                pb::SendNotificationRequest {
                    recipient_iin: "123456789012".to_string(),
                    ..offer_request("k-3")
                },
                "recipient_iin",
            ),
            (
                pb::SendNotificationRequest {
                    recipient_phone: "+1 555".to_string(),
                    ..offer_request("k-4")
                },
                "recipient_phone",
            ),
            (
                pb::SendNotificationRequest {
                    language: 0,
                    ..offer_request("k-5")
                },
                "language",
            ),
            (
                pb::SendNotificationRequest {
                    channels: vec![],
                    ..offer_request("k-6")
                },
                "channels",
            ),
            (
                pb::SendNotificationRequest {
                    idempotency_key: String::new(),
                    ..offer_request("")
                },
                "idempotency_key",
            ),
            (
                pb::SendNotificationRequest {
                    template_id: "no.such".to_string(),
                    ..offer_request("k-7")
                },
                "template_id",
            ),
            (
                pb::SendNotificationRequest {
                    conversation: Some(pb::Conversation {
                        reply_participant: "housing".to_string(),
                        accepted_reply_codes: vec!["6521".to_string()],
                        expires_at_ms: 1,
                        correlation_id: "offer".to_string(),
                    }),
                    ..offer_request("k-8")
                },
                "conversation.expires_at_ms",
            ),
        ];
        for (request, field) in cases {
            let status = service
                .send_notification(tonic::Request::new(request))
                .await
                .expect_err(field);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
            let summary = summarize_status(&status);
            assert!(
                summary.fields.iter().any(|named| named == field),
                "{field}: {summary:?}"
            );
        }
        let missing = service
            .get_notification(tonic::Request::new(pb::GetNotificationRequest {
                id: uuid::Uuid::now_v7().to_string(),
            }))
            .await
            .expect_err("unknown");
        assert_eq!(missing.code(), tonic::Code::NotFound);
    }
);

shlyuz_kit::storage_test!(
    the_inbox_pages_and_keeps_read_marks,
    |database: Database| async move {
        let harness = harness(database).await;
        let service = NotificationGrpc::new(harness.notifier.clone());
        for number in 0..3 {
            service
                .send_notification(tonic::Request::new(offer_request(&format!(
                    "inbox-{number}"
                ))))
                .await
                .expect("sent");
            harness.clock.advance(time::Duration::seconds(1));
        }
        let list = |page_token: String, unread_only: bool| pb::ListInboxRequest {
            iin: iin(1),
            page_size: 2,
            page_token,
            unread_only,
        };
        let first = service
            .list_inbox(tonic::Request::new(list(String::new(), false)))
            .await
            .expect("page")
            .into_inner();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.unread_count, 3);
        assert!(!first.next_page_token.is_empty());
        let second = service
            .list_inbox(tonic::Request::new(list(
                first.next_page_token.clone(),
                false,
            )))
            .await
            .expect("page")
            .into_inner();
        assert_eq!(second.items.len(), 1);
        assert!(second.next_page_token.is_empty());
        // A token of one listing is refused by another.
        let foreign = service
            .list_inbox(tonic::Request::new(list(
                first.next_page_token.clone(),
                true,
            )))
            .await
            .expect_err("foreign token");
        assert_eq!(foreign.code(), tonic::Code::InvalidArgument);
        let marked = service
            .mark_read(tonic::Request::new(pb::MarkReadRequest {
                iin: iin(1),
                item_ids: vec![first.items[0].id.clone()],
            }))
            .await
            .expect("marked")
            .into_inner();
        assert_eq!(marked.marked, 1);
        let unread = service
            .list_inbox(tonic::Request::new(list(String::new(), true)))
            .await
            .expect("page")
            .into_inner();
        assert_eq!(unread.unread_count, 2);
        assert!(unread.items.iter().all(|item| !item.read));
        let all = service
            .list_inbox(tonic::Request::new(list(String::new(), false)))
            .await
            .expect("page")
            .into_inner();
        assert!(all.items[0].read);
        assert!(all.items[0].read_at_ms > 0);
    }
);
