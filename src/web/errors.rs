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
    /// The one mapping of an error's kind to an HTTP status.
    pub fn status(self) -> StatusCode {
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

    /// The code JSON answers carry.
    pub fn code(self) -> ErrorCode {
        match self {
            ErrorKind::BadRequest => ErrorCode::BadRequest,
            ErrorKind::Unauthorized => ErrorCode::Unauthorized,
            ErrorKind::Forbidden => ErrorCode::Forbidden,
            ErrorKind::NotFound => ErrorCode::NotFound,
            ErrorKind::Conflict => ErrorCode::Conflict,
            ErrorKind::Unprocessable => ErrorCode::Invalid,
            ErrorKind::HypervisorFailed => ErrorCode::HypervisorFailed,
            ErrorKind::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ErrorKind::TooManyRequests => ErrorCode::TooManyRequests,
            ErrorKind::RequestTimeout => ErrorCode::RequestTimeout,
            ErrorKind::Unavailable => ErrorCode::Unavailable,
            ErrorKind::Internal => ErrorCode::Internal,
        }
    }
}

/// An error answer: an HTML page, or JSON under `/api/` ([`api_errors_as_json`]).
#[derive(Debug)]
pub struct AppError {
    pub kind: ErrorKind,
    pub message: String,
    pub field: Option<&'static str>,
    /// libvirt's error number, when libvirt refused the step (API answers carry it).
    pub libvirt_code: Option<u32>,
    /// For a sign-in redirect: the page (path and query) to come back to after sign-in.
    pub next: Option<String>,
}

impl AppError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AppError {
            kind,
            message: message.into(),
            field: None,
            libvirt_code: None,
            next: None,
        }
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

impl AppError {
    /// 422 with the first of a change's field errors (its message, at its field).
    fn at_first_field(mut errors: impl Iterator<Item = (&'static str, String)>) -> Self {
        match errors.next() {
            Some((field, message)) => AppError::new(ErrorKind::Unprocessable, message).field(field),
            None => AppError::new(ErrorKind::Unprocessable, String::new()),
        }
    }
}

impl From<crate::hostcfg::ChangeError> for AppError {
    fn from(e: crate::hostcfg::ChangeError) -> Self {
        use crate::hostcfg::ChangeError as C;
        match e {
            C::Invalid(errors) => {
                AppError::at_first_field(errors.into_iter().map(|f| (f.field, f.message)))
            }
            C::NotFound(m) => AppError::not_found(m),
            C::Conflict(m) | C::Stale(m) => AppError::new(ErrorKind::Conflict, m),
            C::Failed { message } => AppError::new(ErrorKind::HypervisorFailed, message),
            C::Io(m) => AppError::internal(anyhow::anyhow!(m)),
        }
    }
}

impl From<crate::service::Denied> for AppError {
    fn from(d: crate::service::Denied) -> Self {
        AppError::forbidden(d.to_string())
    }
}

/// What kind of error a change's error is: the one place that decides, for pages and the
/// API alike, which status it answers with.
pub fn kind_of(e: &crate::lifecycle::LifecycleError) -> ErrorKind {
    use crate::lifecycle::LifecycleError as L;
    match e {
        L::Invalid(_) => ErrorKind::Unprocessable,
        L::Capacity(_) | L::Conflict(_) => ErrorKind::Conflict,
        L::Failed { .. } => ErrorKind::HypervisorFailed,
        L::NotFound(_) => ErrorKind::NotFound,
        L::Hypervisor(_) => ErrorKind::Unavailable,
        L::Store(_) => ErrorKind::Internal,
    }
}

impl From<crate::lifecycle::LifecycleError> for AppError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as L;
        match e {
            L::Invalid(errors) => {
                AppError::at_first_field(errors.into_iter().map(|f| (f.field, f.message)))
            }
            L::Capacity(c) => AppError::new(ErrorKind::Conflict, c.to_string()),
            L::Failed { message, cause } => {
                let mut a = AppError::new(ErrorKind::HypervisorFailed, message);
                if let Some(cause) = cause {
                    tracing::warn!(error = %cause, "a step failed in libvirt");
                    a.libvirt_code = cause.libvirt_code();
                }
                a
            }
            L::NotFound(m) => AppError::not_found(m),
            L::Conflict(m) => AppError::new(ErrorKind::Conflict, m),
            L::Hypervisor(h) => {
                let code = h.libvirt_code();
                let mut a = AppError::hypervisor(h);
                a.libvirt_code = code;
                a
            }
            L::Store(s) => AppError::internal(s.into()),
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every error answer under `/api/`: `{"error": {…}}` (the OpenAPI document's
/// `ApiError`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    pub error: ApiErrorDetail,
}

/// What went wrong, in a sentence that says what to do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// The request field the error is about (validation errors, some refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// libvirt's own error number, when libvirt refused a step.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub libvirt_code: Option<u32>,
    /// Every field error of a refused VM, volume, template or fleet request (422), the
    /// first of which is `field` and `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<Vec<ApiFieldError>>,
    /// Every field error of a refused host network or kernel settings plan (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fields: Option<Vec<ApiFieldError>>,
}

/// One problem with one field of a request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiFieldError {
    pub field: String,
    pub message: String,
}

impl ApiFieldError {
    pub fn of(field: &str, message: &str) -> Self {
        ApiFieldError {
            field: field.to_string(),
            message: message.to_string(),
        }
    }
}

/// An error's code in JSON answers (one per HTTP status, see [`ErrorKind::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    Invalid,
    HypervisorFailed,
    PayloadTooLarge,
    TooManyRequests,
    RequestTimeout,
    Unavailable,
    Internal,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl AppError {
    /// The error as `/api/v1` answers it: `{"error": {"code", "message", "field"}}`.
    pub fn json_response(&self) -> HttpResponse {
        HttpResponse::build(self.kind.status()).json(ApiError {
            error: ApiErrorDetail {
                code: self.kind.code(),
                message: self.message.clone(),
                field: self.field.map(str::to_string),
                libvirt_code: self.libvirt_code,
                errors: None,
                fields: None,
            },
        })
    }
}

/// Middleware: every error answer under `/api/` is JSON, whichever handler or extractor
/// raised it (by scope, not by each handler remembering to ask for JSON).
pub async fn api_errors_as_json(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let api = req.path().starts_with("/api/");
    let res = next.call(req).await?;
    if !api {
        return Ok(res.map_into_boxed_body());
    }
    let json = res
        .response()
        .error()
        .map(|e| match e.as_error::<AppError>() {
            Some(app) => app.json_response(),
            // An extractor's own error (a path segment that is not a number, a body that is
            // not JSON): the same shape, with the status it chose.
            None => {
                let status = res.status();
                let kind = match status {
                    StatusCode::NOT_FOUND => ErrorKind::NotFound,
                    StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::PayloadTooLarge,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::BAD_REQUEST => {
                        ErrorKind::BadRequest
                    }
                    s if s.is_client_error() => ErrorKind::BadRequest,
                    _ => ErrorKind::Internal,
                };
                let message = if kind == ErrorKind::Internal {
                    tracing::error!(error = %e, "internal error");
                    "Something went wrong inside virtdeck; the server log has the details."
                        .to_string()
                } else {
                    e.to_string()
                };
                let mut answer = AppError::new(kind, message).json_response();
                *answer.status_mut() = status;
                answer
            }
        });
    Ok(match json {
        Some(answer) => res.into_response(answer).map_into_boxed_body(),
        None => res.map_into_boxed_body(),
    })
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.kind.status()
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.kind.status();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::HypervisorError;
    use crate::lifecycle::LifecycleError;

    /// A step libvirt refused keeps its cause: the chain has libvirt's error, and the API
    /// answer carries its number beside the sentence.
    #[test]
    fn a_libvirt_refusal_keeps_its_cause_and_number() {
        let cause = HypervisorError::Libvirt {
            operation: "start the domain",
            code: 55,
            message: "Requested operation is not valid: domain is already running".into(),
        };
        let e = LifecycleError::failed_because("Start failed: it runs already.", cause);
        assert_eq!(e.libvirt_code(), Some(55));
        let source = std::error::Error::source(&e).expect("the cause is kept");
        assert!(source.to_string().contains("libvirt error 55"), "{source}");

        let answer = AppError::from(e).json_response();
        assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
        let body = actix_web::body::to_bytes(answer.into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .expect("a JSON body is ready")
            .expect("readable");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["error"]["libvirt_code"], 55, "{v}");
        assert_eq!(v["error"]["message"], "Start failed: it runs already.");

        // A failure of virtdeck's own carries no number.
        let own = AppError::from(LifecycleError::failed("The admission lock is broken."));
        assert_eq!(own.libvirt_code, None);
    }
}
