use std::{collections::HashMap, fmt, future::Ready, sync::Arc};

use super::{Credentials, Resolution, ResolveCredentials, ResolveRequest};

/// A resolver backed by an in-memory map: `AccountSid` → [`Credentials`], with every
/// SharedKey of those credentials indexed by its id.
///
/// A request that names a SharedKey id is looked up by that id only; any other request by its
/// `AccountSid`. Both are matched byte for byte. A request whose key is not in the map, or that
/// carries neither key, gets `Ok(None)` (an unknown account). The lookup never fails.
///
/// Each entry's credentials are stamped with their account ([`Credentials::account`]), so
/// a SharedKey verifies only requests that name the account it was inserted under (or none),
/// and every verified request reports that account.
///
/// Cloning is cheap: clones share the map. The builder methods copy the map first if a clone
/// is still around, so a clone never sees entries added after it was made.
///
/// ```
/// use tower_twilio::{Credentials, Secret, resolver::AccountMap};
///
/// let resolver = AccountMap::new().insert_account(
///     "AC0123456789abcdef0123456789abcdef",
///     Credentials::new()
///         .tenant("acme")
///         .auth_token("primary", Secret::new("0123456789abcdef0123456789abcdef").unwrap())
///         .shared_key("webhooks_sharedkey_1", Secret::new("shared-secret").unwrap()),
/// );
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
    /// SharedKey id → the account it belongs to.
    shared_keys: HashMap<String, String>,
}

impl AccountMap {
    /// An empty map: every request is an unknown account.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers requests whose `AccountSid` is `account_sid`, and requests signed with one of
    /// the SharedKeys in `credentials` ([`Credentials::shared_key`]), with `credentials`
    /// stamped with that account. Replaces any earlier entry for the account; a SharedKey id
    /// already inserted under another account moves to this one.
    #[must_use]
    pub fn insert_account(
        mut self,
        account_sid: impl Into<String>,
        credentials: Credentials,
    ) -> Self {
        let account_sid = account_sid.into();
        let credentials = credentials.account(account_sid.as_str());
        let maps = Arc::make_mut(&mut self.inner);
        if let Some(old) = maps.accounts.remove(&account_sid) {
            for key_id in old.shared_key_ids() {
                maps.shared_keys.remove(key_id);
            }
        }
        for key_id in credentials.shared_key_ids() {
            maps.shared_keys
                .insert(key_id.to_owned(), account_sid.clone());
        }
        maps.accounts.insert(account_sid, credentials);
        self
    }

    /// The credentials this map answers `request` with.
    fn lookup(&self, request: &ResolveRequest) -> Option<&Credentials> {
        let account_sid = match request.shared_key_id() {
            Some(key_id) => self.inner.shared_keys.get(key_id)?.as_str(),
            None => request.account_sid()?,
        };
        self.inner.accounts.get(account_sid)
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
            .field("accounts", &self.inner.accounts.keys().collect::<Vec<_>>())
            .field(
                "shared_keys",
                &self.inner.shared_keys.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Secret;

    fn request(account_sid: Option<&str>, key_id: Option<&str>) -> ResolveRequest {
        let (parts, ()) = http::Request::post("/x").body(()).unwrap().into_parts();
        ResolveRequest::new(parts, account_sid, key_id)
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
            .insert_account(
                "AC3",
                tenant("keyed").shared_key("key1", Secret::new("shared").unwrap()),
            )
    }

    #[tokio::test]
    async fn account_sid_picks_its_credentials() {
        let mut map = map();
        let found = tenant_for(&mut map, request(Some("AC2"), None)).await;
        assert_eq!(found.as_deref(), Some("two"));
    }

    #[tokio::test]
    async fn shared_key_id_wins_over_account_sid() {
        let mut map = map();
        let with_both = request(Some("AC1"), Some("key1"));
        assert_eq!(
            tenant_for(&mut map, with_both).await.as_deref(),
            Some("keyed")
        );

        // An unknown key id never falls back to the account's auth token.
        let unknown_key = request(Some("AC1"), Some("key2"));
        assert_eq!(tenant_for(&mut map, unknown_key).await, None);
    }

    #[tokio::test]
    async fn unknown_or_missing_keys_are_unknown_accounts() {
        let mut map = map();
        assert_eq!(tenant_for(&mut map, request(Some("AC9"), None)).await, None);
        assert_eq!(tenant_for(&mut map, request(Some("ac1"), None)).await, None);
        assert_eq!(tenant_for(&mut map, request(None, None)).await, None);
        assert_eq!(
            tenant_for(&mut AccountMap::new(), request(Some("AC1"), None)).await,
            None
        );
    }

    #[test]
    fn clones_do_not_see_later_inserts() {
        let before = map();
        let after = before.clone().insert_account("AC4", tenant("four"));
        assert!(before.lookup(&request(Some("AC4"), None)).is_none());
        assert!(after.lookup(&request(Some("AC4"), None)).is_some());
    }

    #[tokio::test]
    async fn every_entry_is_stamped_with_its_account() {
        let mut map = map();
        let by_key = map
            .resolve(request(None, Some("key1")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_key.account_sid(), Some("AC3"));
        let by_sid = map
            .resolve(request(Some("AC1"), None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_sid.account_sid(), Some("AC1"));
    }

    #[test]
    fn replacing_an_account_drops_its_old_shared_keys() {
        let map = map().insert_account("AC3", tenant("keyed"));
        assert!(map.lookup(&request(None, Some("key1"))).is_none());
        let moved = AccountMap::new()
            .insert_account(
                "AC1",
                tenant("one").shared_key("k", Secret::new("s").unwrap()),
            )
            .insert_account(
                "AC2",
                tenant("two").shared_key("k", Secret::new("s").unwrap()),
            );
        let found = moved.lookup(&request(None, Some("k"))).unwrap();
        assert_eq!(found.account_sid(), Some("AC2"));
    }

    #[test]
    fn debug_lists_keys_but_no_secrets() {
        let shown = format!("{:?} {:#?}", map(), map());
        assert!(shown.contains("AC1") && shown.contains("key1"), "{shown}");
        assert!(!shown.contains("token-of"), "{shown}");
    }
}
