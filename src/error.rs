//! [`ConfigError`]: what construction-time setters return when the configuration is wrong.

use std::fmt;

/// A configuration mistake, reported by the setter that received it, before any request is
/// served.
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
    /// The body size limit is zero.
    ZeroBodyLimit,
    /// The form parameter limit is zero.
    ZeroParamLimit,
    /// A forwarded field name is not one of `forwarded-proto`, `forwarded-host`,
    /// `forwarded-for`, `x-forwarded-proto`, `x-forwarded-host`, `x-forwarded-port`,
    /// `x-forwarded-prefix`, `x-forwarded-for`.
    UnknownForwardedField {
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
                crate::url_forms::redact_userinfo(url)
            ),
            Self::InvalidProxyNetwork { cidr } => {
                write!(
                    f,
                    "invalid trusted proxy network {cidr:?}: expected e.g. 10.0.0.0/8"
                )
            }
            Self::ZeroBodyLimit => f.pad("the body size limit must be greater than zero"),
            Self::ZeroParamLimit => f.pad("the form parameter limit must be greater than zero"),
            Self::UnknownForwardedField { name } => write!(
                f,
                "unknown forwarded field {name:?}: expected e.g. x-forwarded-proto"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
