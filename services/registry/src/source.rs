//! The adapter trait every registry backend implements: the embedded tables, or an external
//! registry over HTTP(S). Every method is a batch look-up by IIN (a single look-up is a batch of
//! one), so the proactive housing review costs one round trip per registry per 500 persons.

use futures::future::BoxFuture;
use shlyuz_kit::error::ApiError;
use shlyuz_kit::iin::Iin;

use crate::records::{
    ConvictionRecord, DispensaryRecordRow, EquityContractRecord, ImprisonmentRecord,
    MarriageRecord, MilitaryRegistrationRecord, PersonRecord, PhoneRecord,
    PrivatisationContractRecord, RealEstateRightRecord, ServiceHousingRecord, ServicePeriodRecord,
};

/// What a backend answers for one look-up: every matching record, in no particular order.
pub type Records<'a, T> = BoxFuture<'a, Result<Vec<T>, SourceError>>;

/// Why a backend could not answer. Never "no data": an empty answer is `Ok(vec![])`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The registry could not be reached or did not answer in time; the caller may retry.
    #[error("registry unavailable ({reason}): {message}")]
    Unavailable {
        /// `ErrorInfo` reason, e.g. `UPSTREAM_TIMEOUT`.
        reason: &'static str,
        /// What happened, lowercase.
        message: String,
    },
    /// The registry answered something that cannot be trusted (malformed, partial).
    #[error("registry answer unusable ({reason}): {message}")]
    DataLoss {
        /// `ErrorInfo` reason, e.g. `UPSTREAM_MALFORMED`.
        reason: &'static str,
        /// What was wrong, lowercase.
        message: String,
    },
    /// The embedded database failed.
    #[error("registry storage: {0}")]
    Storage(#[from] sqlx::Error),
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Unavailable { reason, message } => ApiError::unavailable(reason, message),
            SourceError::DataLoss { reason, message } => {
                ApiError::new(tonic::Code::DataLoss, reason, message)
            }
            SourceError::Storage(error) => ApiError::from(error),
        }
    }
}

/// One backend of the state registries. Each method returns the records of the given persons.
pub trait RegistrySource: Send + Sync + 'static {
    /// Persons (ГБД ФЛ) with these IINs; unknown IINs are simply absent.
    fn persons<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, PersonRecord>;
    /// Persons whose mother or father is one of these IINs (АХАЖ birth records).
    fn children<'a>(&'a self, parent_iins: &'a [Iin]) -> Records<'a, PersonRecord>;
    /// Marriages where either spouse is one of these IINs.
    fn marriages<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, MarriageRecord>;
    /// Cadastre rights held by these IINs.
    fn real_estate_rights<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, RealEstateRightRecord>;
    /// Privatisation contracts of these IINs.
    fn privatisation_contracts<'a>(
        &'a self,
        iins: &'a [Iin],
    ) -> Records<'a, PrivatisationContractRecord>;
    /// Equity contracts of these IINs.
    fn equity_contracts<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, EquityContractRecord>;
    /// Military-register entries of these IINs.
    fn military_registrations<'a>(
        &'a self,
        iins: &'a [Iin],
    ) -> Records<'a, MilitaryRegistrationRecord>;
    /// Service periods of these IINs.
    fn service_periods<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, ServicePeriodRecord>;
    /// Service housing of these IINs.
    fn service_housing<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, ServiceHousingRecord>;
    /// Dispensary records of these IINs.
    fn dispensary_records<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, DispensaryRecordRow>;
    /// Convictions of these IINs.
    fn convictions<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, ConvictionRecord>;
    /// Imprisonments of these IINs.
    fn imprisonments<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, ImprisonmentRecord>;
    /// Phones of these IINs.
    fn phones<'a>(&'a self, iins: &'a [Iin]) -> Records<'a, PhoneRecord>;
}
