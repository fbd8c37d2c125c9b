//! [`ProxyNetwork`]: a network of proxies whose forwarding headers are trusted.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;

use crate::error::ConfigError;

/// A network of trusted proxies, for
/// [`ForwardedHeaders::trust_proxy`](super::public::ForwardedHeaders::trust_proxy): a CIDR
/// network parsed from text (`"10.0.0.0/8"`, `"::1/128"`, or a bare address), or one address.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use tower_twilio::public_url::ProxyNetwork;
///
/// let nginx: ProxyNetwork = "10.0.0.0/8".parse()?;
/// assert_eq!(nginx.to_string(), "10.0.0.0/8");
/// assert_eq!(ProxyNetwork::from(IpAddr::V4(Ipv4Addr::LOCALHOST)).to_string(), "127.0.0.1/32");
/// assert!("10.0.0.0/33".parse::<ProxyNetwork>().is_err());
/// # Ok::<(), tower_twilio::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyNetwork(IpNet);

impl ProxyNetwork {
    /// Whether `ip` is in this network; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) counts
    /// as the IPv4 address it maps.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical_ip(ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) as IPv4; every other address as it is.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Parses a CIDR network or a bare address, ignoring surrounding white space. Host bits are
/// dropped: `"10.0.0.1/8"` is `10.0.0.0/8`.
impl FromStr for ProxyNetwork {
    type Err = ConfigError;

    fn from_str(cidr: &str) -> Result<Self, Self::Err> {
        let trimmed = cidr.trim();
        trimmed
            .parse::<IpNet>()
            .or_else(|_| trimmed.parse::<IpAddr>().map(IpNet::from))
            // `10.0.0.1/8` is the network `10.0.0.0/8`: shown and compared as such.
            .map(|network| Self(network.trunc()))
            .map_err(|_| ConfigError::InvalidProxyNetwork {
                cidr: cidr.to_owned(),
            })
    }
}

/// The network of this one address (`/32` or `/128`).
impl From<IpAddr> for ProxyNetwork {
    fn from(address: IpAddr) -> Self {
        Self(IpNet::from(address))
    }
}

impl fmt::Display for ProxyNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_bare_addresses_parse_and_nothing_else_does() {
        for (text, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            (" 192.0.2.0/24 ", "192.0.2.0/24"),
            ("::1", "::1/128"),
            ("127.0.0.1", "127.0.0.1/32"),
            // Host bits are dropped: the network it stands for, as it is shown and compared.
            ("10.0.0.1/8", "10.0.0.0/8"),
            ("2001:db8::1/32", "2001:db8::/32"),
        ] {
            assert_eq!(text.parse::<ProxyNetwork>().unwrap().to_string(), shown);
        }
        assert_eq!(
            "10.0.0.1/8".parse::<ProxyNetwork>(),
            "10.0.0.0/8".parse::<ProxyNetwork>()
        );
        for bad in ["10.0.0.0/33", "", "nginx", "10.0.0.0/8/8"] {
            assert_eq!(
                bad.parse::<ProxyNetwork>(),
                Err(ConfigError::InvalidProxyNetwork {
                    cidr: bad.to_owned()
                })
            );
        }
    }
}
