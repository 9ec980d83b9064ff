//! Errors the API answers with. Each carries a fixed `extensions.code` that clients and checks
//! depend on; validation failures also carry every problem in `extensions.problems`.

use async_graphql::{ErrorExtensions, Value as GqlValue};
use walkoff_schema::Problem;

use crate::store::StoreError;

///
/// It deliberately does not implement `Display`: async-graphql turns any `Display` type into an
/// error without extensions, so `?` would lose the code; this way `?` goes through the one `From`
/// below, which keeps it.
#[derive(Debug)]
pub enum ApiError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    ValidationFailed(Vec<Problem>),
    Conflict(String),
    BadUserInput(String),
    RateLimited(String),
    /// Something went wrong inside; the message says what without internals.
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::ValidationFailed(_) => "VALIDATION_FAILED",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::BadUserInput(_) => "BAD_USER_INPUT",
            ApiError::RateLimited(_) => "RATE_LIMITED",
            ApiError::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::ValidationFailed(problems) => {
                let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                format!(
                    "the workflow is not valid: {} problem(s): {}",
                    problems.len(),
                    lines.join("; ")
                )
            }
            ApiError::Internal(message) => format!("internal error: {message}"),
            ApiError::Unauthenticated(message)
            | ApiError::Forbidden(message)
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::BadUserInput(message)
            | ApiError::RateLimited(message) => message.clone(),
        }
    }

    pub fn not_found(what: &str, id: &str) -> ApiError {
        ApiError::NotFound(format!("no {what} with id '{id}'"))
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        async_graphql::Error::new(self.message()).extend_with(|_, e| {
            e.set("code", self.code());
            if let ApiError::ValidationFailed(problems) = self {
                let problems = serde_json::to_value(problems).unwrap_or_default();
                e.set(
                    "problems",
                    GqlValue::from_json(problems).unwrap_or(GqlValue::Null),
                );
            }
        })
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        error.extend()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => ApiError::Conflict(message),
            // PostgreSQL stores no NUL character in text (SQLite does): refused as input, the
            // same on both, rather than as a failure of the store.
            StoreError::Database(e)
                if e.as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|code| code == "22021") =>
            {
                ApiError::BadUserInput(
                    "a text holds a NUL character (\\u0000), which cannot be stored".into(),
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::Internal("the store failed; the change was not made".into())
            }
        }
    }
}

/// Results of resolvers: errors become GraphQL errors with their code.
pub type ApiResult<T> = Result<T, ApiError>;
