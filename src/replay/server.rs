//! What the stores on a server ([`RedisStore`](super::RedisStore),
//! [`PostgresStore`](super::PostgresStore)) share: each writes its operations as round trips
//! ([`Server`]), and [`replay_store_on_server!`] writes its [`ReplayStore`](super::ReplayStore)
//! impl from them.

use std::{future::Future, time::Duration};

use super::{
    Claim, ClaimToken, DeliveryClaim, Record, ReplayKey, ReplayStoreError, ReplayStoreErrorKind,
};

/// What an operation of a store on a server answers.
pub(crate) type Answer<T> = Result<T, ReplayStoreError>;

/// The future of each operation of a store on a server: boxed, as one allocation costs nothing
/// next to a network round trip (the layer's own path stays unboxed). Users name it as the
/// store's associated type, `<RedisStore as ReplayStore>::ClaimFuture`.
pub(crate) type ServerFuture<T> = std::pin::Pin<Box<dyn Future<Output = Answer<T>> + Send>>;

/// A store on a server: each [`ReplayStore`](super::ReplayStore) operation as one round trip
/// on a clone of the store and owned values, so that its future outlives the call and is
/// `Send`. A claim's token is drawn before ([`random_token`]).
///
/// The methods share the names of the [`ReplayStore`](super::ReplayStore) operations they
/// make; only [`replay_store_on_server!`] calls them, by their full path.
pub(crate) trait Server: Clone + Send + Sync + 'static {
    /// [`ReplayStore::claim`](super::ReplayStore::claim), with `token` for a new claim.
    fn claim(
        self,
        key: ReplayKey,
        token: ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Answer<Claim>> + Send;

    /// [`ReplayStore::claim_delivery`](super::ReplayStore::claim_delivery), with `token` for a
    /// new claim.
    fn claim_delivery(
        self,
        delivery: DeliveryClaim,
        token: ClaimToken,
    ) -> impl Future<Output = Answer<Claim>> + Send;

    /// [`ReplayStore::renew`](super::ReplayStore::renew).
    fn renew(
        self,
        key: ReplayKey,
        token: ClaimToken,
        lease: Duration,
    ) -> impl Future<Output = Answer<bool>> + Send;

    /// [`ReplayStore::complete`](super::ReplayStore::complete).
    fn complete(
        self,
        key: ReplayKey,
        token: ClaimToken,
        record: Record,
    ) -> impl Future<Output = Answer<()>> + Send;

    /// [`ReplayStore::release`](super::ReplayStore::release).
    fn release(self, key: ReplayKey, token: ClaimToken) -> impl Future<Output = Answer<()>> + Send;
}

/// Writes the [`ReplayStore`](super::ReplayStore) impl of `$store`, a [`Server`] whose
/// operations' futures are [`ServerFuture`]s:
///
/// - each operation clones the store and its key into a future that makes the round trip
///   (drawing a claim's token first);
/// - [`wait`](super::ReplayStore::wait): a server cannot tell a waiting copy when a claim
///   settles, so the copy sleeps a short, growing backoff ([`poll_backoff`]) and claims again;
/// - [`release_detached`](super::ReplayStore::release_detached) and
///   [`complete_detached`](super::ReplayStore::complete_detached) start the operation on the
///   current tokio runtime ([`spawn_detached`]). Without one, a released claim stays until its
///   lease runs out, and a completed one lapses after its lease.
macro_rules! replay_store_on_server {
    ($store:ty) => {
        impl $crate::replay::ReplayStore for $store {
            type ClaimFuture = $crate::replay::server::ServerFuture<$crate::replay::Claim>;
            type RenewFuture = $crate::replay::server::ServerFuture<bool>;
            type CompleteFuture = $crate::replay::server::ServerFuture<()>;
            type ReleaseFuture = $crate::replay::server::ServerFuture<()>;
            type WaitFuture = ::tokio::time::Sleep;

            fn claim(
                &self,
                key: &$crate::replay::ReplayKey,
                lease: ::std::time::Duration,
            ) -> Self::ClaimFuture {
                let (server, key) = (self.clone(), *key);
                Box::pin(async move {
                    let token = $crate::replay::server::random_token()?;
                    $crate::replay::server::Server::claim(server, key, token, lease).await
                })
            }

            fn claim_delivery(
                &self,
                delivery: &$crate::replay::DeliveryClaim,
            ) -> Self::ClaimFuture {
                let (server, delivery) = (self.clone(), *delivery);
                Box::pin(async move {
                    let token = $crate::replay::server::random_token()?;
                    $crate::replay::server::Server::claim_delivery(server, delivery, token).await
                })
            }

            fn renew(
                &self,
                key: &$crate::replay::ReplayKey,
                token: $crate::replay::ClaimToken,
                lease: ::std::time::Duration,
            ) -> Self::RenewFuture {
                let server = self.clone();
                Box::pin($crate::replay::server::Server::renew(
                    server, *key, token, lease,
                ))
            }

            fn complete(
                &self,
                key: &$crate::replay::ReplayKey,
                token: $crate::replay::ClaimToken,
                record: $crate::replay::Record,
            ) -> Self::CompleteFuture {
                let server = self.clone();
                Box::pin($crate::replay::server::Server::complete(
                    server, *key, token, record,
                ))
            }

            fn release(
                &self,
                key: &$crate::replay::ReplayKey,
                token: $crate::replay::ClaimToken,
            ) -> Self::ReleaseFuture {
                let server = self.clone();
                Box::pin($crate::replay::server::Server::release(server, *key, token))
            }

            fn wait(&self, _key: &$crate::replay::ReplayKey, attempt: u32) -> Self::WaitFuture {
                $crate::replay::server::poll_backoff(attempt)
            }

            /// Spawns the release on the current tokio runtime; without one, the claim stays
            /// until its lease runs out.
            fn release_detached(
                &self,
                key: &$crate::replay::ReplayKey,
                token: $crate::replay::ClaimToken,
            ) {
                $crate::replay::server::spawn_detached(
                    $crate::replay::ReplayStore::release(self, key, token),
                    "could not release a replay claim; it stays until its lease runs out",
                );
            }

            /// Spawns the completion on the current tokio runtime; without one, the claim
            /// lapses after its lease.
            fn complete_detached(
                &self,
                key: &$crate::replay::ReplayKey,
                token: $crate::replay::ClaimToken,
                record: $crate::replay::Record,
            ) {
                $crate::replay::server::spawn_detached(
                    $crate::replay::ReplayStore::complete(self, key, token, record),
                    "could not record a processed webhook whose request was dropped; a copy \
                     arriving after the claim's lease runs the handler again",
                );
            }
        }
    };
}
pub(crate) use replay_store_on_server;

/// How long a copy waits before it asks a shared store again whether the first attempt has
/// settled: 25 ms, doubling to 400 ms. Shared stores cannot wake a waiting copy; they are
/// asked again instead.
pub(crate) fn poll_backoff(attempt: u32) -> tokio::time::Sleep {
    let backoff = Duration::from_millis(25) * 2u32.saturating_pow(attempt.min(4));
    tokio::time::sleep(backoff)
}

/// Runs a shared store's operation on the current tokio runtime, warning with `failed` when
/// it fails; see [`replay_store_on_server!`].
pub(crate) fn spawn_detached<F>(operation: F, failed: &'static str)
where
    F: Future<Output = Answer<()>> + Send + 'static,
{
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(error) = operation.await {
                tracing::warn!(target: crate::events::TRACING_TARGET, %error, "{failed}");
            }
        });
    }
}

/// A new claim token for a shared store: 128 random bits from the operating system, so that
/// no other instance can hold or guess it.
pub(crate) fn random_token() -> Answer<ClaimToken> {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes).map_err(|error| {
        ReplayStoreError::with_source(ReplayStoreErrorKind::Unavailable, error.to_string())
    })?;
    Ok(ClaimToken::new(u128::from_le_bytes(bytes)))
}
