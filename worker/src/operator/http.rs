//! The operator controls over HTTP, for consoles, on the worker's
//! `--http-addr`, only when `--admin-token` is set:
//!
//! - `GET /schedules/{trace_id}`: the status view, as `celerity status --json`;
//! - `POST /schedules/{trace_id}/pause|resume|stop`, with an optional JSON
//!   body `{"reason": "...", "actor": "..."}` (`reason` is required to stop).
//!
//! Every request carries `Authorization: Bearer <token>`; the token is
//! compared in constant time, and a missing or wrong one gets 401 and a log
//! line that does not contain it. Bad input gets a 4xx that says what is
//! wrong and changes nothing: a malformed trace id or body 400, an unknown
//! schedule 404, a body over [`MAX_BODY`] 413; a refused action is 409.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use celerity_db::DbError;
use celerity_db::operator::{Action, Done};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{Controls, actor, view};

/// Largest request body: a reason and a name fit many times over.
pub const MAX_BODY: usize = 16 * 1024;

/// The controls and the token that guards them.
struct Admin {
    controls: Controls,
    token: String,
}

/// The `/schedules` routes, guarded by `token`.
pub fn routes(controls: Controls, token: String) -> Router {
    let admin = Arc::new(Admin { controls, token });
    Router::new()
        .route("/schedules/{trace_id}", get(show))
        .route("/schedules/{trace_id}/{action}", post(act))
        .layer(middleware::from_fn_with_state(admin.clone(), authorise))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(admin)
}

/// Whether `headers` carry the bearer token, compared in constant time.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

async fn authorise(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if has_token(request.headers(), &admin.token) {
        return next.run(request).await;
    }
    let why = if request.headers().contains_key(header::AUTHORIZATION) { "a wrong token" } else { "no token" };
    tracing::warn!(%peer, method = %request.method(), path = %request.uri().path(), "operator control refused: {why}");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        json_error("a bearer token (--admin-token) is required"),
    )
        .into_response()
}

/// The optional body of a control.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// Why.
    #[serde(default)]
    reason: Option<String>,
    /// Who, as the console names its user.
    #[serde(default)]
    actor: Option<String>,
}

fn json_error(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

fn reply(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn bad(status: StatusCode, message: &str) -> Response {
    reply(status, json_error(message))
}

/// A trace id as the framework makes them: up to 33 letters, digits, `-` or `_`.
fn is_trace_id(trace_id: &str) -> bool {
    !trace_id.is_empty()
        && trace_id.len() <= 33
        && trace_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn not_a_trace_id() -> Response {
    bad(StatusCode::BAD_REQUEST, "not a trace id: up to 33 letters, digits, - or _")
}

fn db_failed(e: &DbError) -> Response {
    tracing::warn!(error = %e, "operator control: database error");
    bad(StatusCode::SERVICE_UNAVAILABLE, &format!("database: {e}"))
}

async fn show(State(admin): State<Arc<Admin>>, Path(trace_id): Path<String>) -> Response {
    if !is_trace_id(&trace_id) {
        return not_a_trace_id();
    }
    let id = trace_id.clone();
    match admin.controls.db().call(move |c| view::schedule(c, &id)).await {
        Ok(status) => reply(StatusCode::OK, serde_json::to_string(&status).expect("the status view serialises")),
        Err(DbError::NotFound(_)) => bad(StatusCode::NOT_FOUND, "no schedule has this trace id"),
        Err(e) => db_failed(&e),
    }
}

async fn act(
    State(admin): State<Arc<Admin>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((trace_id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "stop" => Action::Stop,
        _ => return bad(StatusCode::NOT_FOUND, "no such control: pause, resume or stop"),
    };
    if !is_trace_id(&trace_id) {
        return not_a_trace_id();
    }
    let body: Body = if body.iter().all(u8::is_ascii_whitespace) {
        Body::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(e) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    &format!("the body is not a JSON object of reason and actor: {e}"),
                );
            }
        }
    };
    let reason = body.reason.unwrap_or_default();
    if action == Action::Stop && reason.trim().is_empty() {
        return bad(StatusCode::BAD_REQUEST, "stop needs a reason: {\"reason\": \"...\"}");
    }
    if body.actor.as_ref().is_some_and(|a| a.chars().count() > actor::MAX_HTTP_NAME) {
        let longest = actor::MAX_HTTP_NAME;
        return bad(StatusCode::BAD_REQUEST, &format!("actor is longer than {longest} characters"));
    }
    let who = actor::http(peer, body.actor.as_deref());
    let report = match admin.controls.act(action, std::slice::from_ref(&trace_id), &who, &reason).await {
        Ok(mut reports) => reports.remove(0),
        Err((_, e)) => return db_failed(&e),
    };
    let status = match report.done {
        Done::Changed { .. } | Done::Unchanged { .. } => StatusCode::OK,
        Done::NoSuchSchedule => return bad(StatusCode::NOT_FOUND, "no schedule has this trace id"),
        Done::Refused { .. } | Done::Invalid(_) => StatusCode::CONFLICT,
    };
    reply(status, serde_json::to_string(&report.view()).expect("the report serialises"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let mut headers = HeaderMap::new();
        assert!(!has_token(&headers, "s3cret"));
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "bearer s3cret", "s3cret", "Basic s3cret", "Bearer "] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(wrong));
            assert!(!has_token(&headers, "s3cret"), "{wrong}");
        }
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(has_token(&headers, "s3cret"));
    }

    #[test]
    fn trace_ids_are_checked_before_the_database_is_asked() {
        assert!(is_trace_id("0123456789abcdef0123456789abcdef"));
        for bad in ["", "x".repeat(34).as_str(), "a b", "a'; DROP TABLE x", "ü"] {
            assert!(!is_trace_id(bad), "{bad}");
        }
    }
}
