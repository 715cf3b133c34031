//! The names of the shared limit's Redis keys: one per API key and endpoint, carrying a
//! hash of the API key, never the key itself, so that a Redis shared with other tools
//! (or its `MONITOR`, or a dump of it) never holds the account's secret. Pure.

pub use crate::api::client::account_id;

/// What every key of the shared limits starts with.
pub const KEY_PREFIX: &str = "stembatch:limit";

/// The key that holds the theoretical arrival time of one endpoint's limit.
pub fn limit_key(account_id: &str, endpoint: &str) -> String {
    format!("{KEY_PREFIX}:{account_id}:{endpoint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_hold_a_hash_of_the_api_key_never_the_key() {
        let key = "sk-live-0123456789abcdef";
        let account = account_id(key);
        assert_eq!(account.len(), 32);
        assert!(account.chars().all(|c| c.is_ascii_hexdigit()));
        let submit = limit_key(&account, "submit");
        assert_eq!(submit, format!("stembatch:limit:{account}:submit"));
        assert!(!submit.contains(key) && !submit.contains("0123456789abcdef"));
        // Stable across processes, distinct per key and per endpoint.
        assert_eq!(account_id(key), account);
        assert_eq!(
            account_id(&format!("{key}\n")),
            account,
            "as read from a key file"
        );
        assert_ne!(account_id("sk-live-0123456789abcdeF"), account);
        assert_ne!(limit_key(&account, "detail"), submit);
    }
}
