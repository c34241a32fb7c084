//! The test-only clock control that `shlyuz up --test-clock` serves on a target's own address:
//! the `ops` participant moves the target's [`AdjustableClock`] forward, so a 48-hour window can
//! be walked through in seconds. Nothing serves it unless that flag is given.

use shlyuz_proto::testing::v1::test_clock_service_server::{
    TestClockService, TestClockServiceServer,
};
use shlyuz_proto::testing::v1::{
    AdvanceTestClockRequest, AdvanceTestClockResponse, GetTestClockRequest, GetTestClockResponse,
};
use tonic::{Request, Response, Status};

use crate::clock::{AdjustableClock, Clock};
use crate::error::ApiError;

/// The only participant allowed to move a clock.
pub const CLOCK_OPERATOR: &str = "ops";

/// The longest single step: a year.
pub const MAX_STEP_SECONDS: i64 = 365 * 86_400;

/// `TestClockService` over one [`AdjustableClock`].
#[derive(Clone, Debug)]
pub struct TestClock {
    clock: AdjustableClock,
}

impl TestClock {
    /// Serves `clock`.
    pub fn new(clock: AdjustableClock) -> TestClock {
        TestClock { clock }
    }

    /// The tonic service.
    pub fn into_server(self) -> TestClockServiceServer<TestClock> {
        TestClockServiceServer::new(self)
    }

    fn reading(&self) -> (prost_types::Timestamp, i64) {
        let now = self.clock.now();
        let timestamp = prost_types::Timestamp {
            seconds: now.unix_timestamp(),
            nanos: i32::try_from(now.nanosecond()).unwrap_or(0),
        };
        (timestamp, self.clock.offset().whole_seconds())
    }
}

/// Refuses every caller but [`CLOCK_OPERATOR`], identified by its verified client certificate.
fn require_operator<T>(request: &Request<T>) -> Result<(), ApiError> {
    let participant = request
        .peer_certs()
        .and_then(|certificates| {
            certificates
                .first()
                .map(|leaf| crate::pki::participant_id_from_cert(leaf.as_ref()))
        })
        .and_then(Result::ok);
    match participant.as_deref() {
        Some(CLOCK_OPERATOR) => Ok(()),
        Some(other) => Err(ApiError::permission_denied(
            "CLOCK_OPERATOR_ONLY",
            format!("participant {other} may not move the test clock; only {CLOCK_OPERATOR} may"),
        )),
        None => Err(ApiError::unauthenticated(
            crate::error::reasons::CLIENT_CERTIFICATE_REQUIRED,
            "the test clock requires the ops client certificate (mutual TLS)",
        )),
    }
}

#[tonic::async_trait]
impl TestClockService for TestClock {
    async fn get_test_clock(
        &self,
        request: Request<GetTestClockRequest>,
    ) -> Result<Response<GetTestClockResponse>, Status> {
        require_operator(&request)?;
        let (now, offset_seconds) = self.reading();
        Ok(Response::new(GetTestClockResponse {
            now: Some(now),
            offset_seconds,
        }))
    }

    async fn advance_test_clock(
        &self,
        request: Request<AdvanceTestClockRequest>,
    ) -> Result<Response<AdvanceTestClockResponse>, Status> {
        require_operator(&request)?;
        let seconds = request.get_ref().seconds;
        if !(1..=MAX_STEP_SECONDS).contains(&seconds) {
            return Err(ApiError::invalid_field(
                "seconds",
                format!("must be 1 to {MAX_STEP_SECONDS} (time never goes back)"),
            )
            .into());
        }
        let offset = self.clock.advance(time::Duration::seconds(seconds));
        tracing::warn!(
            advanced_seconds = seconds,
            offset_seconds = offset.whole_seconds(),
            "test clock moved forward"
        );
        let (now, offset_seconds) = self.reading();
        Ok(Response::new(AdvanceTestClockResponse {
            now: Some(now),
            offset_seconds,
        }))
    }
}
