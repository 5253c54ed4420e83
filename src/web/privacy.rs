//! Keeping secrets out of logs and caches: the request log's span (built here, with the
//! request target redacted by [`redact_target`]: `/ks/<token>` → `/ks/…`, `ticket=` and
//! `token=` values → `…`), and `Cache-Control: no-store` on every answer except static
//! assets.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use std::borrow::Cow;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

/// What a redacted secret is replaced with.
const REDACTED: &str = "…";

/// Query parameters whose values are credentials: console tickets, the setup token.
const SECRET_PARAMS: &[&str] = &["ticket", "token"];

/// Path segments after which the next segment is a credential (`/ks/{token}`).
const SECRET_AFTER_SEGMENT: &[&str] = &["ks"];

/// The request target (path and query) as the log may show it: the kickstart token in
/// `/ks/<token>` and the values of `ticket=` and `token=` are replaced with `…`.
/// Everything else is kept as sent.
pub fn redact_target(target: &str) -> Cow<'_, str> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut changed = false;
    let mut out_path = String::with_capacity(path.len());
    let mut secret_next = false;
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out_path.push('/');
        }
        if secret_next && !segment.is_empty() {
            out_path.push_str(REDACTED);
            changed = true;
            secret_next = false;
            continue;
        }
        out_path.push_str(segment);
        if !segment.is_empty() {
            let decoded = percent_decoded(segment);
            secret_next = SECRET_AFTER_SEGMENT
                .iter()
                .any(|s| decoded.eq_ignore_ascii_case(s));
        }
    }
    let mut out_query = String::new();
    if let Some(q) = query {
        for (i, pair) in q.split('&').enumerate() {
            if i > 0 {
                out_query.push('&');
            }
            match pair.split_once('=') {
                Some((key, value))
                    if !value.is_empty()
                        && SECRET_PARAMS
                            .iter()
                            .any(|s| percent_decoded(key).eq_ignore_ascii_case(s)) =>
                {
                    out_query.push_str(key);
                    out_query.push('=');
                    out_query.push_str(REDACTED);
                    changed = true;
                }
                _ => out_query.push_str(pair),
            }
        }
    }
    if !changed {
        return Cow::Borrowed(target);
    }
    Cow::Owned(match query {
        Some(_) => format!("{out_path}?{out_query}"),
        None => out_path,
    })
}

/// `s` with `%XX` escapes decoded (invalid escapes kept as written), for comparing names.
fn percent_decoded(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The request logger: tracing-actix-web's, with [`RedactedRootSpan`].
pub type RequestLogger = tracing_actix_web::TracingLogger<RedactedRootSpan>;

/// The request log's root span: the fields of tracing-actix-web's default span, with the
/// target passed through [`redact_target`] (the only way the request's path and query
/// reach the log).
pub struct RedactedRootSpan;

impl RootSpanBuilder for RedactedRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let target = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("");
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let info = request.connection_info();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %route,
            http.flavor = ?request.version(),
            http.scheme = %info.scheme(),
            http.host = %info.host(),
            http.client_ip = %info.realip_remote_addr().unwrap_or(""),
            http.user_agent = %user_agent,
            http.target = %redact_target(target),
            http.status_code = tracing::field::Empty,
            otel.name = %format!("{} {}", request.method(), route),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            exception.message = tracing::field::Empty,
            exception.details = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// Whether an answer to a request for `path` may be kept by caches: static assets only.
pub fn cacheable_path(path: &str) -> bool {
    path.starts_with("/static/")
}

/// Every answer except static assets goes out with `Cache-Control: no-store`: pages and
/// JSON for signed-in users (an API token shown once, kickstarts, the audit log), and the
/// sign-in and set-up pages. An answer that already says `no-store` keeps its own value.
pub async fn no_store(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let cacheable = cacheable_path(req.path());
    let mut res = next.call(req).await?;
    if !cacheable {
        let has_no_store = res
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("no-store"));
        if !has_no_store {
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kickstart_tokens_are_redacted() {
        assert_eq!(redact_target("/ks/abcDEF123"), "/ks/…");
        assert_eq!(redact_target("/ks/abc/"), "/ks/…/");
        assert_eq!(redact_target("//ks/abc"), "//ks/…");
        assert_eq!(redact_target("/KS/abc"), "/KS/…");
        assert_eq!(redact_target("/%6Bs/abc"), "/%6Bs/…");
        assert_eq!(redact_target("/ks/abc?x=1"), "/ks/…?x=1");
        // Nothing to hide: the same string comes back, unchanged and not copied.
        assert!(matches!(
            redact_target("/kickstarts/fedora.ks"),
            Cow::Borrowed("/kickstarts/fedora.ks")
        ));
        assert_eq!(redact_target("/ks"), "/ks");
        assert_eq!(redact_target("/ks/"), "/ks/");
        assert_eq!(redact_target(""), "");
    }

    #[test]
    fn tickets_and_tokens_in_queries_are_redacted() {
        assert_eq!(
            redact_target("/vms/web1/console/vnc/ws?ticket=s3cret"),
            "/vms/web1/console/vnc/ws?ticket=…"
        );
        assert_eq!(
            redact_target("/x?a=1&ticket=s3cret&b=2"),
            "/x?a=1&ticket=…&b=2"
        );
        assert_eq!(redact_target("/setup?token=abc"), "/setup?token=…");
        assert_eq!(redact_target("/x?TICKET=abc"), "/x?TICKET=…");
        assert_eq!(redact_target("/x?%74icket=abc"), "/x?%74icket=…");
        assert_eq!(
            redact_target("/x?ticket=a&ticket=b"),
            "/x?ticket=…&ticket=…"
        );
        assert_eq!(
            redact_target("/audit?page=2&user=bob"),
            "/audit?page=2&user=bob"
        );
        assert_eq!(redact_target("/x?ticket="), "/x?ticket=");
        assert_eq!(redact_target("/x?tickets=abc"), "/x?tickets=abc");
    }

    #[test]
    fn only_static_assets_may_be_cached() {
        assert!(cacheable_path("/static/style.css"));
        for p in [
            "/",
            "/login",
            "/setup",
            "/users",
            "/api/v1/kickstarts",
            "/staticx",
        ] {
            assert!(!cacheable_path(p), "{p}");
        }
    }
}
