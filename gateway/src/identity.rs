//! Who is calling: the participant id taken from the verified client certificate of the
//! connection, placed in the request extensions by the gateway's front layer.

/// The authenticated caller of a request, inserted into `http::Request` extensions (and so visible
/// to tonic services through `tonic::Request::extensions`) before any handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The participant id from the client certificate.
    pub participant_id: String,
}

impl CallerIdentity {
    /// The caller of a tonic request, if the front layer identified one.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&CallerIdentity> {
        request.extensions().get::<CallerIdentity>()
    }
}
