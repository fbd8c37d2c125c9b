//! [`ConfigError`]: the one error type of setting up the middleware.

use std::fmt;

/// A setup mistake, reported by the constructor that received it, before any request is
/// served: an empty [`Secret`](crate::Secret), a malformed [`PublicUrl`](crate::PublicUrl), a
/// trusted proxy network or forwarded field name that does not parse. The layer's setters take
/// typed arguments and cannot fail, so a setup meets this one error type.
///
/// `Display` text is for people and may change; match on the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The public base URL is not an absolute `http`/`https` URL with a host and without query
    /// or fragment.
    InvalidPublicUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A trusted proxy network is neither a CIDR network nor an IP address.
    InvalidProxyNetwork {
        /// The network as given.
        cidr: String,
    },
    /// A signing secret is empty: an empty key would make every signature trivially
    /// computable ([`Secret::new`](crate::Secret::new)).
    EmptySecret,
    /// A forwarded field name is not one of `forwarded-proto`, `forwarded-host`,
    /// `forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`, `x-forwarded-port`,
    /// `x-forwarded-prefix`, `x-forwarded-for`.
    UnknownForwardedField {
        /// The name as given.
        name: String,
    },
    /// A replay store's table name is not `table` or `schema.table`, each part lowercase ASCII
    /// letters, digits and `_`, not starting with a digit, at most 48 bytes (it is written into
    /// SQL as it is, so nothing else is accepted).
    InvalidTableName {
        /// The name as given.
        name: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The URL is shown without its userinfo, which may hold a password.
            Self::InvalidPublicUrl { url, reason } => write!(
                f,
                "invalid public URL {:?}: {reason}",
                crate::url::redact::redact_userinfo(url)
            ),
            Self::InvalidProxyNetwork { cidr } => {
                write!(
                    f,
                    "invalid trusted proxy network {cidr:?}: expected e.g. 10.0.0.0/8"
                )
            }
            Self::EmptySecret => f.pad("signing secret is empty"),
            Self::UnknownForwardedField { name } => write!(
                f,
                "unknown forwarded field {name:?}: expected e.g. x-forwarded-proto"
            ),
            Self::InvalidTableName { name } => write!(
                f,
                "invalid table name {name:?}: expected e.g. tower_twilio_replay or replay.webhooks"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
