//! A small in-process notify `OtpService` that behaves like notify's (proto/shlyuz/notify/v1/otp.proto):
//! six-digit codes valid five minutes, five attempts, three codes per phone per fifteen minutes, the
//! code bound to its purpose and IIN, and notify's refusals with notify's reasons. It records the
//! SMS it would send, so a test can read the code as the citizen would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shlyuz_kit::clock::SharedClock;
use shlyuz_kit::error::ApiError;
use shlyuz_kit::gateway_client::{GatewayClient, GatewayClientSettings};
use shlyuz_kit::pki::{DevPki, SigningKey};
use shlyuz_kit::server::{GrpcServer, ServerSettings, Transport};
use shlyuz_kit::shutdown::{ShutdownTrigger, shutdown_channel};
use shlyuz_kit::telemetry::MetricsRegistry;
use shlyuz_proto::notify::v1 as pb;
use tonic::{Request, Response, Status};

const TTL_MS: i64 = 5 * 60 * 1000;
const MAX_ATTEMPTS: i32 = 5;
const MAX_PER_WINDOW: usize = 3;
const WINDOW: Duration = Duration::from_secs(15 * 60);

/// One SMS the fake would have sent.
#[derive(Debug, Clone)]
pub struct SentSms {
    /// The phone it went to.
    pub phone: String,
    /// The IIN the code was issued for.
    pub iin: String,
    /// The template.
    pub template_id: String,
    /// The caller's parameters.
    pub parameters: HashMap<String, String>,
    /// The code in it.
    pub code: String,
}

struct Otp {
    code: String,
    iin: String,
    purpose: String,
    attempts: i32,
    used: bool,
    expires_ms: i64,
}

#[derive(Default)]
struct State {
    otps: HashMap<String, Otp>,
    issued: Vec<(String, i64)>,
    sms: Vec<SentSms>,
}

#[derive(Clone)]
struct FakeOtpService {
    state: Arc<Mutex<State>>,
    clock: SharedClock,
}

#[tonic::async_trait]
impl pb::otp_service_server::OtpService for FakeOtpService {
    async fn issue_otp(
        &self,
        request: Request<pb::IssueOtpRequest>,
    ) -> Result<Response<pb::IssueOtpResponse>, Status> {
        let request = request.into_inner();
        if request.template_id != "otp.consent" {
            return Err(ApiError::invalid_field("template_id", "unknown template").into());
        }
        let mut names: Vec<&str> = request.parameters.keys().map(String::as_str).collect();
        names.sort_unstable();
        if names != ["participant", "purpose"] {
            return Err(ApiError::invalid_field("parameters", "otp.consent parameters").into());
        }
        let now_ms = self.clock.now_millis();
        let mut state = self.state.lock();
        let window_start = now_ms - i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX);
        let recent = state
            .issued
            .iter()
            .filter(|(phone, at)| *phone == request.phone && *at > window_start)
            .count();
        if recent >= MAX_PER_WINDOW {
            return Err(ApiError::resource_exhausted(
                "OTP_RATE_LIMITED",
                "at most 3 codes per 900 seconds for one phone",
                WINDOW,
            )
            .into());
        }
        let otp_id = uuid::Uuid::now_v7().to_string();
        // Distinct codes, so a test can tell one consent's code from another's.
        let code = format!("{:06}", 100_000 + state.otps.len() * 7_919);
        state.issued.push((request.phone.clone(), now_ms));
        state.sms.push(SentSms {
            phone: request.phone.clone(),
            iin: request.iin.clone(),
            template_id: request.template_id.clone(),
            parameters: request.parameters.clone(),
            code: code.clone(),
        });
        state.otps.insert(
            otp_id.clone(),
            Otp {
                code,
                iin: request.iin,
                purpose: request.purpose,
                attempts: 0,
                used: false,
                expires_ms: now_ms + TTL_MS,
            },
        );
        Ok(Response::new(pb::IssueOtpResponse {
            otp_id,
            expires_at_ms: now_ms + TTL_MS,
            max_attempts: MAX_ATTEMPTS,
            notification_id: uuid::Uuid::now_v7().to_string(),
        }))
    }

    async fn verify_otp(
        &self,
        request: Request<pb::VerifyOtpRequest>,
    ) -> Result<Response<pb::VerifyOtpResponse>, Status> {
        let request = request.into_inner();
        let now_ms = self.clock.now_millis();
        let mut state = self.state.lock();
        let Some(otp) = state.otps.get_mut(&request.otp_id) else {
            return Err(ApiError::not_found("OTP_NOT_FOUND", "no such one-time password").into());
        };
        if !request.iin.is_empty() && otp.iin != request.iin {
            return Err(ApiError::failed_precondition(
                "OTP_SUBJECT_MISMATCH",
                "the one-time password was not issued for this person",
            )
            .into());
        }
        if otp.used {
            return Err(ApiError::failed_precondition(
                "OTP_USED",
                "the one-time password was already used",
            )
            .into());
        }
        if now_ms >= otp.expires_ms {
            return Err(ApiError::failed_precondition(
                "OTP_EXPIRED",
                "the one-time password has expired",
            )
            .into());
        }
        if otp.attempts >= MAX_ATTEMPTS {
            return Err(ApiError::failed_precondition(
                "OTP_ATTEMPTS_EXHAUSTED",
                "every attempt for this one-time password was used; request a new one",
            )
            .into());
        }
        otp.attempts += 1;
        let verified = otp.purpose == request.purpose && otp.code == request.code;
        otp.used = verified;
        Ok(Response::new(pb::VerifyOtpResponse {
            verified,
            attempts_left: MAX_ATTEMPTS - otp.attempts,
        }))
    }
}

/// A running fake notify and the registry's gateway client pointed at it.
pub struct FakeNotify {
    state: Arc<Mutex<State>>,
    /// The registry's client; the fake checks no envelope, as if the gateway had.
    pub client: GatewayClient,
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _keys: tempfile::TempDir,
}

fn registry_signing_key(directory: &tempfile::TempDir) -> Arc<SigningKey> {
    let pki = DevPki::ensure(&directory.path().join("pki"), &["registry"]).expect("pki");
    let files = pki.participant("registry").expect("registry");
    Arc::new(SigningKey::from_pem_file(&files.signing_key).expect("signing key"))
}

fn client_to(address: &str, signing_key: Arc<SigningKey>) -> GatewayClient {
    GatewayClient::connect_lazy(
        &GatewayClientSettings {
            address: address.to_string(),
            server_name: "gateway".to_string(),
            tls: None,
            connect_timeout: Duration::from_secs(2),
        },
        "registry",
        signing_key,
    )
    .expect("client")
}

impl FakeNotify {
    /// Serves on a loopback port, on `clock`'s time.
    pub async fn start(clock: SharedClock) -> FakeNotify {
        let keys = tempfile::tempdir().expect("temp dir");
        let state = Arc::new(Mutex::new(State::default()));
        let server = GrpcServer::bind(
            ServerSettings::loopback("notify", Transport::Plaintext),
            &MetricsRegistry::default(),
        )
        .await
        .expect("bind");
        let address: SocketAddr = server.local_addr().expect("address");
        let (trigger, signal) = shutdown_channel();
        let service = FakeOtpService {
            state: state.clone(),
            clock,
        };
        let routes =
            tonic::service::Routes::new(pb::otp_service_server::OtpServiceServer::new(service));
        let task = tokio::spawn(server.serve(routes, signal));
        FakeNotify {
            state,
            client: client_to(&address.to_string(), registry_signing_key(&keys)),
            trigger,
            task,
            _keys: keys,
        }
    }

    /// A client to a port bound but never listened on (so no other program can take it, and
    /// connections are refused): notify (or the gateway) is down. Keep the socket while the
    /// client is used.
    pub fn unreachable_client(&self) -> (GatewayClient, tokio::net::TcpSocket) {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let address = socket.local_addr().expect("address");
        let client = client_to(&address.to_string(), registry_signing_key(&self._keys));
        (client, socket)
    }

    /// Every SMS so far, oldest first.
    pub fn sms(&self) -> Vec<SentSms> {
        self.state.lock().sms.clone()
    }

    /// The last SMS.
    pub fn last_sms(&self) -> SentSms {
        self.sms().last().cloned().expect("an sms")
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.trigger.trigger();
        let _ = self.task.await;
    }
}
