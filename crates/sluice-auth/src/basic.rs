//! `basicauth`, in the Collector's config shape. Server side (`htpasswd.file`, re-read when it
//! changes, and `htpasswd.inline`), a request is admitted when its `Authorization: Basic`
//! credentials match an htpasswd entry: bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`), Apache's MD5 (`$apr1$`), SHA-1 (`{SHA}`, `{SSHA}`)
//! or, as the Collector's `inline` example writes them, plain text. The admitted client's
//! `auth.username` (and `auth.subject`, the same) travel with its data. Client side
//! (`client_auth`), an exporter's requests carry `username` and `password` (or `password_file`,
//! re-read when it changes).
//!
//! bcrypt is slow on purpose (milliseconds a check), and apr1 takes a thousand MD5 rounds: a
//! credential that passed either is remembered by its SHA-256 digest, so only the first request
//! of a client, and wrong credentials, pay for it, and those run off the async workers (see
//! `ServerAuthenticator::blocks`). An unknown user is
//! checked against a dummy hash of the same kind, so the time taken does not tell which users
//! exist.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use serde::Deserialize;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use sluice_config::Problem;
use sluice_core::auth::{
    AuthInfo, AuthRefusal, ClientAuthenticator, ServerAuthenticator, constant_time_eq,
};
use sluice_core::{BuildError, Extension, ExtensionFactory, Host};

use crate::error::{CredentialError, EntryError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Credentials remembered after a successful bcrypt check, at most; the cache is emptied when
/// full.
const CACHE_ENTRIES: usize = 4096;

/// `extensions.basicauth`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// Server side: the accepted users.
    #[serde(default)]
    pub htpasswd: Option<HtpasswdConfig>,
    /// Client side: the credentials an exporter sends.
    #[serde(default)]
    pub client_auth: Option<ClientAuthConfig>,
}

/// `htpasswd`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdConfig {
    /// An htpasswd file, read at start.
    #[serde(default)]
    pub file: Option<String>,
    /// htpasswd lines; where a user is in both, `inline` wins, as in the Collector.
    #[serde(default)]
    pub inline: Option<String>,
}

/// `client_auth`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// The user name.
    #[serde(default)]
    pub username: String,
    /// The password.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password, re-read within a second of a change, so a rotated one is
    /// sent from then on.
    #[serde(default)]
    pub password_file: Option<String>,
}

impl std::fmt::Debug for BasicAuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("BasicAuthConfig")
            .field(
                "htpasswd.file",
                &self.htpasswd.as_ref().and_then(|h| h.file.as_ref()),
            )
            .field(
                "client_auth.username",
                &self.client_auth.as_ref().map(|c| &c.username),
            )
            .finish_non_exhaustive()
    }
}

impl BasicAuthConfig {
    fn check(&self, path: &str) -> Vec<Problem> {
        let mut p = Vec::new();
        match (&self.htpasswd, &self.client_auth) {
            (Some(_), Some(_)) => p.push(Problem::error(
                path.to_owned(),
                "set htpasswd (server side) or client_auth (client side), not both: use one basicauth extension for each",
            )),
            (None, None) => p.push(Problem::error(
                path.to_owned(),
                "set htpasswd (server side) or client_auth (client side)",
            )),
            _ => {}
        }
        if let Some(h) = &self.htpasswd {
            if h.file.is_none() && h.inline.is_none() {
                p.push(Problem::error(
                    format!("{path}.htpasswd"),
                    "set file, inline or both",
                ));
            }
            if let Some(inline) = &h.inline
                && let Err(e) = parse_htpasswd(inline, "inline")
            {
                p.push(Problem::error(
                    format!("{path}.htpasswd.inline"),
                    e.to_string(),
                ));
            }
        }
        if let Some(c) = &self.client_auth {
            if c.username.is_empty() || c.username.contains(':') {
                p.push(Problem::error(
                    format!("{path}.client_auth.username"),
                    "must be set, without `:`",
                ));
            }
            if c.password.is_some() == c.password_file.is_some() {
                p.push(Problem::error(
                    format!("{path}.client_auth"),
                    "set exactly one of password and password_file",
                ));
            }
        }
        p
    }
}

/// How an htpasswd entry stores its password.
#[derive(Clone)]
enum Stored {
    Bcrypt(String),
    Apr1 { salt: String, hash: String },
    Sha(Vec<u8>),
    Ssha { digest: Vec<u8>, salt: Vec<u8> },
    Plain(String),
}

impl Stored {
    fn parse(hash: &str) -> Result<Stored, EntryError> {
        if ["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| EntryError::Bcrypt(e.to_string()))?;
            return Ok(Stored::Bcrypt(hash.to_owned()));
        }
        if let Some(rest) = hash.strip_prefix("$apr1$") {
            let (salt, h) = rest.split_once('$').ok_or(EntryError::Apr1)?;
            if salt.len() > 8 || h.len() != 22 {
                return Err(EntryError::Apr1);
            }
            return Ok(Stored::Apr1 {
                salt: salt.to_owned(),
                hash: h.to_owned(),
            });
        }
        if let Some(b64) = hash.strip_prefix("{SHA}") {
            let digest = STANDARD
                .decode(b64)
                .ok()
                .filter(|d| d.len() == 20)
                .ok_or(EntryError::Sha)?;
            return Ok(Stored::Sha(digest));
        }
        if let Some(b64) = hash.strip_prefix("{SSHA}") {
            let mut all = STANDARD
                .decode(b64)
                .ok()
                .filter(|d| d.len() > 20)
                .ok_or(EntryError::Ssha)?;
            let salt = all.split_off(20);
            return Ok(Stored::Ssha { digest: all, salt });
        }
        if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$") {
            return Err(EntryError::Crypt);
        }
        Ok(Stored::Plain(hash.to_owned()))
    }

    /// Whether checking it takes long enough to run off the async workers and remember a
    /// credential that passed: bcrypt (milliseconds) and apr1 (a thousand MD5 rounds, about
    /// 150 µs; `cargo bench -p sluice-auth`).
    fn is_slow(&self) -> bool {
        matches!(self, Stored::Bcrypt(_) | Stored::Apr1 { .. })
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Stored::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            Stored::Apr1 { salt, hash } => {
                constant_time_eq(apr1(password, salt.as_bytes()).as_bytes(), hash.as_bytes())
            }
            Stored::Sha(digest) => constant_time_eq(&Sha1::digest(password), digest),
            Stored::Ssha { digest, salt } => {
                let mut h = Sha1::new();
                h.update(password);
                h.update(salt);
                constant_time_eq(&h.finalize(), digest)
            }
            Stored::Plain(p) => constant_time_eq(password, p.as_bytes()),
        }
    }
}

/// Apache's MD5-based crypt (`htpasswd -m`), the 22 characters after `$apr1$<salt>$`.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    let alt = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut left = password.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut last = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(last);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(last);
        } else {
            c.update(password);
        }
        last = c.finalize();
    }
    let f = last;
    let mut out = String::with_capacity(22);
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put(
            (u32::from(f[a]) << 16) | (u32::from(f[b]) << 8) | u32::from(f[c]),
            4,
        );
    }
    put(u32::from(f[11]), 2);
    out
}

/// The entries of htpasswd text, by user; errors name the line.
fn parse_htpasswd(text: &str, origin: &str) -> Result<HashMap<String, Stored>, CredentialError> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = line
            .split_once(':')
            .ok_or(EntryError::NotUserPassword)
            .and_then(|(user, hash)| {
                if user.is_empty() {
                    return Err(EntryError::EmptyUser);
                }
                Ok((user, Stored::parse(hash)?))
            });
        let (user, stored) = entry.map_err(|entry| CredentialError::Htpasswd {
            origin: origin.to_owned(),
            line: n + 1,
            entry,
        })?;
        users.insert(user.to_owned(), stored);
    }
    Ok(users)
}

/// The users of one reading of the htpasswd sources.
struct Users {
    users: HashMap<String, Stored>,
    /// Checked for an unknown user, so that it costs what a known one does.
    dummy: Stored,
}

/// The server side: the users (replaced whole when the file changes) and the credentials that
/// passed a slow check.
struct Htpasswd {
    current: RwLock<Arc<Users>>,
    /// SHA-256 of `Authorization` values that passed a slow check, with the user they name;
    /// emptied when the users change, so a removed user or password stops working at once.
    passed: RwLock<HashMap<[u8; 32], String>>,
}

/// The users of `htpasswd`: the file's, then `inline`'s over them.
fn load_users(h: &HtpasswdConfig) -> Result<HashMap<String, Stored>, CredentialError> {
    let mut users = HashMap::new();
    if let Some(file) = &h.file {
        let text = std::fs::read_to_string(file).map_err(|source| CredentialError::Read {
            file: file.clone(),
            source,
        })?;
        users = parse_htpasswd(&text, file)?;
    }
    if let Some(inline) = &h.inline {
        users.extend(parse_htpasswd(inline, "inline")?);
    }
    Ok(users)
}

impl Users {
    fn new(users: HashMap<String, Stored>) -> Self {
        let slowest = users
            .values()
            .filter_map(|s| match s {
                Stored::Bcrypt(h) => h.parse::<bcrypt::HashParts>().ok().map(|p| p.get_cost()),
                _ => None,
            })
            .max();
        let dummy = if let Some(cost) = slowest {
            // A hash as costly as the costliest user's, of a password nobody is given.
            Stored::Bcrypt(
                bcrypt::hash_with_salt(b"sluice-dummy-password", cost, [7u8; 16])
                    .map(|h| h.format_for_version(bcrypt::Version::TwoB))
                    .unwrap_or_default(),
            )
        } else if users.values().any(Stored::is_slow) {
            Stored::Apr1 {
                salt: "sluice00".to_owned(),
                hash: apr1(b"sluice-dummy-password", b"sluice00"),
            }
        } else {
            Stored::Plain("\u{0}sluice-dummy".to_owned())
        };
        Users { users, dummy }
    }
}

impl Htpasswd {
    fn new(users: HashMap<String, Stored>) -> Self {
        Htpasswd {
            current: RwLock::new(Arc::new(Users::new(users))),
            passed: RwLock::new(HashMap::new()),
        }
    }

    fn users(&self) -> Arc<Users> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the users, and forgets every credential that passed before.
    fn replace(&self, users: HashMap<String, Stored>) {
        let users = Arc::new(Users::new(users));
        let mut passed = self.passed.write().unwrap_or_else(|e| e.into_inner());
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = users;
        passed.clear();
    }

    fn digest(value: &[u8]) -> [u8; 32] {
        Sha256::digest(value).into()
    }

    fn remembered(&self, value: &[u8]) -> Option<String> {
        self.passed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Self::digest(value))
            .cloned()
    }
}

fn admitted(user: &str) -> AuthInfo {
    AuthInfo::none()
        .with("username", user)
        .with("subject", user)
}

impl ServerAuthenticator for Htpasswd {
    fn header(&self) -> &str {
        "authorization"
    }

    fn authenticate(&self, value: Option<&[u8]>) -> Result<AuthInfo, AuthRefusal> {
        let value = value.ok_or(AuthRefusal::Missing)?;
        if let Some(user) = self.remembered(value) {
            return Ok(admitted(&user));
        }
        let encoded = value
            .strip_prefix(b"Basic ")
            .or_else(|| value.strip_prefix(b"basic "))
            .ok_or(AuthRefusal::Invalid)?;
        let decoded = STANDARD
            .decode(encoded.trim_ascii())
            .map_err(|_| AuthRefusal::Invalid)?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or(AuthRefusal::Invalid)?;
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user = std::str::from_utf8(user).map_err(|_| AuthRefusal::Invalid)?;
        let users = self.users();
        let (stored, known) = match users.users.get(user) {
            Some(stored) => (stored, true),
            None => (&users.dummy, false),
        };
        if !(stored.verify(password) && known) {
            return Err(AuthRefusal::Invalid);
        }
        if stored.is_slow() {
            let mut passed = self.passed.write().unwrap_or_else(|e| e.into_inner());
            // Not if the users changed during the check: that credential may be gone.
            if Arc::ptr_eq(&users, &self.users()) {
                if passed.len() >= CACHE_ENTRIES {
                    passed.clear();
                }
                passed.insert(Self::digest(value), user.to_owned());
            }
        }
        Ok(admitted(user))
    }

    fn blocks(&self) -> bool {
        self.users().dummy.is_slow()
    }

    fn challenge(&self) -> &str {
        "Basic realm=\"sluice\""
    }
}

/// The client side.
struct Client {
    config: ClientAuthConfig,
    /// The `Authorization` value, made when built and again when `password_file` changes, so
    /// a request never reads a file on an async worker.
    header: RwLock<String>,
}

impl Client {
    fn new(config: ClientAuthConfig) -> Result<Client, CredentialError> {
        let header = RwLock::new(Self::header_for(&config)?);
        Ok(Client { config, header })
    }

    /// `Basic <base64(username:password)>`, the password read from its file if it has one.
    fn header_for(config: &ClientAuthConfig) -> Result<String, CredentialError> {
        let password = match (&config.password, &config.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|source| CredentialError::Read {
                    file: file.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => String::new(),
        };
        let token = STANDARD.encode(format!("{}:{password}", config.username));
        Ok(format!("Basic {token}"))
    }
}

impl ClientAuthenticator for Client {
    fn headers(&self) -> Vec<(String, String)> {
        let header = self.header.read().unwrap_or_else(|e| e.into_inner());
        vec![("authorization".to_owned(), header.clone())]
    }
}

/// Builds `basicauth` extensions.
#[derive(Debug, Default)]
pub struct BasicAuthFactory;

impl ExtensionFactory for BasicAuthFactory {
    fn type_name(&self) -> &'static str {
        "basicauth"
    }

    fn check(&self, path: &str, config: &Value) -> Vec<Problem> {
        sluice_core::check_typed(path, config, |c: &BasicAuthConfig| c.check(path))
    }

    fn build(&self, id: &str, config: &Value) -> Result<Box<dyn Extension>, BuildError> {
        let c: BasicAuthConfig = sluice_core::typed(&format!("extensions.{id}"), config)?;
        let server = c
            .htpasswd
            .as_ref()
            .map(|h| {
                load_users(h)
                    .map(|users| Arc::new(Htpasswd::new(users)))
                    .map_err(|e| BuildError::Other(format!("extensions.{id}.htpasswd: {e}")))
            })
            .transpose()?;
        let client = c
            .client_auth
            .clone()
            .map(|config| Client::new(config).map(Arc::new))
            .transpose()
            .map_err(|e| BuildError::Other(format!("extensions.{id}.client_auth: {e}")))?;
        Ok(Box::new(BasicAuth {
            id: id.to_owned(),
            config: c,
            server,
            client,
        }))
    }
}

struct BasicAuth {
    id: String,
    config: BasicAuthConfig,
    server: Option<Arc<Htpasswd>>,
    client: Option<Arc<Client>>,
}

#[async_trait]
impl Extension for BasicAuth {
    /// Follows `htpasswd.file` (users added, removed or given new passwords are honoured
    /// within a second, without a restart) and `client_auth.password_file` (a rotated password
    /// is sent from then on).
    async fn start(
        &self,
        _host: &Host,
        shutdown: CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>, BuildError> {
        let mut tasks = Vec::new();
        if let (Some(server), Some(htpasswd)) = (&self.server, &self.config.htpasswd)
            && let Some(file) = htpasswd.file.clone()
        {
            let (server, htpasswd) = (Arc::clone(server), htpasswd.clone());
            tasks.push(crate::watch(
                self.id.clone(),
                "htpasswd file",
                file,
                shutdown.clone(),
                move |_| {
                    server.replace(load_users(&htpasswd)?);
                    Ok(())
                },
            ));
        }
        if let Some(client) = &self.client
            && let Some(file) = client.config.password_file.clone()
        {
            let client = Arc::clone(client);
            tasks.push(crate::watch(
                self.id.clone(),
                "password file",
                file,
                shutdown,
                move |_| {
                    let header = Client::header_for(&client.config)?;
                    *client.header.write().unwrap_or_else(|e| e.into_inner()) = header;
                    Ok(())
                },
            ));
        }
        Ok(tasks)
    }

    fn server_authenticator(&self) -> Option<Arc<dyn ServerAuthenticator>> {
        self.server
            .clone()
            .map(|s| s as Arc<dyn ServerAuthenticator>)
    }

    fn client_authenticator(&self) -> Option<Arc<dyn ClientAuthenticator>> {
        self.client
            .clone()
            .map(|c| c as Arc<dyn ClientAuthenticator>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with `openssl passwd -apr1 -salt abcdefgh secret`, Python's bcrypt (cost 4) and
    // `printf secret | openssl dgst -sha1 -binary | base64`; every password is `secret`.
    const HTPASSWD: &str = "\
# a comment
apr:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/
apr_short_salt:$apr1$xy$94JxxwMvxqQwA3Iid6OL9.
b2b:$2b$04$rilMvC3n3LyVQLLlK27wFuJqULrSPB8AqB8uK1tdZ8n4/wy8/KDOG
b2y:$2y$04$rilMvC3n3LyVQLLlK27wFuJqULrSPB8AqB8uK1tdZ8n4/wy8/KDOG
b2a:$2a$04$heVvyUj6uo0OFSvFNXKZVuaPZNgf6SuWd95hf3igbh951SyQHg2HW
sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
ssha:{SSHA}dj2lH1ocucmj5OQsjP6mQrVx6FhOYUNs
plain:secret
";

    fn basic(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    fn server(config: Value) -> Arc<dyn ServerAuthenticator> {
        let problems = BasicAuthFactory.check("extensions.basicauth", &config);
        assert!(problems.is_empty(), "{problems:?}");
        BasicAuthFactory
            .build("basicauth", &config)
            .unwrap()
            .server_authenticator()
            .unwrap()
    }

    #[test]
    fn every_hash_kind_admits_its_password_only() {
        let a = server(serde_json::json!({"htpasswd": {"inline": HTPASSWD}}));
        assert!(
            a.blocks(),
            "bcrypt entries are checked off the async workers"
        );
        for user in [
            "apr",
            "apr_short_salt",
            "b2b",
            "b2y",
            "b2a",
            "sha",
            "ssha",
            "plain",
        ] {
            let ok = a
                .authenticate(Some(&basic(user, "secret")))
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            assert_eq!(ok.get("username"), Some(user));
            assert_eq!(ok.get("subject"), Some(user));
            assert_eq!(
                a.authenticate(Some(&basic(user, "Secret"))),
                Err(AuthRefusal::Invalid),
                "{user}"
            );
            // Asked again, a remembered credential passes without the hash.
            assert!(a.authenticate(Some(&basic(user, "secret"))).is_ok());
        }
        assert_eq!(
            a.authenticate(Some(&basic("nobody", "secret"))),
            Err(AuthRefusal::Invalid)
        );
        assert_eq!(a.authenticate(None), Err(AuthRefusal::Missing));
        assert_eq!(
            a.authenticate(Some(b"Bearer secret")),
            Err(AuthRefusal::Invalid)
        );
        assert_eq!(
            a.authenticate(Some(b"Basic !!!")),
            Err(AuthRefusal::Invalid)
        );
        assert_eq!(a.challenge(), "Basic realm=\"sluice\"");
    }

    #[test]
    fn apr1_matches_openssl() {
        assert_eq!(apr1(b"secret", b"abcdefgh"), "h9FWgUz3n9YxylKLlR5SQ/");
        assert_eq!(apr1(b"secret", b"xy"), "94JxxwMvxqQwA3Iid6OL9.");
        // Over 16 bytes, not ASCII: `openssl passwd -apr1 -salt xy 'pässwörd-long-enough-to-pass-16'`.
        assert_eq!(
            apr1("pässwörd-long-enough-to-pass-16".as_bytes(), b"xy"),
            "kIjZJGYKYaA6BUWKHN6Yr0"
        );
    }

    #[test]
    fn inline_wins_over_the_file_and_plain_only_users_never_block() {
        let dir = std::env::temp_dir().join(format!("sluice-basicauth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("htpasswd");
        std::fs::write(&file, "ann:old\nbob:bobs\n").unwrap();
        let a = server(
            serde_json::json!({"htpasswd": {"file": file.to_str().unwrap(), "inline": "ann:new"}}),
        );
        assert!(!a.blocks());
        assert!(a.authenticate(Some(&basic("ann", "new"))).is_ok());
        let apr = server(
            serde_json::json!({"htpasswd": {"inline": "apr:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/"}}),
        );
        assert!(
            apr.blocks(),
            "a thousand MD5 rounds run off the async workers"
        );
        assert_eq!(
            apr.authenticate(Some(&basic("nobody", "secret"))),
            Err(AuthRefusal::Invalid)
        );
        assert!(a.authenticate(Some(&basic("ann", "old"))).is_err());
        assert!(a.authenticate(Some(&basic("bob", "bobs"))).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_changed_htpasswd_file_is_followed_and_forgets_what_passed_before() {
        let dir = std::env::temp_dir().join(format!("sluice-basicwatch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("htpasswd");
        // bcrypt, so the credential is remembered once it passes.
        std::fs::write(
            &file,
            "ann:$2b$04$rilMvC3n3LyVQLLlK27wFuJqULrSPB8AqB8uK1tdZ8n4/wy8/KDOG\n",
        )
        .unwrap();
        let config = serde_json::json!({"htpasswd": {"file": file.to_str().unwrap()}});
        let ext = BasicAuthFactory.build("basicauth", &config).unwrap();
        let shutdown = CancellationToken::new();
        let host = Host {
            status: sluice_core::ServiceStatus::new(),
            stores: sluice_core::store::Stores::new(),
            authenticators: std::collections::BTreeMap::new(),
        };
        let tasks = ext.start(&host, shutdown.clone()).await.unwrap();
        let a = ext.server_authenticator().unwrap();
        assert!(a.authenticate(Some(&basic("ann", "secret"))).is_ok());
        // ann's password changes and bob arrives.
        let tmp = dir.join(".htpasswd.tmp");
        std::fs::write(&tmp, "ann:{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\nbob:plain\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while a.authenticate(Some(&basic("bob", "plain"))).is_err() {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // The remembered old password is forgotten; the new one (`123456`) passes.
        assert_eq!(
            a.authenticate(Some(&basic("ann", "secret"))),
            Err(AuthRefusal::Invalid)
        );
        assert!(a.authenticate(Some(&basic("ann", "123456"))).is_ok());
        shutdown.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_client_sends_basic_credentials_and_follows_its_password_file() {
        let dir = std::env::temp_dir().join(format!("sluice-basicclient-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "first\n").unwrap();
        let config = serde_json::json!({"client_auth": {"username": "ann", "password_file": file.to_str().unwrap()}});
        assert!(
            BasicAuthFactory
                .check("extensions.basicauth", &config)
                .is_empty()
        );
        let ext = BasicAuthFactory.build("basicauth", &config).unwrap();
        assert!(ext.server_authenticator().is_none());
        let client = ext.client_authenticator().unwrap();
        let expect = |p: &str| {
            vec![(
                "authorization".to_owned(),
                String::from_utf8(basic("ann", p)).unwrap(),
            )]
        };
        assert_eq!(client.headers(), expect("first"));
        let shutdown = CancellationToken::new();
        let host = Host {
            status: sluice_core::ServiceStatus::new(),
            stores: sluice_core::store::Stores::new(),
            authenticators: std::collections::BTreeMap::new(),
        };
        let tasks = ext.start(&host, shutdown.clone()).await.unwrap();
        let tmp = dir.join(".password.tmp");
        std::fs::write(&tmp, "second\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while client.headers() != expect("second") {
            assert!(std::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        shutdown.cancel();
        for t in tasks {
            t.await.unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn configs_it_cannot_honour_are_refused_naming_the_line() {
        let check = |v: Value| -> Vec<String> {
            BasicAuthFactory
                .check("extensions.basicauth/x", &v)
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            check(serde_json::json!({"htpasswd": {"inline": "ok:pw\nbad:$6$salt$hash"}})),
            [
                "error: extensions.basicauth/x.htpasswd.inline: inline line 2: crypt(3) hashes ($1$, $5$, $6$) are not supported; use bcrypt (htpasswd -B)"
            ]
        );
        assert_eq!(
            check(serde_json::json!({"htpasswd": {"inline": "a:$2y$04$short"}})).len(),
            1
        );
        assert_eq!(
            check(serde_json::json!({"htpasswd": {"inline": "x"}})),
            [
                "error: extensions.basicauth/x.htpasswd.inline: inline line 1: expected `user:password`"
            ]
        );
        assert_eq!(
            check(
                serde_json::json!({"htpasswd": {"inline": "a:b"}, "client_auth": {"username": "u", "password": "p"}})
            ),
            [
                "error: extensions.basicauth/x: set htpasswd (server side) or client_auth (client side), not both: use one basicauth extension for each"
            ]
        );
        assert_eq!(
            check(serde_json::json!({"client_auth": {"username": "u"}})),
            [
                "error: extensions.basicauth/x.client_auth: set exactly one of password and password_file"
            ]
        );
        let c: BasicAuthConfig = serde_json::from_value(
            serde_json::json!({"client_auth": {"username": "u", "password": "hunter2"}}),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
