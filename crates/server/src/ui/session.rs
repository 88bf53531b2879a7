//! The login with the server's token, the session cookie, and the one check of the CSRF token for every state-changing route.

use std::sync::Arc;

use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::*;
use crate::Server;

pub(super) fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_string)
        })
}

/// The session's CSRF token, if the request belongs to a session.
pub(super) fn csrf_of(server: &Server, headers: &HeaderMap) -> Option<String> {
    let sid = session_id(headers)?;
    server.session(&sid)
}

/// The largest form a page posts.
pub(super) const FORM_LIMIT: usize = 1 << 20;

/// Every page needs a session; every state-changing request (anything but GET and HEAD) also
/// needs the session's CSRF token, in the `x-csrf-token` header (set by the page's script) or
/// in the form's `csrf` field. Checked here once, for every route, so that no handler can
/// forget it.
pub(super) async fn session(
    State(server): State<Arc<Server>>,
    req: Request,
    next: Next,
) -> Response {
    // A page's background polling (`/live`) does not keep its session alive.
    let polling = req.uri().path().ends_with("/live");
    let csrf = session_id(req.headers()).and_then(|sid| server.session_used(&sid, !polling));
    let Some(csrf) = csrf else {
        return Redirect::to("/login").into_response();
    };
    if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let header = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response(),
    };
    let field = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    let given = header.or(field);
    if !given.is_some_and(|g| crate::constant_time_eq(g.as_bytes(), csrf.as_bytes())) {
        return (
            StatusCode::FORBIDDEN,
            "the form is stale or forged: reload the page",
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

pub(super) async fn login_page() -> Html<String> {
    page(
        "Log in",
        None,
        r#"<form method="post" action="/login" class="card"><label>Server token <input type="password" name="token" autocomplete="current-password" required></label>
<p class="hint">Printed by <code>sallyport serve</code> at first start, or set with SALLYPORT_TOKEN.</p><button>Log in</button></form>"#,
    )
}

/// Wrong tokens a client address may send within a minute before `/login` refuses it.
const LOGIN_ATTEMPTS: usize = 10;

/// Limits wrong tokens per client address: after [`LOGIN_ATTEMPTS`] within a minute, `/login`
/// answers 429 until the minute is over, right token or not.
pub(super) async fn login_limit(
    State(server): State<Arc<Server>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let window = std::time::Duration::from_secs(60);
    let recent = |now: std::time::Instant| {
        let mut all = server
            .login_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Every address's old failures go, and addresses with none left are forgotten: the
        // map holds only the last minute's failures, whoever sent them.
        all.retain(|_, list| {
            list.retain(|t| now.duration_since(*t) < window);
            !list.is_empty()
        });
        all.get(&client).map_or(0, Vec::len)
    };
    if recent(std::time::Instant::now()) >= LOGIN_ATTEMPTS {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            "too many wrong tokens from this address: wait a minute",
        )
            .into_response();
    }
    let resp = next.run(req).await;
    if resp.status() == StatusCode::UNAUTHORIZED {
        server
            .login_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(client)
            .or_default()
            .push(std::time::Instant::now());
    }
    resp
}

pub(super) async fn login(State(server): State<Arc<Server>>, Form(form): FormData) -> Response {
    let given = form.get("token").cloned().unwrap_or_default();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        format!("Bearer {given}")
            .parse()
            .unwrap_or(header::HeaderValue::from_static("")),
    );
    if !server.authorized(&headers) {
        let mut resp = page(
            "Log in",
            None,
            &format!(
                "{}{}",
                banner("error", "That is not the server's token."),
                r#"<form method="post" action="/login" class="card"><label>Server token <input type="password" name="token" required></label><button>Log in</button></form>"#
            ),
        )
        .into_response();
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return resp;
    }
    let sid = random_hex(24);
    server.new_session(sid.clone(), random_hex(16));
    (
        [(
            header::SET_COOKIE,
            format!(
                "{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200{}",
                if server
                    .behind_https
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    "; Secure"
                } else {
                    ""
                }
            ),
        )],
        Redirect::to("/syncs"),
    )
        .into_response()
}

pub(super) async fn logout(State(server): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if let Some(sid) = session_id(&headers) {
        server.end_session(&sid);
    }
    (
        [(header::SET_COOKIE, format!("{COOKIE}=; Max-Age=0; Path=/"))],
        Redirect::to("/login"),
    )
        .into_response()
}
