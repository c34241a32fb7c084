//! The gRPC services of `shlyuz.housing.v1` over [`Housing`]; errors become `google.rpc.Status`
//! with `ErrorInfo` at this edge only.

use std::sync::Arc;
use std::time::Duration;

use shlyuz_kit::error::ApiError;
use shlyuz_kit::shutdown::ShutdownSignal;
use shlyuz_proto::housing::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Housing;
use crate::model::HousingError;
use crate::reasons;
use crate::register::{NewDwelling, NewRegistrant};
use crate::review::{RegistryChecks, ReviewSettings};

/// Housing's errors as the caller sees them: the one place their codes and reasons are chosen.
impl From<HousingError> for ApiError {
    fn from(error: HousingError) -> Self {
        let message = error.to_string();
        match error {
            HousingError::Invalid(violations) => ApiError::invalid_fields(violations),
            HousingError::RegistrantExists | HousingError::ImportedRegistrantExists => {
                ApiError::already_exists(reasons::REGISTRANT_EXISTS, message)
            }
            HousingError::RegistrantNotFound => {
                ApiError::not_found(reasons::REGISTRANT_NOT_FOUND, message)
            }
            HousingError::DwellingNotFound => {
                ApiError::not_found(reasons::DWELLING_NOT_FOUND, message)
            }
            HousingError::OfferNotFound => ApiError::not_found(reasons::OFFER_NOT_FOUND, message),
            HousingError::ReviewNotFound => ApiError::not_found(reasons::REVIEW_NOT_FOUND, message),
            HousingError::ReplyPhoneMismatch => {
                ApiError::permission_denied(reasons::REPLY_PHONE_MISMATCH, message)
            }
            HousingError::ReplyRecipientMismatch | HousingError::DeliveryRecipientMismatch => {
                ApiError::permission_denied(reasons::REPLY_RECIPIENT_MISMATCH, message)
            }
            HousingError::OfferExpired => {
                ApiError::failed_precondition(reasons::OFFER_EXPIRED, message)
            }
            HousingError::OfferWithdrawn => {
                ApiError::failed_precondition(reasons::OFFER_WITHDRAWN, message)
            }
            HousingError::OfferUndelivered => {
                ApiError::failed_precondition(reasons::OFFER_UNDELIVERED, message)
            }
            HousingError::OfferAlreadyAnswered => {
                ApiError::failed_precondition(reasons::OFFER_ALREADY_ANSWERED, message)
            }
            HousingError::Corrupt { .. } => ApiError::internal("internal storage error"),
            HousingError::Database(error) => error.into(),
        }
    }
}

impl From<HousingError> for Status {
    fn from(error: HousingError) -> Self {
        ApiError::from(error).into()
    }
}

/// The register, stock and allocation services.
#[derive(Clone)]
pub struct HousingServices {
    housing: Arc<Housing>,
}

/// The review service; `checks` is `None` until the target is given a gateway channel, and then
/// `StartReview` is `FAILED_PRECONDITION` (`REVIEW_NOT_CONFIGURED`) while reports stay readable.
pub struct HousingReview<C> {
    housing: Arc<Housing>,
    checks: Option<Arc<C>>,
    settings: ReviewSettings,
}

impl HousingServices {
    /// Services over `housing`.
    pub fn new(housing: Arc<Housing>) -> Self {
        Self { housing }
    }
}

impl<C> HousingReview<C> {
    /// The review service over `housing` with the registry `checks`.
    pub fn new(housing: Arc<Housing>, checks: Option<Arc<C>>, settings: ReviewSettings) -> Self {
        Self {
            housing,
            checks,
            settings,
        }
    }
}

/// Every housing route: register, stock, allocation and review.
pub fn routes<C: RegistryChecks + 'static>(
    housing: Arc<Housing>,
    checks: Option<Arc<C>>,
    settings: ReviewSettings,
) -> tonic::service::Routes {
    let services = HousingServices::new(housing.clone());
    let mut builder = tonic::service::RoutesBuilder::default();
    builder
        .add_service(
            pb::housing_register_service_server::HousingRegisterServiceServer::new(
                services.clone(),
            ),
        )
        .add_service(
            pb::housing_stock_service_server::HousingStockServiceServer::new(services.clone()),
        )
        .add_service(
            pb::housing_allocation_service_server::HousingAllocationServiceServer::new(services),
        )
        .add_service(
            pb::housing_review_service_server::HousingReviewServiceServer::new(HousingReview::new(
                housing, checks, settings,
            )),
        );
    builder.routes()
}

/// Runs an allocation round every `interval` until shutdown: overdue offers expire (the 48-hour
/// window is a stored deadline, so a restart loses nothing) and freed dwellings go to the next in
/// queue.
pub async fn run_allocation_loop(
    housing: Arc<Housing>,
    interval: Duration,
    shutdown: ShutdownSignal,
) {
    let housing = &housing;
    shlyuz_kit::task::every(interval, shutdown, || async move {
        if let Err(error) = housing.run_allocation_round().await {
            tracing::warn!(error = %error, "allocation round failed");
        }
    })
    .await;
}

fn millis_of(field: &str, stamp: Option<prost_types::Timestamp>) -> Result<i64, ApiError> {
    let stamp = stamp.ok_or_else(|| ApiError::invalid_field(field, "must be set"))?;
    if !(0..1_000_000_000).contains(&stamp.nanos) {
        return Err(ApiError::invalid_field(field, "has invalid nanos"));
    }
    stamp
        .seconds
        .checked_mul(1000)
        .and_then(|millis| millis.checked_add(i64::from(stamp.nanos / 1_000_000)))
        .ok_or_else(|| ApiError::invalid_field(field, "is out of range"))
}

/// An answer about the registrants `iins`: the gateway writes their subject-access rows (the
/// register's routes are not personal-data routes, since most calls name no one in advance).
fn about<'a, T>(iins: impl IntoIterator<Item = &'a str>, message: T) -> Response<T> {
    shlyuz_kit::subject::declare_response_subjects(Response::new(message), iins)
}

#[tonic::async_trait]
impl pb::housing_register_service_server::HousingRegisterService for HousingServices {
    async fn add_registrant(
        &self,
        request: Request<pb::AddRegistrantRequest>,
    ) -> Result<Response<pb::AddRegistrantResponse>, Status> {
        let request = request.into_inner();
        let registrant = self
            .housing
            .add_registrant(NewRegistrant {
                reported_at_ms: millis_of("reported_at", request.reported_at)?,
                iin: request.iin,
                full_name: request.full_name,
                phone: request.phone,
                locality_kato: request.locality_kato,
                family_size: i64::from(request.family_size),
            })
            .await?;
        let iin = registrant.iin.clone();
        Ok(about(
            [iin.as_str()],
            pb::AddRegistrantResponse {
                registrant: Some(registrant),
            },
        ))
    }

    async fn get_registrant(
        &self,
        request: Request<pb::GetRegistrantRequest>,
    ) -> Result<Response<pb::GetRegistrantResponse>, Status> {
        let registrant = self.housing.get_registrant(&request.get_ref().iin).await?;
        let iin = registrant.iin.clone();
        Ok(about(
            [iin.as_str()],
            pb::GetRegistrantResponse {
                registrant: Some(registrant),
            },
        ))
    }

    async fn list_registrants(
        &self,
        request: Request<pb::ListRegistrantsRequest>,
    ) -> Result<Response<pb::ListRegistrantsResponse>, Status> {
        let page = self.housing.list_registrants(request.get_ref()).await?;
        let iins: Vec<String> = page
            .registrants
            .iter()
            .map(|item| item.iin.clone())
            .collect();
        Ok(about(iins.iter().map(String::as_str), page))
    }
}

#[tonic::async_trait]
impl pb::housing_stock_service_server::HousingStockService for HousingServices {
    async fn add_dwelling(
        &self,
        request: Request<pb::AddDwellingRequest>,
    ) -> Result<Response<pb::AddDwellingResponse>, Status> {
        let request = request.into_inner();
        let dwelling = self
            .housing
            .add_dwelling(NewDwelling {
                address: request.address,
                locality_kato: request.locality_kato,
                rooms: i64::from(request.rooms),
                total_area_m2: request.total_area_m2,
            })
            .await?;
        Ok(Response::new(pb::AddDwellingResponse {
            dwelling: Some(dwelling),
        }))
    }

    async fn get_dwelling(
        &self,
        request: Request<pb::GetDwellingRequest>,
    ) -> Result<Response<pb::GetDwellingResponse>, Status> {
        let dwelling = self.housing.get_dwelling(&request.get_ref().id).await?;
        Ok(Response::new(pb::GetDwellingResponse {
            dwelling: Some(dwelling),
        }))
    }

    async fn list_dwellings(
        &self,
        request: Request<pb::ListDwellingsRequest>,
    ) -> Result<Response<pb::ListDwellingsResponse>, Status> {
        Ok(Response::new(
            self.housing.list_dwellings(request.get_ref()).await?,
        ))
    }
}

#[tonic::async_trait]
impl pb::housing_allocation_service_server::HousingAllocationService for HousingServices {
    async fn run_allocation_round(
        &self,
        _request: Request<pb::RunAllocationRoundRequest>,
    ) -> Result<Response<pb::RunAllocationRoundResponse>, Status> {
        let outcome = self.housing.run_allocation_round().await?;
        Ok(Response::new(pb::RunAllocationRoundResponse {
            offers_expired: outcome.offers_expired,
            offers_made: outcome.offers_made,
        }))
    }

    async fn list_offers(
        &self,
        request: Request<pb::ListOffersRequest>,
    ) -> Result<Response<pb::ListOffersResponse>, Status> {
        let page = self.housing.list_offers(request.get_ref()).await?;
        let iins: Vec<String> = page.offers.iter().map(|item| item.iin.clone()).collect();
        Ok(about(iins.iter().map(String::as_str), page))
    }

    async fn record_reply(
        &self,
        request: Request<pb::RecordReplyRequest>,
    ) -> Result<Response<pb::RecordReplyResponse>, Status> {
        let offer = crate::inbox::apply_reply(&self.housing, request.get_ref()).await?;
        let iin = offer.iin.clone();
        Ok(about(
            [iin.as_str()],
            pb::RecordReplyResponse { offer: Some(offer) },
        ))
    }

    async fn list_refusals(
        &self,
        request: Request<pb::ListRefusalsRequest>,
    ) -> Result<Response<pb::ListRefusalsResponse>, Status> {
        let page = self.housing.list_refusals(request.get_ref()).await?;
        let iins: Vec<String> = page.refusals.iter().map(|item| item.iin.clone()).collect();
        Ok(about(iins.iter().map(String::as_str), page))
    }
}

#[tonic::async_trait]
impl<C: RegistryChecks + 'static> pb::housing_review_service_server::HousingReviewService
    for HousingReview<C>
{
    async fn start_review(
        &self,
        _request: Request<pb::StartReviewRequest>,
    ) -> Result<Response<pb::StartReviewResponse>, Status> {
        let Some(checks) = &self.checks else {
            return Err(ApiError::failed_precondition(
                reasons::REVIEW_NOT_CONFIGURED,
                "this housing instance has no gateway channel for the registry checks",
            )
            .into());
        };
        let review = self
            .housing
            .run_review(checks.as_ref(), self.settings)
            .await?;
        Ok(Response::new(pb::StartReviewResponse {
            review: Some(review),
        }))
    }

    async fn get_review(
        &self,
        request: Request<pb::GetReviewRequest>,
    ) -> Result<Response<pb::GetReviewResponse>, Status> {
        let review = self.housing.get_review(&request.get_ref().id).await?;
        Ok(Response::new(pb::GetReviewResponse {
            review: Some(review),
        }))
    }

    async fn list_reviews(
        &self,
        request: Request<pb::ListReviewsRequest>,
    ) -> Result<Response<pb::ListReviewsResponse>, Status> {
        Ok(Response::new(
            self.housing.list_reviews(request.get_ref()).await?,
        ))
    }

    async fn list_removals(
        &self,
        request: Request<pb::ListRemovalsRequest>,
    ) -> Result<Response<pb::ListRemovalsResponse>, Status> {
        let page = self.housing.list_removals(request.get_ref()).await?;
        let iins: Vec<String> = page.removals.iter().map(|item| item.iin.clone()).collect();
        Ok(about(iins.iter().map(String::as_str), page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: HousingError) -> (tonic::Code, String, String) {
        let error = ApiError::from(error);
        (
            error.code(),
            error.reason().to_string(),
            error.message().to_string(),
        )
    }

    #[test]
    fn unknown_records_are_not_found_with_their_own_reason() {
        assert_eq!(
            answer(HousingError::RegistrantNotFound),
            (
                tonic::Code::NotFound,
                reasons::REGISTRANT_NOT_FOUND.to_string(),
                "this person is not on the register".to_string()
            )
        );
        assert_eq!(
            answer(HousingError::DwellingNotFound),
            (
                tonic::Code::NotFound,
                reasons::DWELLING_NOT_FOUND.to_string(),
                "no such dwelling".to_string()
            )
        );
        assert_eq!(
            answer(HousingError::ReviewNotFound),
            (
                tonic::Code::NotFound,
                reasons::REVIEW_NOT_FOUND.to_string(),
                "no such review run".to_string()
            )
        );
    }

    #[test]
    fn an_import_with_a_known_person_is_already_exists() {
        assert_eq!(
            answer(HousingError::ImportedRegistrantExists),
            (
                tonic::Code::AlreadyExists,
                reasons::REGISTRANT_EXISTS.to_string(),
                "a person of the import is already on the register".to_string()
            )
        );
    }

    #[test]
    fn a_delivery_report_for_another_person_is_permission_denied() {
        assert_eq!(
            answer(HousingError::DeliveryRecipientMismatch),
            (
                tonic::Code::PermissionDenied,
                reasons::REPLY_RECIPIENT_MISMATCH.to_string(),
                "the delivery report names another recipient".to_string()
            )
        );
    }

    #[test]
    fn a_corrupt_row_is_internal_without_details() {
        assert_eq!(
            answer(HousingError::Corrupt {
                column: "offers.status"
            }),
            (
                tonic::Code::Internal,
                "INTERNAL".to_string(),
                "internal storage error".to_string()
            )
        );
    }

    #[test]
    fn invalid_fields_keep_every_violation() {
        let error = ApiError::from(HousingError::invalid_field("offer_id", "must be a UUID"));
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert_eq!(error.message(), "invalid offer_id: must be a UUID");
        assert_eq!(error.field_violations()[0].field, "offer_id");
    }
}
