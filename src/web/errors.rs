//! Errors as the user sees them: an HTML page or a JSON body, with a sentence that
//! says what to do. The cause chain goes to the log.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use serde::Serialize;
use std::fmt;

use crate::hypervisor::HypervisorError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    Unprocessable,
    /// libvirt refused a step; the message carries its reason.
    HypervisorFailed,
    PayloadTooLarge,
    TooManyRequests,
    /// The request body stopped arriving.
    RequestTimeout,
    Unavailable,
    Internal,
}

impl ErrorKind {
    fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::HypervisorFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unprocessable => "invalid",
            ErrorKind::HypervisorFailed => "hypervisor_failed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::TooManyRequests => "too_many_requests",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error answer. `api` selects JSON instead of HTML.
#[derive(Debug)]
pub struct AppError {
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<&'static str>,
    pub api: bool,
    /// For a sign-in redirect: the page (path and query) to come back to after sign-in.
    pub next: Option<String>,
}

impl AppError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AppError {
            kind,
            message: message.into(),
            field: None,
            api: false,
            next: None,
        }
    }

    /// Answer in JSON.
    pub fn api(mut self) -> Self {
        self.api = true;
        self
    }

    pub fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn login_required() -> Self {
        Self::new(ErrorKind::Unauthorized, "Sign in first.")
    }

    /// Sign in first, then come back to `next` (a path with its query on this site).
    pub fn login_required_for(next: Option<String>) -> Self {
        let mut e = Self::login_required();
        e.next = next;
        e
    }

    /// Where the sign-in redirect sends the browser: `/login`, with `next` when the
    /// request asked for a page that is safe to come back to.
    pub fn login_location(&self) -> String {
        match self.next.as_deref() {
            Some(n) if n != "/" && crate::web::pages::safe_next(Some(n)) == n => {
                let query = serde_urlencoded::to_string([("next", n)]).unwrap_or_default();
                format!("/login?{query}")
            }
            _ => "/login".to_string(),
        }
    }

    /// Logs the cause chain; the user gets a generic sentence.
    pub fn internal(cause: anyhow::Error) -> Self {
        tracing::error!(error = format!("{cause:#}"), "internal error");
        Self::new(
            ErrorKind::Internal,
            "Something went wrong inside virtdeck; the server log has the details.",
        )
    }

    pub fn hypervisor(e: HypervisorError) -> Self {
        tracing::error!(error = %e, "hypervisor call failed");
        Self::new(ErrorKind::Unavailable, e.user_message())
    }
}

impl From<crate::lifecycle::LifecycleError> for AppError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as L;
        match e {
            L::Invalid(errors) => {
                let first = errors.first().cloned();
                let mut a = AppError::new(
                    ErrorKind::Unprocessable,
                    first
                        .as_ref()
                        .map(|f| f.message.clone())
                        .unwrap_or_default(),
                );
                a.field = first.map(|f| f.field);
                a
            }
            L::Capacity(c) => AppError::new(ErrorKind::Conflict, c.to_string()),
            L::Failed { message } => AppError::new(ErrorKind::HypervisorFailed, message),
            L::NotFound(m) => AppError::not_found(m),
            L::Conflict(m) => AppError::new(ErrorKind::Conflict, m),
            L::Hypervisor(h) => AppError::hypervisor(h),
            L::Store(s) => AppError::internal(s.into()),
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Serialize)]
struct JsonErrorBody<'a> {
    error: JsonError<'a>,
}

#[derive(Serialize)]
struct JsonError<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.kind.status();
        if self.api {
            return HttpResponse::build(status).json(JsonErrorBody {
                error: JsonError {
                    code: self.kind.code(),
                    message: &self.message,
                    field: self.field,
                },
            });
        }
        if self.kind == ErrorKind::Unauthorized {
            return HttpResponse::SeeOther()
                .insert_header((header::LOCATION, self.login_location()))
                .finish();
        }
        let page = ErrorPage {
            title: status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        html(status, &page)
    }
}

/// Renders a template with a status; a rendering failure becomes a plain 500.
pub fn html(status: StatusCode, tpl: &impl Template) -> HttpResponse {
    match tpl.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("virtdeck could not render this page; the server log has the details.")
        }
    }
}
