//! [`TwilioSignatureLayer`]: the builder and `tower::Layer`.

use std::{fmt, net::IpAddr, num::NonZeroUsize, sync::Arc};

use http::{Extensions, Uri};
use tower_layer::Layer;

use crate::{
    PublicUrl,
    config::{Config, Shared},
    diagnoses::Doctor,
    events::{OnSecurityEvent, TracingSink, log::OnWebhook},
    rejection::DefaultRejectionResponse,
    service::TwilioSignature,
};

/// Verifies `X-Twilio-Signature` on every request before the inner service sees it.
///
/// See the [crate docs](crate) for an example. Configuration methods take typed arguments,
/// cannot fail and return the layer, so they chain.
///
/// The type parameters are the resolver `R`, the security-event sink `E` and the rejection
/// response `T`; the last two have defaults and change through
/// [`on_security_event`](Self::on_security_event) and
/// [`rejection_response`](Self::rejection_response).
///
/// Replays and retries are kept from the handler by a layer of its own placed after this one,
/// [`ReplayGuardLayer`](crate::replay_guard::ReplayGuardLayer).
#[must_use]
pub struct TwilioSignatureLayer<R, E = TracingSink, T = DefaultRejectionResponse> {
    resolver: R,
    config: Config,
    sink: E,
    rejection: T,
}

impl<R> TwilioSignatureLayer<R> {
    /// A layer that takes its secrets from `resolver` (a [`Credentials`](crate::Credentials)
    /// for a single account, or any [`ResolveCredentials`](crate::ResolveCredentials)).
    ///
    /// Defaults: the public URL is the request's own `Host` with `https` (set a fixed one with
    /// [`public_url`](Self::public_url)), a body limit of [`DEFAULT_MAX_BODY_SIZE`](crate::DEFAULT_MAX_BODY_SIZE), a limit of
    /// [`DEFAULT_MAX_PARAMS`](crate::form::DEFAULT_MAX_PARAMS) form parameters, events go to
    /// [`TracingSink`], rejections get [`DefaultRejectionResponse`], report-only mode is off.
    pub fn new(resolver: R) -> Self {
        Self {
            resolver,
            config: Config::default(),
            sink: TracingSink::new(),
            rejection: DefaultRejectionResponse,
        }
    }
}

impl<R, E, T> TwilioSignatureLayer<R, E, T> {
    /// Where the scheme, host, port and path prefix of the verified URL come from. Use
    /// [`PublicUrl::fixed`] with the URL you configured in Twilio.
    pub fn public_url(mut self, public_url: PublicUrl) -> Self {
        self.config.public_url = public_url;
        self
    }

    /// The largest body accepted, in bytes. A `Content-Length` above it is refused before the
    /// body is read; a body that streams past it is refused as soon as it does, without
    /// buffering more. Both get 413. [`DEFAULT_MAX_BODY_SIZE`](crate::DEFAULT_MAX_BODY_SIZE) unless set.
    ///
    /// ```
    /// use std::num::NonZeroUsize;
    /// use tower_twilio::{Credentials, TwilioSignatureLayer};
    ///
    /// let layer = TwilioSignatureLayer::new(Credentials::new())
    ///     .max_body_size(NonZeroUsize::new(256 * 1024).unwrap());
    /// # let _ = layer;
    /// ```
    pub fn max_body_size(mut self, limit: NonZeroUsize) -> Self {
        self.config.max_body_size = limit.get();
        self
    }

    /// The most parameters a form body (or a `GET`'s query) may hold: [`DEFAULT_MAX_PARAMS`]
    /// (1000) unless set. A request with more is refused with 413
    /// ([`RejectionKind::TooManyParameters`]) before its body is decoded or the resolver is
    /// asked, in report-only mode too. Decoding costs 32 bytes a parameter on top of the body
    /// (its index and sort keys), which this bounds whatever the body's shape; Twilio's own
    /// webhooks carry a few dozen.
    ///
    /// [`DEFAULT_MAX_PARAMS`]: crate::form::DEFAULT_MAX_PARAMS
    /// [`RejectionKind::TooManyParameters`]: crate::RejectionKind::TooManyParameters
    pub fn max_params(mut self, limit: NonZeroUsize) -> Self {
        self.config.max_params = limit.get();
        self
    }

    /// How to find the connecting peer's address in the request extensions: needed to trust
    /// forwarding headers from proxies, and for the client address in events. By default
    /// [`PeerAddr`](crate::PeerAddr) and a bare `SocketAddr` are looked for.
    ///
    /// ```
    /// use axum::extract::ConnectInfo;
    /// use std::net::SocketAddr;
    /// use tower_twilio::{Credentials, TwilioSignatureLayer};
    ///
    /// let layer = TwilioSignatureLayer::new(Credentials::new()).peer_addr_with(|ext| {
    ///     ext.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())
    /// });
    /// # let _ = layer;
    /// ```
    pub fn peer_addr_with<F>(mut self, peer_addr: F) -> Self
    where
        F: Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.config.peer_addr = Arc::new(peer_addr);
        self
    }

    /// Runs the [mismatch doctor](crate::doctor) on at most `per_second` requests a second
    /// refused for [`SignatureMismatch`](crate::RejectionKind::SignatureMismatch); 0, the
    /// default, turns it off. 20 a second is plenty to name a misconfiguration in the log.
    ///
    /// For each, the doctor tries a bounded set of
    /// other URLs built from the request (the other scheme, hosts and prefixes from forwarding
    /// headers, the original path, a trailing slash) with the secrets the resolver returned, and
    /// when one matches reports a [`Diagnosis`](crate::doctor::Diagnosis) — the URL Twilio
    /// signed and the `PublicUrl` to set.
    ///
    /// The doctor never runs on the request path: the request is refused at once, exactly as
    /// with the doctor off, and the diagnosis runs afterwards on a thread of the layer's own
    /// (started with the first one, ended when the layer and its services are dropped). Its
    /// result follows the refusal as a second security event
    /// ([`Outcome::Diagnosed`](crate::events::Outcome::Diagnosed)) and a webhook log entry
    /// ([`WebhookOutcome::Diagnosed`](crate::events::log::WebhookOutcome::Diagnosed)), with the
    /// same request id and log id. The verdict never changes and nothing of the diagnosis goes
    /// into the response.
    ///
    /// Bounded on every side: each diagnosis reads a few values of each forwarding header and
    /// computes at most [`doctor::MAX_HMACS`](crate::doctor::MAX_HMACS) signatures; at most
    /// `per_second` run a second, shared by every clone of the layer; at most 16 requests wait
    /// for one, and a request that finds the queue full is not diagnosed. A forged request for
    /// a known account is refused with the same work on the request path as one for an unknown
    /// account (see `docs/SECURITY.md`, "Equal work").
    ///
    /// ```
    /// use tower_twilio::{Credentials, PublicUrl, TwilioSignatureLayer};
    ///
    /// let layer = TwilioSignatureLayer::new(Credentials::new())
    ///     .public_url(PublicUrl::fixed("https://api.example.com")?)
    ///     .diagnose_mismatches_per_second(20);
    /// # let _ = layer;
    /// # Ok::<(), tower_twilio::ConfigError>(())
    /// ```
    pub fn diagnose_mismatches_per_second(mut self, per_second: u32) -> Self {
        self.config.diagnoses = (per_second > 0).then(|| Arc::new(Doctor::new(per_second)));
        self
    }

    /// Where to find the request target as it was before a router stripped a prefix from it,
    /// for the [mismatch doctor](Self::diagnose_mismatches_per_second): axum's `OriginalUri` under
    /// `Router::nest`. Verification itself always uses the request's own target.
    ///
    /// ```
    /// use axum::extract::OriginalUri;
    /// use tower_twilio::{Credentials, TwilioSignatureLayer};
    ///
    /// let layer = TwilioSignatureLayer::new(Credentials::new())
    ///     .diagnose_mismatches_per_second(20)
    ///     .original_uri_with(|ext| ext.get::<OriginalUri>().map(|original| original.0.clone()));
    /// # let _ = layer;
    /// ```
    pub fn original_uri_with<F>(mut self, original_uri: F) -> Self
    where
        F: Fn(&Extensions) -> Option<Uri> + Send + Sync + 'static,
    {
        self.config.original_uri = Some(Arc::new(original_uri));
        self
    }

    /// Accepts only the exact URL spellings (as received, port removed or default port
    /// added), not the re-serialised forms the official SDKs also accept. See
    /// [`WebhookRequest::exact_urls_only`](crate::verify::WebhookRequest::exact_urls_only).
    /// Off by default.
    pub fn exact_urls_only(mut self, enabled: bool) -> Self {
        self.config.exact_urls_only = enabled;
        self
    }

    /// Report-only mode, for rolling verification out on a live system: requests are verified
    /// and failures reported as events with [`Outcome::PassedInReportOnlyMode`]
    /// (critical severity), but passed on to the inner service instead of refused. Still
    /// refused: bodies over [`max_body_size`](Self::max_body_size) or with more parameters
    /// than [`max_params`](Self::max_params) (limits on resources hold in every mode),
    /// unreadable bodies and requests whose public URL cannot be rebuilt (there is nothing
    /// sound to pass on).
    ///
    /// **Off by default.** While it is on, nothing is protected; an `ERROR` is logged when the
    /// service is built so that it cannot go unnoticed.
    ///
    /// [`Outcome::PassedInReportOnlyMode`]: crate::events::Outcome::PassedInReportOnlyMode
    pub fn report_only(mut self, enabled: bool) -> Self {
        self.config.report_only = enabled;
        self
    }

    /// Records every webhook's lifecycle (received, verified or rejected, processed or failed
    /// with the inner service's status) in `log`. See [`OnWebhook`].
    ///
    /// ```
    /// use tower_twilio::{Credentials, TwilioSignatureLayer, events::log::WebhookLogEntry};
    ///
    /// let layer = TwilioSignatureLayer::new(Credentials::new()).on_webhook(|entry: &WebhookLogEntry| {
    ///     println!("webhook {} {} {}", entry.id, entry.path, entry.outcome.as_str());
    /// });
    /// # let _ = layer;
    /// ```
    pub fn on_webhook<L>(mut self, log: L) -> Self
    where
        L: OnWebhook + Send + Sync + 'static,
    {
        self.config.webhook_log = Some(Arc::new(log));
        self
    }

    /// Sends security events to `sink` instead (e.g. `(TracingSink::new(), my_sink)` for
    /// both).
    pub fn on_security_event<NewE>(self, sink: NewE) -> TwilioSignatureLayer<R, NewE, T>
    where
        NewE: OnSecurityEvent,
    {
        TwilioSignatureLayer {
            resolver: self.resolver,
            config: self.config,
            sink,
            rejection: self.rejection,
        }
    }

    /// Builds rejection responses with `rejection` instead of [`DefaultRejectionResponse`]: a
    /// closure `Fn(&Rejection) -> Response<X>` whose body `X` converts into the inner service's
    /// response body (axum's `IntoResponse` output does), or any [`RejectionResponse`]. See
    /// [`RejectionResponse`] for an example.
    ///
    /// [`Rejection`]: crate::Rejection
    /// [`RejectionResponse`]: crate::RejectionResponse
    pub fn rejection_response<NewT>(self, rejection: NewT) -> TwilioSignatureLayer<R, E, NewT> {
        TwilioSignatureLayer {
            resolver: self.resolver,
            config: self.config,
            sink: self.sink,
            rejection,
        }
    }
}

impl<R: Clone, E: Clone, T: Clone> Clone for TwilioSignatureLayer<R, E, T> {
    fn clone(&self) -> Self {
        Self {
            resolver: self.resolver.clone(),
            config: self.config.clone(),
            sink: self.sink.clone(),
            rejection: self.rejection.clone(),
        }
    }
}

impl<S, R, E, T> Layer<S> for TwilioSignatureLayer<R, E, T>
where
    R: Clone,
    E: Clone,
    T: Clone,
{
    type Service = TwilioSignature<S, R, E, T>;

    fn layer(&self, inner: S) -> Self::Service {
        if self.config.report_only {
            tracing::error!(
                target: crate::events::TRACING_TARGET,
                "Twilio signature verification is in REPORT-ONLY mode: forged requests are passed on"
            );
        }
        TwilioSignature::new(
            inner,
            self.resolver.clone(),
            Arc::new(Shared {
                config: self.config.clone(),
                sink: Arc::new(self.sink.clone()),
                rejection: self.rejection.clone(),
            }),
        )
    }
}

impl<R, E, T> fmt::Debug for TwilioSignatureLayer<R, E, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioSignatureLayer")
            .field("public_url", &self.config.public_url)
            .field("max_body_size", &self.config.max_body_size)
            .field("max_params", &self.config.max_params)
            .field("report_only", &self.config.report_only)
            .field("exact_urls_only", &self.config.exact_urls_only)
            .field("diagnose_mismatches", &self.config.diagnoses.is_some())
            .finish_non_exhaustive()
    }
}
