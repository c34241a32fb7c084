//! The HTTP provider against a local SMS gateway over a real socket — one that accepts, one that
//! is down, one that is slow, one that refuses — and the webhook taking its delivery reports and
//! incoming SMS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::phone::NoPhoneDirectory;
use crate::provider::{
    HttpProvider, HttpProviderSettings, OutgoingSms, ProviderError, SmsProvider,
};
use crate::store;
use crate::tests::common::{fast_retries, harness, iin, pass_killed_after_send, status_sms};
use crate::worker::DeliveryWorker;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use shlyuz_kit::db::Database;

/// What the fake SMS gateway saw.
#[derive(Default)]
struct Seen {
    /// One per SMS sent: (authorization, body).
    requests: Mutex<Vec<(String, serde_json::Value)>>,
    /// Every POST to `/ok/sms`, repeats of a `reference` included.
    handovers: std::sync::atomic::AtomicUsize,
}

async fn sms_gateway(seen: Arc<Seen>) -> String {
    shlyuz_kit::install_crypto_provider();
    let accept_seen = seen.clone();
    let router = axum::Router::new()
        .route(
            "/ok/sms",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let seen = accept_seen.clone();
                async move {
                    let authorization = headers
                        .get("authorization")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let body: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    seen.handovers
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // Like SMS gateways that take a client message id: a repeated reference
                    // is acknowledged with the first answer, and no second SMS goes out.
                    let number = {
                        let mut requests = seen.requests.lock().expect("lock");
                        let earlier = requests
                            .iter()
                            .position(|(_, sent)| sent["reference"] == body["reference"]);
                        match earlier {
                            Some(index) => index + 1,
                            None => {
                                requests.push((authorization, body));
                                requests.len()
                            }
                        }
                    };
                    (
                        StatusCode::ACCEPTED,
                        [("content-type", "application/json")],
                        format!("{{\"message_id\":\"prov-{number}\"}}"),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/down/sms",
            post(|| async {
                (StatusCode::SERVICE_UNAVAILABLE, "maintenance window").into_response()
            }),
        )
        .route(
            "/slow/sms",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                (StatusCode::OK, "{\"message_id\":\"late\"}").into_response()
            }),
        )
        .route(
            "/refuse/sms",
            post(|| async {
                (StatusCode::BAD_REQUEST, "invalid destination number").into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{address}")
}

fn provider(base: &str, path: &str) -> HttpProvider {
    HttpProvider::new(HttpProviderSettings {
        url: format!("{base}{path}"),
        auth_header: "Authorization".to_string(),
        auth_value: "Bearer sms-secret".to_string(),
        timeout_ms: 300,
        connect_timeout_ms: 300,
    })
    .expect("provider")
}

fn sms() -> OutgoingSms {
    OutgoingSms {
        notification_id: "n-1".to_string(),
        phone: "+77011234567".to_string(),
        text: "Растау коды: 123456".to_string(),
        segments: 1,
    }
}

#[tokio::test]
async fn the_http_provider_posts_json_with_auth_and_classifies_failures() {
    let seen = Arc::new(Seen::default());
    let base = sms_gateway(seen.clone()).await;
    let accepted = provider(&base, "/ok/sms")
        .send(&sms())
        .await
        .expect("accepted");
    assert_eq!(accepted, "prov-1");
    let requests = seen.requests.lock().expect("lock").clone();
    assert_eq!(requests[0].0, "Bearer sms-secret");
    assert_eq!(requests[0].1["to"], "+77011234567");
    assert_eq!(requests[0].1["text"], "Растау коды: 123456");
    assert_eq!(requests[0].1["reference"], "n-1");

    let down = provider(&base, "/down/sms")
        .send(&sms())
        .await
        .expect_err("down");
    assert_eq!(
        down,
        ProviderError::Transient(
            "sms gateway answered 503 Service Unavailable: maintenance window".to_string()
        )
    );
    let slow = provider(&base, "/slow/sms")
        .send(&sms())
        .await
        .expect_err("slow");
    assert_eq!(
        slow,
        ProviderError::Transient("sms gateway timed out".to_string())
    );
    let refused = provider(&base, "/refuse/sms")
        .send(&sms())
        .await
        .expect_err("refused");
    assert_eq!(
        refused,
        ProviderError::Permanent(
            "sms gateway answered 400 Bad Request: invalid destination number".to_string()
        )
    );
    // Nothing listens on port 9 of loopback.
    let unreachable = provider("http://127.0.0.1:9", "/sms")
        .send(&sms())
        .await
        .expect_err("unreachable");
    assert!(
        matches!(unreachable, ProviderError::Transient(reason) if reason.starts_with("sms gateway unreachable"))
    );
}

shlyuz_kit::storage_test!(
    a_refused_sms_fails_at_once_with_the_provider_reason,
    |database: Database| async move {
        let harness = harness(database).await;
        let base = sms_gateway(Arc::new(Seen::default())).await;
        let accepted = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "c/refused"))
            .await
            .expect("accepted");
        let worker = DeliveryWorker::new(
            harness.database.clone(),
            Arc::new(provider(&base, "/refuse/sms")),
            Arc::new(NoPhoneDirectory),
            harness.clock.shared(),
            fast_retries(5),
        );
        assert_eq!(worker.run_once().await.expect("pass").failed, 1);
        let stored = store::get_notification(&harness.database, &accepted.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state, store::STATE_FAILED);
        assert_eq!(stored.attempts, 1);
        assert_eq!(
            stored.failure_reason,
            "sms gateway answered 400 Bad Request: invalid destination number"
        );
    }
);

shlyuz_kit::storage_test!(
    a_crash_between_the_send_and_its_record_does_not_send_twice,
    |database: Database| async move {
        let harness = harness(database).await;
        let seen = Arc::new(Seen::default());
        let base = sms_gateway(seen.clone()).await;
        let accepted = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "c/crash"))
            .await
            .expect("accepted");
        let settings = fast_retries(5);
        pass_killed_after_send(
            &harness,
            Arc::new(provider(&base, "/ok/sms")),
            settings.clone(),
        )
        .await;
        harness
            .clock
            .advance(time::Duration::milliseconds(settings.lease_ms as i64 + 1));
        let restarted = DeliveryWorker::new(
            harness.database.clone(),
            Arc::new(provider(&base, "/ok/sms")),
            Arc::new(NoPhoneDirectory),
            harness.clock.shared(),
            settings,
        );
        assert_eq!(restarted.run_once().await.expect("pass").sent, 1);
        assert_eq!(
            seen.handovers.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "handed over again after the crash"
        );
        let requests = seen.requests.lock().expect("lock").clone();
        assert_eq!(requests.len(), 1, "under the same reference: one SMS");
        assert_eq!(
            requests[0].1["reference"],
            accepted.notification.id.as_str()
        );
        let stored = store::get_notification(&harness.database, &accepted.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state, store::STATE_SENT);
        assert_eq!(stored.provider_message_id, "prov-1");
    }
);

shlyuz_kit::storage_test!(
    delivery_reports_and_inbound_sms_arrive_by_webhook,
    |database: Database| async move {
        let harness = harness(database).await;
        let base = sms_gateway(Arc::new(Seen::default())).await;
        let worker = DeliveryWorker::new(
            harness.database.clone(),
            Arc::new(provider(&base, "/ok/sms")),
            Arc::new(NoPhoneDirectory),
            harness.clock.shared(),
            fast_retries(3),
        );
        let delivered = harness
            .notifier
            .send(status_sms("+77011234567", &iin(1), "c/1"))
            .await
            .expect("accepted");
        let undelivered = harness
            .notifier
            .send(status_sms("+77012223344", &iin(2), "c/2"))
            .await
            .expect("accepted");
        assert_eq!(worker.run_once().await.expect("pass").sent, 2);
        let inbound = crate::inbound::InboundSms::new(harness.notifier.clone());
        let server = crate::webhook::WebhookServer::bind(
            "127.0.0.1:0".parse().expect("address"),
            crate::webhook::router(harness.notifier.clone(), inbound, "hook-token".to_string()),
        )
        .await
        .expect("bind");
        let address = server.local_addr().expect("address");
        let (trigger, signal) = shlyuz_kit::shutdown::shutdown_channel();
        tokio::spawn(server.serve(signal));
        let client = reqwest::Client::new();
        let post = |path: &str, token: &str, body: serde_json::Value| {
            client
                .post(format!("http://{address}{path}"))
                .header("authorization", format!("Bearer {token}"))
                .json(&body)
                .send()
        };
        let sent_ids: Vec<String> = {
            let mut ids = Vec::new();
            for id in [&delivered.notification.id, &undelivered.notification.id] {
                let row = store::get_notification(&harness.database, id)
                    .await
                    .expect("read")
                    .expect("stored");
                ids.push(row.provider_message_id);
            }
            ids
        };
        let refused = post(
            "/v1/delivery-reports",
            "wrong",
            serde_json::json!({"message_id": sent_ids[0], "status": "delivered"}),
        )
        .await
        .expect("post");
        assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
        let ok = post(
            "/v1/delivery-reports",
            "hook-token",
            serde_json::json!({"message_id": sent_ids[0], "status": "DELIVERED"}),
        )
        .await
        .expect("post");
        assert_eq!(ok.status(), reqwest::StatusCode::NO_CONTENT);
        let failed = post(
        "/v1/delivery-reports",
        "hook-token",
        serde_json::json!({"message_id": sent_ids[1], "status": "undelivered", "reason": "subscriber absent"}),
    )
    .await
    .expect("post");
        assert_eq!(failed.status(), reqwest::StatusCode::NO_CONTENT);
        let unknown = post(
            "/v1/delivery-reports",
            "hook-token",
            serde_json::json!({"message_id": "nope", "status": "delivered"}),
        )
        .await
        .expect("post");
        assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
        let malformed = post(
            "/v1/delivery-reports",
            "hook-token",
            serde_json::json!({"status": "delivered"}),
        )
        .await
        .expect("post");
        assert_eq!(malformed.status(), reqwest::StatusCode::BAD_REQUEST);

        let first = store::get_notification(&harness.database, &delivered.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(first.state, store::STATE_DELIVERED);
        let second = store::get_notification(&harness.database, &undelivered.notification.id)
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(second.state, store::STATE_FAILED);
        assert_eq!(
            second.failure_reason,
            "provider reported undelivered: subscriber absent"
        );

        let reply = post(
            "/v1/inbound-sms",
            "hook-token",
            serde_json::json!({"from": "+77015550000", "text": "6521", "message_id": "in-1"}),
        )
        .await
        .expect("post");
        assert_eq!(reply.status(), reqwest::StatusCode::OK);
        let body: serde_json::Value = reply.json().await.expect("json");
        assert_eq!(body["outcome"], "ANSWERED_NO_CONVERSATION");
        let bad_phone = post(
            "/v1/inbound-sms",
            "hook-token",
            serde_json::json!({"from": "x", "text": "6521"}),
        )
        .await
        .expect("post");
        assert_eq!(bad_phone.status(), reqwest::StatusCode::BAD_REQUEST);
        trigger.trigger();
    }
);
