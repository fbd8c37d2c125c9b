use std::time::Duration;

#[cfg(feature = "cache")]
use super::Cache;
use super::{Fallback, ResolveCredentials, Timeout};

/// Chains the combinators onto any resolver: `preferred.or(legacy).timeout(d).cached()`.
///
/// Implemented for every [`ResolveCredentials`]. See the [module docs](super) for an example.
pub trait ResolveCredentialsExt: ResolveCredentials + Sized {
    /// Asks `legacy` for the accounts `self` does not know; see [`Fallback`]. An error from
    /// `self` is returned as it is and `legacy` is not asked.
    fn or<B>(self, legacy: B) -> Fallback<Self, B>
    where
        B: ResolveCredentials + Clone,
    {
        Fallback::new(self, legacy)
    }

    /// Caches the answers with the default settings; see [`Cache`] for them and for the
    /// setters (`.cached().ttl(…)`). Needs the `cache` feature.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    fn cached(self) -> Cache<Self>
    where
        Self: Clone,
    {
        Cache::new(self)
    }

    /// Fails lookups that take longer than `duration` with
    /// [`ResolveTimeout`](super::ResolveTimeout); see [`Timeout`].
    fn timeout(self, duration: Duration) -> Timeout<Self> {
        Timeout::new(self, duration)
    }
}

impl<R: ResolveCredentials> ResolveCredentialsExt for R {}
