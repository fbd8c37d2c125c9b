//! The signature layer's settings ([`Config`]) and what every clone of its service shares
//! ([`Shared`]): set by the builder ([`TwilioSignatureLayer`](crate::TwilioSignatureLayer)),
//! read by the decisions ([`pipeline`](crate::pipeline)), the response future and the
//! [observer](crate::observe). Kept apart from the builder so that the pure decisions import
//! no builder.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use http::{Extensions, Uri};

use crate::{
    PublicUrl, diagnoses::Doctor, events::log::OnWebhook, form::DEFAULT_MAX_PARAMS,
    public_url::Scheme,
};

/// The default body limit: 64 KiB.
///
/// The largest standard Twilio webhook, an MMS with a 1600-character body and ten media URLs, is
/// about 4.4 KB, so the default leaves room for Add-ons results and long WhatsApp payloads
/// while keeping a flood of large uploads from buffering much. Raise it with
/// [`TwilioSignatureLayer::max_body_size`](crate::TwilioSignatureLayer::max_body_size) for large Studio JSON bodies.
pub const DEFAULT_MAX_BODY_SIZE: usize = 64 * 1024;

/// The connecting peer's address, as the server provides it in the request extensions.
///
/// Insert it yourself when serving with hyper directly; for axum's `ConnectInfo` or tonic's
/// `TcpConnectInfo`, tell the layer where to look with
/// [`TwilioSignatureLayer::peer_addr_with`](crate::TwilioSignatureLayer::peer_addr_with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

pub(crate) type PeerAddrFn = Arc<dyn Fn(&Extensions) -> Option<IpAddr> + Send + Sync>;
pub(crate) type OriginalUriFn = Arc<dyn Fn(&Extensions) -> Option<Uri> + Send + Sync>;

fn default_peer_addr(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<PeerAddr>()
        .map(|peer| peer.0.ip())
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip))
}

/// The layer's settings, shared by every request through [`Shared`].
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) public_url: PublicUrl,
    pub(crate) max_body_size: usize,
    pub(crate) max_params: usize,
    pub(crate) report_only: bool,
    pub(crate) exact_urls_only: bool,
    pub(crate) peer_addr: PeerAddrFn,
    pub(crate) webhook_log: Option<Arc<dyn OnWebhook + Send + Sync>>,
    /// The mismatch doctor's budget and queue, shared by every clone; `None` when it is off.
    pub(crate) diagnoses: Option<Arc<Doctor>>,
    pub(crate) original_uri: Option<OriginalUriFn>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            public_url: PublicUrl::request_host(Scheme::Https),
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            max_params: DEFAULT_MAX_PARAMS,
            report_only: false,
            exact_urls_only: false,
            peer_addr: Arc::new(default_peer_addr),
            webhook_log: None,
            diagnoses: None,
            original_uri: None,
        }
    }
}

/// What every clone of the service shares, behind one `Arc`.
pub(crate) struct Shared<E, T> {
    pub(crate) config: Config,
    /// In an `Arc` of its own: the mismatch doctor's thread reports through it too.
    pub(crate) sink: Arc<E>,
    pub(crate) rejection: T,
}
