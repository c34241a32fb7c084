//! The adapter trait every registry backend implements: the embedded tables, or an external
//! registry over HTTP(S). A backend answers one question for any [`Kind`] of record — its rows
//! about these persons — so a new registry needs a record type and a kind, not a method in every
//! backend. Every look-up is a batch by IIN (a single look-up is a batch of one), so the proactive
//! housing review costs one round trip per registry per 500 persons.

use futures::future::BoxFuture;
use serde_json::Value;
use shlyuz_kit::error::ApiError;
use shlyuz_kit::iin::Iin;
use sqlx::any::AnyRow;

use crate::reasons::upstream as reasons;
use crate::records::{Kind, KindSpec, TableRow};

/// The rows a backend found, before they are read into the kind's record type.
pub enum Rows {
    /// Rows of the embedded table, selected with the kind's columns.
    Table(Vec<AnyRow>),
    /// Records of an external registry, already mapped to `column → value` and checked to be
    /// about the asked persons.
    Json(Vec<serde_json::Map<String, Value>>),
}

/// Why a backend could not answer. Never "no data": an empty answer is `Ok` with no rows.
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
    /// The registry refused the request for good (an HTTP 4xx other than 408 and 429): asking
    /// again will not help until its configuration or the request changes.
    #[error("registry refused the request ({reason}): {message}")]
    Refused {
        /// `ErrorInfo` reason, e.g. `UPSTREAM_REFUSED`.
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
            SourceError::Refused { reason, message } => {
                ApiError::new(tonic::Code::FailedPrecondition, reason, message)
            }
            SourceError::DataLoss { reason, message } => {
                ApiError::new(tonic::Code::DataLoss, reason, message)
            }
            SourceError::Storage(error) => ApiError::from(error),
        }
    }
}

/// One backend of the state registries.
pub trait RegistrySource: Send + Sync + 'static {
    /// The rows of `kind` about `iins` (non-empty), in no particular order; unknown IINs are
    /// simply absent.
    fn rows<'a>(
        &'a self,
        kind: KindSpec,
        iins: &'a [Iin],
    ) -> BoxFuture<'a, Result<Rows, SourceError>>;
}

/// [`RegistrySource::rows`] read into a kind's record type, for every backend.
pub trait RecordLookup: RegistrySource {
    /// The records of `kind` about `iins`, in no particular order.
    fn records<'a, T: TableRow>(
        &'a self,
        kind: &Kind<T>,
        iins: &'a [Iin],
    ) -> impl Future<Output = Result<Vec<T>, SourceError>> + Send + 'a {
        let spec = kind.spec();
        async move {
            if iins.is_empty() {
                return Ok(Vec::new());
            }
            match self.rows(spec, iins).await? {
                Rows::Table(rows) => Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?),
                Rows::Json(objects) => objects
                    .into_iter()
                    .enumerate()
                    .map(|(index, object)| {
                        serde_json::from_value(Value::Object(object)).map_err(|error| {
                            SourceError::DataLoss {
                                reason: reasons::MALFORMED,
                                message: format!("record {index}: {error}"),
                            }
                        })
                    })
                    .collect(),
            }
        }
    }
}

impl<S: RegistrySource + ?Sized> RecordLookup for S {}
