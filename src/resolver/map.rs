use std::{collections::HashMap, fmt, future::Ready, sync::Arc};

use super::{Credentials, Resolution, ResolveCredentials, ResolveRequest};

/// A resolver backed by an in-memory map: `AccountSid` → [`Credentials`] and SharedKey id →
/// [`Credentials`].
///
/// A request that names a SharedKey id is looked up by that id only; any other request by its
/// `AccountSid`. Both are matched byte for byte. A request whose key is not in the map, or that
/// carries neither key, gets `Ok(None)` (an unknown account). The lookup never fails.
///
/// Cloning is cheap: clones share the map. The builder methods copy the map first if a clone
/// is still around, so a clone never sees entries added after it was made.
///
/// ```
/// use tower_twilio::{Credentials, Secret, resolver::AccountMap};
///
/// let resolver = AccountMap::new()
///     .insert_account(
///         "AC0123",
///         Credentials::new()
///             .tenant("acme")
///             .auth_token("primary", Secret::new("0123456789abcdef0123456789abcdef").unwrap()),
///     )
///     .insert_shared_key(
///         "webhooks_sharedkey_1",
///         Credentials::new()
///             .tenant("acme")
///             .shared_key("webhooks_sharedkey_1", Secret::new("shared-secret").unwrap()),
///     );
/// // `resolver` can be passed to `TwilioSignatureLayer::new` as it is.
/// # let _ = resolver;
/// ```
#[derive(Clone, Default)]
pub struct AccountMap {
    inner: Arc<Maps>,
}

#[derive(Clone, Default)]
struct Maps {
    accounts: HashMap<String, Credentials>,
    shared_keys: HashMap<String, Credentials>,
}

impl AccountMap {
    /// An empty map: every request is an unknown account.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers requests whose `AccountSid` is `account_sid` (and that name no SharedKey) with
    /// `credentials`, replacing any earlier entry for it.
    #[must_use]
    pub fn insert_account(
        mut self,
        account_sid: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        Arc::make_mut(&mut self.inner)
            .accounts
            .insert(account_sid.into(), credentials);
        self
    }

    /// Answers requests that name the SharedKey `key_id` with `credentials`, replacing any
    /// earlier entry for it. `credentials` should hold that SharedKey's secret
    /// ([`Credentials::shared_key`]): only it can verify such a request.
    #[must_use]
    pub fn insert_shared_key(
        mut self,
        key_id: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        Arc::make_mut(&mut self.inner)
            .shared_keys
            .insert(key_id.into(), credentials);
        self
    }

    /// The credentials this map answers `request` with.
    fn lookup(&self, request: &ResolveRequest) -> Option<&Credentials> {
        match (request.shared_key_id(), request.account_sid()) {
            (Some(key_id), _) => self.inner.shared_keys.get(key_id),
            (None, Some(account_sid)) => self.inner.accounts.get(account_sid),
            (None, None) => None,
        }
    }
}

impl ResolveCredentials for AccountMap {
    type Future = Ready<Resolution>;

    fn resolve(&mut self, request: ResolveRequest) -> Self::Future {
        std::future::ready(Ok(self.lookup(&request).cloned()))
    }
}

impl fmt::Debug for AccountMap {
    /// Lists the keys only; the credentials stay out of the output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountMap")
            .field("accounts", &Keys(&self.inner.accounts))
            .field("shared_keys", &Keys(&self.inner.shared_keys))
            .finish()
    }
}

struct Keys<'a>(&'a HashMap<String, Credentials>);

impl fmt::Debug for Keys<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn request() -> ResolveRequest {
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        ResolveRequest::new(parts)
    }

    fn tenant(name: &str) -> Credentials {
        Credentials::new()
            .tenant(name)
            .auth_token("primary", Secret::new(format!("token-of-{name}")).unwrap())
    }

    async fn tenant_for(map: &mut AccountMap, request: ResolveRequest) -> Option<String> {
        map.resolve(request)
            .await
            .unwrap()
            .map(|c| c.tenant_id().unwrap().to_owned())
    }

    fn map() -> AccountMap {
        AccountMap::new()
            .insert_account("AC1", tenant("one"))
            .insert_account("AC2", tenant("two"))
            .insert_shared_key("key1", tenant("keyed"))
    }

    #[tokio::test]
    async fn account_sid_picks_its_credentials() {
        let mut map = map();
        let found = tenant_for(&mut map, request().with_account_sid("AC2")).await;
        assert_eq!(found.as_deref(), Some("two"));
    }

    #[tokio::test]
    async fn shared_key_id_wins_over_account_sid() {
        let mut map = map();
        let with_both = request().with_account_sid("AC1").with_shared_key_id("key1");
        assert_eq!(
            tenant_for(&mut map, with_both).await.as_deref(),
            Some("keyed")
        );

        // An unknown key id never falls back to the account's auth token.
        let unknown_key = request().with_account_sid("AC1").with_shared_key_id("key2");
        assert_eq!(tenant_for(&mut map, unknown_key).await, None);
    }

    #[tokio::test]
    async fn unknown_or_missing_keys_are_unknown_accounts() {
        let mut map = map();
        assert_eq!(
            tenant_for(&mut map, request().with_account_sid("AC9")).await,
            None
        );
        assert_eq!(
            tenant_for(&mut map, request().with_account_sid("ac1")).await,
            None
        );
        assert_eq!(tenant_for(&mut map, request()).await, None);
        assert_eq!(
            tenant_for(&mut AccountMap::new(), request().with_account_sid("AC1")).await,
            None
        );
    }

    #[test]
    fn clones_do_not_see_later_inserts() {
        let before = map();
        let after = before.clone().insert_account("AC3", tenant("three"));
        assert!(before.lookup(&request().with_account_sid("AC3")).is_none());
        assert!(after.lookup(&request().with_account_sid("AC3")).is_some());
    }

    #[test]
    fn debug_lists_keys_but_no_secrets() {
        let shown = format!("{:?} {:#?}", map(), map());
        assert!(shown.contains("AC1") && shown.contains("key1"), "{shown}");
        assert!(!shown.contains("token-of"), "{shown}");
    }
}
