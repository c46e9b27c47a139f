//! What is known of the client that sent a batch, in the Collector's `client.Info` shape: the
//! request's headers (kept when the receiver sets `include_metadata`) and what its authenticator
//! established (`auth.username`, `auth.subject`). A gateway reads it to stamp the tenant on the
//! data (`from_context` in the `attributes` and `resource` processors), to keep tenants apart in
//! batches (`metadata_keys` on `batch`) and to route by it (`context: request` on `routing`).
//!
//! It travels with a [`crate::Batch`] through the processors. A batch processor without
//! `metadata_keys` merges batches from many clients and, as the Collector's does, hands on none.

use std::sync::Arc;

/// Header values kept per key, at most: a client cannot make one batch carry unbounded metadata.
pub const MAX_VALUES_PER_KEY: usize = 16;

/// Whether `name` can be a request header (HTTP's token characters), as metadata keys and
/// credential headers named in configuration must be.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A client's request metadata and authentication attributes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash)]
pub struct ClientInfo {
    /// Header names in lowercase, sorted, each with its values in the order sent.
    metadata: Vec<(String, Vec<String>)>,
    /// Attributes the authenticator set, sorted by name.
    auth: Vec<(String, String)>,
}

impl ClientInfo {
    /// Client info from request headers (names in any case; values that are not UTF-8 are left
    /// out) and authentication attributes. `None` when there is nothing to carry.
    pub fn new<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        auth: &AuthInfo,
    ) -> Option<Arc<ClientInfo>> {
        let mut metadata: Vec<(String, Vec<String>)> = Vec::new();
        for (name, value) in headers {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            match metadata.iter_mut().find(|(k, _)| *k == name) {
                Some((_, values)) if values.len() < MAX_VALUES_PER_KEY => {
                    values.push(value.to_owned());
                }
                Some(_) => {}
                None => metadata.push((name, vec![value.to_owned()])),
            }
        }
        metadata.sort_by(|a, b| a.0.cmp(&b.0));
        let mut auth = auth.attributes.clone();
        auth.sort();
        if metadata.is_empty() && auth.is_empty() {
            return None;
        }
        Some(Arc::new(ClientInfo { metadata, auth }))
    }

    /// The values of metadata key `key` (any case); empty when absent.
    pub fn metadata(&self, key: &str) -> &[String] {
        self.metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// An authentication attribute (`username`, `subject`).
    pub fn auth(&self, attribute: &str) -> Option<&str> {
        self.auth
            .iter()
            .find(|(k, _)| k == attribute)
            .map(|(_, v)| v.as_str())
    }

    /// A context value as `from_context` names it: `metadata.<key>` or `auth.<attribute>`; a
    /// bare name is a metadata key, as in the Collector. Several metadata values come back
    /// joined with `;`, the Collector's choice.
    pub fn lookup(&self, name: &str) -> Option<String> {
        if let Some(attribute) = name.strip_prefix("auth.") {
            return self.auth(attribute).map(str::to_owned);
        }
        let key = name.strip_prefix("metadata.").unwrap_or(name);
        let values = self.metadata(key);
        (!values.is_empty()).then(|| values.join(";"))
    }

    /// Only the metadata under `keys` (the batch processor's `metadata_keys`), and no auth
    /// attributes: what a batch merged from several requests can truly say of all of them.
    pub fn only(&self, keys: &[String]) -> ClientInfo {
        let mut metadata: Vec<(String, Vec<String>)> = keys
            .iter()
            .map(|k| (k.to_ascii_lowercase(), self.metadata(k).to_vec()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        metadata.sort_by(|a, b| a.0.cmp(&b.0));
        ClientInfo {
            metadata,
            auth: Vec::new(),
        }
    }
}

/// What an authenticator established of a client it admitted (`username` for `basicauth`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    attributes: Vec<(String, String)>,
}

impl AuthInfo {
    /// Nothing established beyond admission.
    pub fn none() -> AuthInfo {
        AuthInfo::default()
    }

    /// With attribute `name` set to `value`.
    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> AuthInfo {
        self.attributes.retain(|(k, _)| k != name);
        self.attributes.push((name.to_owned(), value.to_owned()));
        self
    }

    /// An attribute's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(headers: &[(&str, &str)], auth: &AuthInfo) -> Option<Arc<ClientInfo>> {
        ClientInfo::new(headers.iter().map(|(k, v)| (*k, v.as_bytes())), auth)
    }

    #[test]
    fn metadata_is_case_insensitive_and_keeps_every_value() {
        let c = info(
            &[
                ("X-Tenant-Id", "acme"),
                ("x-tenant-id", "beta"),
                ("Host", "h"),
            ],
            &AuthInfo::none().with("username", "ann"),
        )
        .unwrap();
        assert_eq!(c.metadata("X-TENANT-ID"), ["acme", "beta"]);
        assert_eq!(c.lookup("metadata.x-tenant-id").unwrap(), "acme;beta");
        assert_eq!(c.lookup("host").unwrap(), "h");
        assert_eq!(c.lookup("auth.username").unwrap(), "ann");
        assert_eq!(c.lookup("auth.subject"), None);
        assert_eq!(c.lookup("metadata.absent"), None);
    }

    #[test]
    fn header_names_are_http_tokens() {
        assert!(is_header_name("X-Tenant-Id"));
        assert!(!is_header_name(""));
        assert!(!is_header_name("bad header"));
        assert!(!is_header_name("x:y"));
    }

    #[test]
    fn nothing_to_carry_is_none_and_values_are_bounded() {
        assert!(info(&[], &AuthInfo::none()).is_none());
        let many: Vec<(&str, &str)> = (0..100).map(|_| ("k", "v")).collect();
        assert_eq!(
            info(&many, &AuthInfo::none()).unwrap().metadata("k").len(),
            MAX_VALUES_PER_KEY
        );
        let bad = ClientInfo::new([("k", &b"\xff"[..])], &AuthInfo::none());
        assert!(bad.is_none(), "a value that is not UTF-8 is left out");
    }

    #[test]
    fn only_keeps_the_named_keys_so_equal_tenants_compare_equal() {
        let a = info(
            &[("x-tenant", "acme"), ("user-agent", "a")],
            &AuthInfo::none(),
        )
        .unwrap();
        let b = info(
            &[("X-Tenant", "acme"), ("user-agent", "b")],
            &AuthInfo::none().with("username", "u"),
        )
        .unwrap();
        let keys = ["X-Tenant".to_owned()];
        assert_eq!(a.only(&keys), b.only(&keys));
        assert_eq!(a.only(&keys).lookup("x-tenant").unwrap(), "acme");
        assert_eq!(a.only(&keys).auth("username"), None);
    }
}
