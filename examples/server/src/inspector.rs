//! The inspector page (`GET /`): the webhook log, live, for people testing with a real phone,
//! with buttons that send a signed and a forged test SMS to this server.
//!
//! # Safety of the page
//!
//! - Everything a request carried (path, query, user agent, `AccountSid`, …) reaches the page
//!   only as JSON from `/api/webhooks` and is inserted with `textContent`, never as HTML; the
//!   HTML itself holds nothing from any request.
//! - A strict Content-Security-Policy allows scripts, styles and requests from this origin only,
//!   and no inline script at all, so even a missed escape could not run injected script.
//! - The page's shell (the HTML, script and style, the same for everyone, with nothing from the
//!   database) answers to a known `Host` only; everything with data, and the buttons' `POST`s,
//!   need the admin token as a bearer header, which only this page's script sends: another
//!   site the operator visits cannot read anything or make the server send anything
//!   ([`admin`](crate::admin)).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, Uri, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;

use crate::{
    db::Db,
    demo,
    error::AppError,
    twilio_presets::{Body, Preset, Signer, random_hex, sign_request},
};

const PAGE: &str = include_str!("../assets/inspector.html");
const SCRIPT: &str = include_str!("../assets/inspector.js");
const STYLE: &str = include_str!("../assets/inspector.css");

/// No inline script or style, nothing from other origins, no framing, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// How long a test send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What the inspector's handlers share.
#[derive(Clone)]
pub struct Inspector {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// Where this server listens, for sending it the test webhooks.
    local_addr: SocketAddr,
    /// The public base URL signatures are made for; `None` behind trusted proxies.
    public_base: Option<String>,
    /// The tenant the test webhooks are signed for: the demo tenant, else the configured one.
    tenant: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("local_addr", &self.inner.local_addr)
            .field("public_base", &self.inner.public_base)
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// The inspector of the server listening on `local_addr`; test webhooks are signed for
    /// `public_base` with `tenant`'s token.
    pub fn new(
        db: Db,
        local_addr: SocketAddr,
        public_base: Option<String>,
        tenant: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                local_addr: crate::reachable(local_addr),
                public_base,
                tenant,
                client: Client::builder(TokioExecutor::new()).build_http(),
            }),
        }
    }

    /// The page's shell: `GET /` and its assets. Holds no data: the page asks for the admin
    /// token and reads everything through the API.
    pub fn shell() -> Router {
        Router::new()
            .route("/", get(page))
            .route("/inspector.js", get(script))
            .route("/inspector.css", get(style))
    }

    /// The two buttons' actions (behind the admin token).
    pub fn actions(&self) -> Router {
        Router::new()
            .route("/inspector/send-test", post(send_test))
            .route("/inspector/send-forged", post(send_forged))
            .with_state(self.clone())
    }
}

/// Headers every inspector response carries.
fn hardened(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn page() -> Response {
    hardened(PAGE.into_response(), "text/html; charset=utf-8")
}

async fn script() -> Response {
    hardened(SCRIPT.into_response(), "text/javascript; charset=utf-8")
}

async fn style() -> Response {
    hardened(STYLE.into_response(), "text/css; charset=utf-8")
}

/// What a test send answers: the status this server answered the test webhook with.
#[derive(Debug, Serialize)]
pub struct SendResult {
    status: u16,
}

async fn send_test(State(inspector): State<Inspector>) -> Result<Json<SendResult>, AppError> {
    send(&inspector, false).await
}

async fn send_forged(State(inspector): State<Inspector>) -> Result<Json<SendResult>, AppError> {
    send(&inspector, true).await
}

/// Sends this server an incoming-SMS webhook built and signed by the same code as the signing
/// tool (`examples/common/twilio_presets.rs`): with the tenant's real token, or, `forged`,
/// with a random one.
async fn send(inspector: &Inspector, forged: bool) -> Result<Json<SendResult>, AppError> {
    let inner = &inspector.inner;
    let base = inner.public_base.as_deref().ok_or(AppError::Conflict(
        "the public URL comes from proxy headers: send test webhooks through the proxy with \
         send_webhook instead",
    ))?;
    let tenant = inner
        .tenant
        .as_deref()
        .ok_or(AppError::Conflict("no tenant to sign a test webhook for"))?;
    let found = inner
        .db
        .tenant_token(tenant)
        .await?
        .ok_or(AppError::Conflict("the tenant has no auth token"))?;
    let account_sid = found.account_sid.unwrap_or_default();
    let token = if forged {
        random_hex(16)
    } else {
        found.auth_token
    };
    let mut params = Preset::Sms.params(&account_sid);
    if let Some((_, body)) = params.iter_mut().find(|(name, _)| name == "Body") {
        *body = if forged {
            "Forged from the inspector".to_owned()
        } else {
            "Hello from the inspector".to_owned()
        };
    }
    let signed = sign_request(
        &format!("{base}/twilio/sms"),
        Body::Form(params),
        Signer::AuthToken(token.as_bytes()),
    );
    // Sent to the listener, with the public URL's host, as a proxy in front would.
    let public = base
        .parse::<Uri>()
        .map_err(|error| AppError::SendFailed(error.into()))?;
    let mut request = Request::builder()
        .method(signed.method)
        .uri(format!(
            "http://{}{}",
            inner.local_addr,
            signed.path_and_query()
        ))
        .header(
            header::HOST,
            public
                .authority()
                .map_or("", |authority| authority.as_str()),
        );
    for (name, value) in &signed.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(Bytes::from(signed.body)))
        .map_err(|error| AppError::SendFailed(error.into()))?;
    let status = tokio::time::timeout(SEND_TIMEOUT, async {
        let response = inner.client.request(request).await?;
        let status = response.status();
        // Read to the end so the connection is reusable; the body itself is not needed.
        response.into_body().collect().await?;
        Ok::<_, tower_twilio::BoxError>(status)
    })
    .await
    .map_err(|_| AppError::SendTimedOut)?
    .map_err(AppError::SendFailed)?;
    Ok(Json(SendResult {
        status: status.as_u16(),
    }))
}

/// Which tenant test webhooks are signed for: the demo tenant when there is one, else the
/// tenant `TWILIO_ACCOUNT_SID` configured.
pub fn test_tenant(has_demo: bool, env_tenant: Option<&str>) -> Option<String> {
    if has_demo {
        Some(demo::TENANT_ID.to_owned())
    } else {
        env_tenant.map(str::to_owned)
    }
}
