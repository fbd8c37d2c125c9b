//! Everything the crate does with URLs, in one place: rebuilding the public URL Twilio called,
//! the spellings of it a signature is checked against, the mismatch doctor's other URLs, and
//! redaction for events and logs.
//!
//! Pure: no I/O, no tower types. Every URL is cut by one splitter and every host, port and
//! path prefix is held to one rule ([`parts`]); every header is read by one reader, from its
//! end and at most 16 values deep ([`headers`]). The public URL and the doctor both go through
//! them, so the doctor never suggests a URL the middleware would not rebuild.
//!
//! | module | what |
//! | --- | --- |
//! | [`parts`] | the splitter (`scheme://userinfo@host:port` and the rest), the host, port and path rules, `join` |
//! | [`headers`] | `Host` and the other single headers, the `X-Forwarded-*` lists, RFC 7239 `Forwarded`, client addresses |
//! | [`public`] | [`PublicUrl`](public::PublicUrl), [`ForwardedHeaders`](public::ForwardedHeaders): the crate's `public_url` |
//! | [`proxy_network`] | [`ProxyNetwork`](proxy_network::ProxyNetwork): the proxies whose forwarding headers are trusted |
//! | [`rebuilt`] | [`RebuiltUrl`](rebuilt::RebuiltUrl) and [`UrlError`](rebuilt::UrlError): what rebuilding the public URL gives |
//! | [`spellings`] | the exact and lenient URL spellings verification tries |
//! | [`whatwg`] | the WHATWG serialisation twilio-node compares against |
//! | [`candidates`] | the other URLs the [mismatch doctor](crate::doctor) tries |
//! | [`redact`] | URLs without userinfo and query values, as events and logs show them |

pub(crate) mod candidates;
pub(crate) mod headers;
pub(crate) mod parts;
pub(crate) mod proxy_network;
pub mod public;
pub(crate) mod rebuilt;
pub(crate) mod redact;
pub(crate) mod spellings;
pub(crate) mod whatwg;
