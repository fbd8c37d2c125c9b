//! [`ResponseFuture`]: collect the body, resolve credentials, verify, then call the inner
//! service or answer with a rejection.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::SystemTime,
};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, header, request::Parts};
use http_body::Body;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{
    BoxError, ResolveCredentials,
    body::{ResponseBody, VerifiedBody},
    context::VerifiedWebhook,
    events::{
        OnSecurityEvent, Outcome, SecurityEvent, Severity,
        log::{OnWebhook, WebhookLogEntry, WebhookStage, next_id},
    },
    form::Params,
    layer::Shared,
    public_url::Resolved,
    rejection::{Rejection, RejectionKind, RejectionResponse},
    resolver::{Credentials, Resolution, ResolveRequest},
    signature::{IDEMPOTENCY_TOKEN_HEADER, SIGNATURE_HEADER},
    url::redact_userinfo,
    verify::WebhookRequest,
};

pin_project! {
    /// The response future of [`TwilioSignature`](crate::TwilioSignature): a state machine
    /// that reads the body, resolves credentials, verifies, and then runs the inner service or
    /// answers with the rejection response. Nothing is boxed.
    pub struct ResponseFuture<S, R, E, T, B>
    where
        S: Service<Request<VerifiedBody>>,
        R: ResolveCredentials,
    {
        #[pin]
        state: State<B, R::Future, S::Future, S, R>,
        shared: Arc<Shared<E, T>>,
        log: Option<LogGuard>,
    }
}

/// Reports one webhook's lifecycle to the webhook log, and its end even if the future is
/// dropped before it completes (the client went away): nothing goes unrecorded.
struct LogGuard {
    log: Arc<dyn OnWebhook + Send + Sync>,
    entry: WebhookLogEntry,
    finished: bool,
}

impl LogGuard {
    fn received(log: &Arc<dyn OnWebhook + Send + Sync>, parts: &Parts) -> Self {
        let entry = WebhookLogEntry {
            id: next_id(),
            stage: WebhookStage::Received,
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned()),
            received_at: SystemTime::now(),
            tenant_id: None,
            account_sid: None,
            webhook: None,
        };
        log.on_webhook(&entry);
        Self {
            log: Arc::clone(log),
            entry,
            finished: false,
        }
    }

    fn stage(&mut self, stage: WebhookStage) {
        if self.finished {
            return;
        }
        self.entry.stage = stage;
        self.finished = stage.is_final();
        self.log.on_webhook(&self.entry);
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.stage(WebhookStage::Failed(None));
    }
}

fn log_stage(log: &mut Option<LogGuard>, stage: WebhookStage) {
    if let Some(log) = log {
        log.stage(stage);
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B, RF, SF, S, R> {
        Collecting {
            #[pin]
            body: B,
            buffer: BodyBuffer,
            request: Option<Pending<S, R>>,
        },
        Resolving {
            #[pin]
            future: RF,
            request: Option<Pending<S, R>>,
        },
        Inner {
            #[pin]
            future: SF,
        },
        Rejected {
            response: Option<Response<Bytes>>,
        },
    }
}

/// Everything the future carries between states about the request in flight.
struct Pending<S, R> {
    inner: S,
    resolver: R,
    /// `None` while the resolver holds them (inside `view`).
    parts: Option<Parts>,
    view: Option<ResolveRequest>,
    public: Resolved,
    body: Bytes,
    params: Option<Params>,
    account_sid: Option<String>,
    shared_key_id: Option<String>,
}

/// The body read so far: no copy when it arrives in one chunk.
#[derive(Default)]
enum BodyBuffer {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl BodyBuffer {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(bytes) => bytes.len(),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(chunk),
            Self::One(first) => {
                let mut many = BytesMut::with_capacity(first.len() + chunk.len());
                many.extend_from_slice(&first);
                many.extend_from_slice(&chunk);
                Self::Many(many)
            }
            Self::Many(mut many) => {
                many.extend_from_slice(&chunk);
                Self::Many(many)
            }
        };
    }

    fn freeze(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(bytes) => bytes,
            Self::Many(bytes) => bytes.freeze(),
        }
    }
}

impl<S, R, E, T, B, ResBody> ResponseFuture<S, R, E, T, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent,
    T: RejectionResponse,
    B: Body,
    B::Error: Into<BoxError>,
{
    /// The synchronous part of `call`: the checks that need no body.
    pub(crate) fn start(
        request: Request<B>,
        inner: S,
        resolver: R,
        shared: Arc<Shared<E, T>>,
    ) -> Self {
        let (parts, body) = request.into_parts();
        let config = &shared.config;
        let log = config
            .webhook_log
            .as_ref()
            .map(|log| LogGuard::received(log, &parts));
        let peer = (config.peer_addr)(&parts.extensions);
        let Ok(public) = config.public_url.reconstruct(&parts, peer) else {
            let fallback = Resolved::new(parts.uri.to_string(), peer);
            let kind = RejectionKind::UnresolvableUrl;
            return Self::rejected(shared, log, &parts, &fallback, kind);
        };
        // Before reading the body: no method but GET and POST can be Twilio's.
        if !config.report_only
            && let Err(error) = crate::verify::check_method(&parts.method)
        {
            return Self::rejected(shared, log, &parts, &public, error.into());
        }
        // In report-only mode an unsigned request is still passed on, so its body is read.
        if !config.report_only && !parts.headers.contains_key(SIGNATURE_HEADER) {
            return Self::rejected(
                shared,
                log,
                &parts,
                &public,
                RejectionKind::MissingSignature,
            );
        }
        // Refuse by Content-Length (hyper reports it as the exact size hint) before reading.
        if body.size_hint().lower() > config.max_body_size as u64 {
            return Self::rejected(shared, log, &parts, &public, RejectionKind::BodyTooLarge);
        }
        Self {
            state: State::Collecting {
                body,
                buffer: BodyBuffer::Empty,
                request: Some(Pending {
                    inner,
                    resolver,
                    parts: Some(parts),
                    view: None,
                    public,
                    body: Bytes::new(),
                    params: None,
                    account_sid: None,
                    shared_key_id: None,
                }),
            },
            shared,
            log,
        }
    }

    fn rejected(
        shared: Arc<Shared<E, T>>,
        mut log: Option<LogGuard>,
        parts: &Parts,
        public: &Resolved,
        kind: RejectionKind,
    ) -> Self {
        let response = reject(&shared, &mut log, parts, public, kind, None, None, None);
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            shared,
            log,
        }
    }
}

/// Refuses a request: one security event, the webhook log's final stage, and the rejection
/// response with the [`Rejection`] in its extensions.
#[allow(clippy::too_many_arguments)]
fn reject<E, T>(
    shared: &Shared<E, T>,
    log: &mut Option<LogGuard>,
    parts: &Parts,
    public: &Resolved,
    kind: RejectionKind,
    source: Option<BoxError>,
    tenant_id: Option<Arc<str>>,
    account_sid: Option<String>,
) -> Response<Bytes>
where
    E: OnSecurityEvent,
    T: RejectionResponse,
{
    if let Some(log) = log {
        log.entry.tenant_id.clone_from(&tenant_id);
        log.entry.account_sid.clone_from(&account_sid);
    }
    emit(
        shared,
        parts,
        public,
        kind,
        Outcome::Rejected,
        tenant_id,
        account_sid,
    );
    log_stage(log, WebhookStage::Rejected(kind));
    let rejection = match source {
        Some(source) => Rejection::with_source(kind, source),
        None => Rejection::new(kind),
    };
    let mut response = shared.rejection.rejection_response(&rejection);
    response.extensions_mut().insert(rejection);
    response
}

/// Builds and sends one security event.
fn emit<E, T>(
    shared: &Shared<E, T>,
    parts: &Parts,
    public: &Resolved,
    reason: RejectionKind,
    outcome: Outcome,
    tenant_id: Option<Arc<str>>,
    account_sid: Option<String>,
) where
    E: OnSecurityEvent,
{
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    let event = SecurityEvent {
        reason,
        outcome,
        severity: Severity::of(reason, outcome),
        provider: "twilio",
        tenant_id,
        account_sid,
        client_ip: public.client_ip,
        url: redact_userinfo(&public.url).into_owned(),
        method: parts.method.clone(),
        user_agent: header(header::USER_AGENT.as_str()),
        request_id: header("x-request-id"),
        timestamp: SystemTime::now(),
    };
    shared.sink.on_security_event(&event);
}

/// The one `AccountSid` a request names: see [`crate::account::named_account_sid`].
fn find_account_sid(
    params: Option<&Params>,
    parts: &Parts,
    body: &[u8],
) -> Result<Option<String>, crate::account::AccountError> {
    let json = is_json(&parts.headers).then_some(body);
    crate::account::named_account_sid(params, parts.uri.query(), json)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        let essence = ct
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        essence.eq_ignore_ascii_case(b"application/json")
            || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
    })
}

/// What to do next.
enum Decision<SF, RF = std::future::Pending<()>> {
    Resolve(RF),
    Call(SF),
    Reject(Response<Bytes>),
}

impl<S, R> Pending<S, R>
where
    S: Service<Request<VerifiedBody>>,
    R: ResolveCredentials,
{
    /// The body is in: parse what the resolver needs and ask it.
    fn begin_resolve<E, T>(
        &mut self,
        shared: &Shared<E, T>,
        log: &mut Option<LogGuard>,
    ) -> Decision<S::Future, R::Future>
    where
        E: OnSecurityEvent,
        T: RejectionResponse,
    {
        let parts = self
            .parts
            .take()
            .expect("parts are present until resolution");
        let request =
            WebhookRequest::from_parts(&parts.method, &self.public.url, &parts.headers, &self.body);
        let shared_key_id = match request.signature_settings_header() {
            Ok(None) => None,
            // A SharedKey request must say which key, or no secret can be chosen for it.
            Ok(Some(settings)) => match settings.key_id() {
                Some(id) if crate::account::is_shared_key_id(id) => Some(id.to_owned()),
                Some(_) => {
                    let kind = RejectionKind::InvalidSharedKeyId;
                    return self.fail(shared, log, parts, kind, None, None);
                }
                None => {
                    let kind = RejectionKind::MalformedSettings;
                    return self.fail(shared, log, parts, kind, None, None);
                }
            },
            Err(error) => return self.fail(shared, log, parts, error.into(), None, None),
        };
        // Everything that needs no secret, before the (possibly remote) lookup.
        if let Err(error) = request.check_without_secrets() {
            return self.fail(shared, log, parts, error.into(), None, None);
        }
        let is_form = request.is_form();
        self.params = if is_form {
            Some(Params::parse(&self.body))
        } else if parts.method == http::Method::GET {
            Some(Params::parse(
                parts.uri.query().unwrap_or_default().as_bytes(),
            ))
        } else {
            None
        };
        self.account_sid =
            match find_account_sid(self.params.as_ref().filter(|_| is_form), &parts, &self.body) {
                Ok(sid) => sid,
                Err(error) => return self.fail(shared, log, parts, error.into(), None, None),
            };
        self.shared_key_id = shared_key_id.clone();
        let view = ResolveRequest::from_request(parts, self.account_sid.clone(), shared_key_id);
        let future = self.resolver.resolve(view.clone());
        self.view = Some(view);
        Decision::Resolve(future)
    }

    /// The resolver answered: verify and decide.
    fn finish<E, T>(
        &mut self,
        shared: &Shared<E, T>,
        log: &mut Option<LogGuard>,
        resolution: Resolution,
    ) -> Decision<S::Future, R::Future>
    where
        E: OnSecurityEvent,
        T: RejectionResponse,
    {
        let parts = self
            .view
            .take()
            .expect("view is present while resolving")
            .into_parts();
        let unknown = if self.shared_key_id.is_some() {
            RejectionKind::UnknownSharedKey
        } else {
            RejectionKind::UnknownAccount
        };
        let credentials = match resolution {
            Err(error) => {
                return self.fail(
                    shared,
                    log,
                    parts,
                    RejectionKind::ResolverFailed,
                    Some(error),
                    None,
                );
            }
            Ok(None) => {
                self.equal_work(shared, &parts);
                return self.fail(shared, log, parts, unknown, None, None);
            }
            Ok(Some(credentials)) => credentials,
        };
        let key_id = self.shared_key_id.as_deref();
        // No allocation: the filter is re-run to name the one that matched.
        let applicable = || credentials.iter().filter(move |c| c.applies_to(key_id));
        if applicable().next().is_none() {
            self.equal_work(shared, &parts);
            return self.fail(shared, log, parts, unknown, None, Some(&credentials));
        }
        let mut request =
            WebhookRequest::from_parts(&parts.method, &self.public.url, &parts.headers, &self.body);
        if shared.config.exact_urls_only {
            request = request.exact_urls_only();
        }
        let params = self.params.as_ref().filter(|_| request.is_form());
        match request.verify_with_params(params, applicable().map(|c| c.secret())) {
            Ok(verified) => {
                let account_sid = match crate::account::bind_account(
                    credentials.account_sid(),
                    self.account_sid.as_deref(),
                    key_id.is_some(),
                ) {
                    Ok(account_sid) => account_sid.map(str::to_owned),
                    Err(error) => {
                        let kind = error.into();
                        return self.fail(shared, log, parts, kind, None, Some(&credentials));
                    }
                };
                let webhook = VerifiedWebhook {
                    account_sid,
                    tenant_id: credentials.tenant_arc().cloned(),
                    credential: Arc::clone(
                        applicable()
                            .nth(verified.secret_index)
                            .expect("the index of a secret that was tried")
                            .label_arc(),
                    ),
                    algorithm: verified.algorithm,
                    url_form: verified.url_form,
                    params: Arc::new(self.params.take().unwrap_or_default()),
                    idempotency_token: parts
                        .headers
                        .get(IDEMPOTENCY_TOKEN_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    url: redact_userinfo(&self.public.url).into(),
                };
                if let Some(log) = log {
                    log.entry.tenant_id.clone_from(&webhook.tenant_id);
                    log.entry.account_sid.clone_from(&webhook.account_sid);
                    log.entry.webhook = Some(webhook.clone());
                    log.stage(WebhookStage::Verified);
                }
                let mut parts = parts;
                parts.extensions.insert(webhook);
                Decision::Call(self.call_inner(parts))
            }
            Err(error) => self.fail(shared, log, parts, error.into(), None, Some(&credentials)),
        }
    }

    /// The HMAC work a known account with a wrong signature costs, done with a key nobody
    /// holds, so that the response time does not tell which accounts exist. The verdict is
    /// thrown away.
    fn equal_work<E, T>(&self, shared: &Shared<E, T>, parts: &Parts) {
        let mut request =
            WebhookRequest::from_parts(&parts.method, &self.public.url, &parts.headers, &self.body);
        if shared.config.exact_urls_only {
            request = request.exact_urls_only();
        }
        let params = self.params.as_ref().filter(|_| request.is_form());
        let dummy = crate::secret::dummy();
        std::hint::black_box(request.verify_with_params(params, [dummy]).is_ok());
    }

    /// Verification failed: reject, or in report-only mode report and pass on.
    fn fail<E, T>(
        &mut self,
        shared: &Shared<E, T>,
        log: &mut Option<LogGuard>,
        parts: Parts,
        kind: RejectionKind,
        source: Option<BoxError>,
        credentials: Option<&Credentials>,
    ) -> Decision<S::Future, R::Future>
    where
        E: OnSecurityEvent,
        T: RejectionResponse,
    {
        let tenant = credentials.and_then(|c| c.tenant_arc().cloned());
        let account_sid = self.account_sid.clone();
        if shared.config.report_only {
            let outcome = Outcome::PassedInReportOnlyMode;
            if let Some(log) = log {
                log.entry.tenant_id.clone_from(&tenant);
                log.entry.account_sid.clone_from(&account_sid);
            }
            emit(
                shared,
                &parts,
                &self.public,
                kind,
                outcome,
                tenant,
                account_sid,
            );
            log_stage(log, WebhookStage::PassedInReportOnlyMode(kind));
            return Decision::Call(self.call_inner(parts));
        }
        let public = &self.public;
        Decision::Reject(reject(
            shared,
            log,
            &parts,
            public,
            kind,
            source,
            tenant,
            account_sid,
        ))
    }

    fn call_inner(&mut self, parts: Parts) -> S::Future {
        let body = VerifiedBody::new(std::mem::take(&mut self.body));
        self.inner.call(Request::from_parts(parts, body))
    }
}

impl<S, R, E, T, B, ResBody> Future for ResponseFuture<S, R, E, T, B>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    R: ResolveCredentials,
    E: OnSecurityEvent,
    T: RejectionResponse,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Collecting {
                    mut body,
                    buffer,
                    request,
                } => {
                    let limit = this.shared.config.max_body_size;
                    let failure = loop {
                        match ready!(body.as_mut().poll_frame(cx)) {
                            None => break None,
                            Some(Ok(frame)) => {
                                let Ok(mut data) = frame.into_data() else {
                                    continue; // trailers
                                };
                                if buffer.len() + data.remaining() > limit {
                                    break Some((RejectionKind::BodyTooLarge, None));
                                }
                                buffer.push(data.copy_to_bytes(data.remaining()));
                            }
                            Some(Err(error)) => {
                                break Some((RejectionKind::BodyReadFailed, Some(error.into())));
                            }
                        }
                    };
                    let mut pending = request.take().expect("polled after completion");
                    if let Some((kind, source)) = failure {
                        let parts = pending
                            .parts
                            .take()
                            .expect("parts are present while collecting");
                        // Nothing to pass on, even in report-only mode.
                        let public = &pending.public;
                        let response = reject(
                            this.shared,
                            this.log,
                            &parts,
                            public,
                            kind,
                            source,
                            None,
                            None,
                        );
                        this.state.set(State::Rejected {
                            response: Some(response),
                        });
                        continue;
                    }
                    pending.body = std::mem::take(buffer).freeze();
                    match pending.begin_resolve(this.shared, this.log) {
                        Decision::Resolve(future) => this.state.set(State::Resolving {
                            future,
                            request: Some(pending),
                        }),
                        Decision::Call(future) => this.state.set(State::Inner { future }),
                        Decision::Reject(response) => this.state.set(State::Rejected {
                            response: Some(response),
                        }),
                    }
                }
                StateProj::Resolving { future, request } => {
                    let resolution = ready!(future.poll(cx));
                    let mut pending = request.take().expect("polled after completion");
                    // Drop the resolver's future first so that it releases the request view.
                    this.state.set(State::Rejected { response: None });
                    match pending.finish(this.shared, this.log, resolution) {
                        Decision::Resolve(_) => unreachable!("a resolution does not resolve again"),
                        Decision::Call(future) => this.state.set(State::Inner { future }),
                        Decision::Reject(response) => this.state.set(State::Rejected {
                            response: Some(response),
                        }),
                    }
                }
                StateProj::Inner { future } => {
                    let result = ready!(future.poll(cx));
                    let stage = match &result {
                        Ok(response)
                            if !response.status().is_client_error()
                                && !response.status().is_server_error() =>
                        {
                            WebhookStage::Processed(response.status())
                        }
                        Ok(response) => WebhookStage::Failed(Some(response.status())),
                        Err(_) => WebhookStage::Failed(None),
                    };
                    log_stage(this.log, stage);
                    return Poll::Ready(result.map(|response| response.map(ResponseBody::inner)));
                }
                StateProj::Rejected { response } => {
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
            }
        }
    }
}
