//! What can go wrong in a request, and how each case reaches the client.

use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: `field` names the offending field, dotted from the request.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// The caller is authenticated, but may not do this (act for another party, read what is
    /// not theirs).
    #[error("{0}")]
    PermissionDenied(String),
    /// No such thing (yet: the read models follow the commands).
    #[error("{0} not found")]
    NotFound(String),
    /// A dependency (broker, database) cannot be reached now; the client may retry.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        match error {
            ApiError::InvalidArgument { .. } => Status::invalid_argument(error.to_string()),
            ApiError::NotFound(_) => Status::not_found(error.to_string()),
            ApiError::PermissionDenied(_) => Status::permission_denied(error.to_string()),
            ApiError::Unavailable(_) => Status::unavailable(error.to_string()),
        }
    }
}
