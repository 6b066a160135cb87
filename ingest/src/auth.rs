//! Who a request comes from: the token file (`client_id=token` lines) and the resolution of an
//! `Authorization` header to a [`ClientId`], in token mode or in the prototype's open mode.
//!
//! Tokens are secrets: no error, log line or `Debug` output here ever contains one, and the
//! table keeps only their SHA-256 digests, compared in constant time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::HeaderValue;
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use metricstream_backend::ClientId;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// The longest client id accepted, in bytes, whether from the token file or an open-mode header.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// How an `Authorization` header becomes a client id.
pub enum Authenticator {
    /// No token file: the whole header value is the client id, as in the C++ prototype.
    Open,
    /// `Authorization: Bearer <token>` (or `Token <token>`, or basic auth with the token as the
    /// password: see [`presented_token`]), the token looked up in the token file. Shared with
    /// the reloader, which swaps in a new table when the file changes.
    Tokens(Arc<ArcSwap<TokenTable>>),
}

/// Why a request's client could not be established.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the Authorization header is missing or empty")]
    Missing,
    #[error(
        "the token is not recognised; send `Authorization: Bearer <token>` (or `Token <token>`, or basic auth with the token as the password)"
    )]
    UnknownToken,
    #[error("the Authorization header is not a valid client id: {0}")]
    InvalidClientId(String),
}

impl Authenticator {
    /// Token mode with `table`, until a reload replaces it.
    pub fn tokens(table: TokenTable) -> Self {
        Self::Tokens(Arc::new(ArcSwap::from_pointee(table)))
    }

    /// Whether clients are expected to send bearer tokens (decides the `WWW-Authenticate`
    /// challenge on 401 answers).
    pub fn expects_bearer(&self) -> bool {
        matches!(self, Self::Tokens(_))
    }

    /// Resolves the client of a request from its `Authorization` header, if any.
    pub fn client_id(&self, authorization: Option<&HeaderValue>) -> Result<ClientId, AuthError> {
        let value = authorization
            .map(HeaderValue::as_bytes)
            .filter(|bytes| !bytes.is_empty())
            .ok_or(AuthError::Missing)?;
        match self {
            Self::Open => open_mode_client_id(value),
            Self::Tokens(table) => {
                let token = presented_token(value).ok_or(AuthError::UnknownToken)?;
                table.load().lookup(&token).ok_or(AuthError::UnknownToken)
            }
        }
    }
}

fn open_mode_client_id(value: &[u8]) -> Result<ClientId, AuthError> {
    let id = std::str::from_utf8(value)
        .map_err(|_| AuthError::InvalidClientId("it is not valid UTF-8".to_owned()))?;
    check_client_id(id).map_err(AuthError::InvalidClientId)?;
    Ok(ClientId::new(id))
}

/// The token an `Authorization` value presents, in the schemes the agents that send to us use
/// (scheme names case-insensitive, per RFC 9110):
///
/// - `Bearer <token>`: MetricStream's own clients, Prometheus' `authorization`, OTLP exporters;
/// - `Token <token>`: InfluxDB 2's scheme, which Telegraf and the influxdb clients send;
/// - `Basic base64(user:token)`: Prometheus' `basic_auth` and InfluxDB 1 clients; the user name
///   is ignored and the password is the token.
///
/// `None` for any other scheme, a malformed basic credential or an empty token.
fn presented_token(value: &[u8]) -> Option<Cow<'_, str>> {
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, credential) = value.split_once(' ')?;
    let credential = credential.trim_matches(' ');
    let token = if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        Cow::Borrowed(credential)
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64_STANDARD.decode(credential).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        Cow::Owned(password.to_owned())
    } else {
        return None;
    };
    (!token.is_empty()).then_some(token)
}

/// Checks a client id is usable as a partition key and a log field: non-empty, at most
/// [`MAX_CLIENT_ID_BYTES`], no control characters. The error says which rule it broke, never
/// what the id was.
fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("it is empty".to_owned());
    }
    if id.len() > MAX_CLIENT_ID_BYTES {
        return Err(format!(
            "it is {} bytes long; the limit is {MAX_CLIENT_ID_BYTES}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("it contains control characters".to_owned());
    }
    Ok(())
}

/// The SHA-256 digest of a token: what the table keeps instead of the token.
type TokenDigest = [u8; 32];

fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Bearer tokens (as SHA-256 digests) and the client each stands for, as loaded from the token
/// file.
///
/// A lookup compares the presented token's digest with every entry's, each comparison in
/// constant time and without stopping at a match, so how long it takes depends only on the
/// number of tokens, never on how much of a guessed token (or of its digest) is right. Comparing
/// fixed-size digests rather than the tokens also hides the tokens' lengths.
pub struct TokenTable {
    entries: Vec<(TokenDigest, ClientId)>,
}

/// Deliberately prints only the number of tokens, never the tokens or their digests.
impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field("tokens", &self.entries.len())
            .finish()
    }
}

/// A token file that cannot be used. Names the line, never its content (it may hold a token).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("it holds no `client_id=token` line; every request would be refused")]
    Empty,
    #[error("it is not UTF-8 text (first invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
}

impl TokenTable {
    /// Reads and parses the token file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the tokens file {}", path.display()))?;
        Self::parse_bytes(&bytes).with_context(|| format!("in the tokens file {}", path.display()))
    }

    /// Parses the token file's raw content, which must be UTF-8.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, TokenFileError> {
        let text = std::str::from_utf8(bytes).map_err(|error| TokenFileError::NotUtf8 {
            offset: error.valid_up_to(),
        })?;
        Self::parse(text)
    }

    /// Parses `client_id=token` lines, split at the first `=`, each side trimmed. Blank lines
    /// and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        // Each token with its client and the line it came from, to name both lines of a duplicate.
        let mut entries: HashMap<TokenDigest, (ClientId, usize)> = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |problem: String| TokenFileError::Line {
                line: line_number,
                problem,
            };
            let (client, token) = line
                .split_once('=')
                .ok_or_else(|| malformed("expected `client_id=token`, found no `=`".to_owned()))?;
            let (client, token) = (client.trim(), token.trim());
            check_client_id(client)
                .map_err(|why| malformed(format!("the client id is invalid: {why}")))?;
            if token.is_empty() {
                return Err(malformed(format!("client {client:?} has an empty token")));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(malformed(format!(
                    "the token of client {client:?} contains whitespace or control characters, \
                     which a bearer token cannot carry"
                )));
            }
            match entries.entry(token_digest(token)) {
                Entry::Occupied(first) => {
                    let (first_client, first_line) = first.get();
                    return Err(malformed(format!(
                        "client {client:?} has the same token as client {first_client:?} on line \
                         {first_line}; each token must name exactly one client"
                    )));
                }
                Entry::Vacant(slot) => {
                    slot.insert((ClientId::new(client), line_number));
                }
            }
        }
        let entries: Vec<(TokenDigest, ClientId)> = entries
            .into_iter()
            .map(|(digest, (client, _line))| (digest, client))
            .collect();
        if entries.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Self { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true for a table that loaded: an empty token file is refused.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The client of `token`, if it is in the table. Visits every entry whatever the outcome;
    /// the index of the match is selected without branching on secret data.
    fn lookup(&self, token: &str) -> Option<ClientId> {
        let presented = token_digest(token);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (position, (digest, _)) in self.entries.iter().enumerate() {
            let is_match = digest.ct_eq(&presented);
            index = u64::conditional_select(&index, &(position as u64), is_match);
            found |= is_match;
        }
        if bool::from(found) {
            let index = usize::try_from(index).ok()?;
            self.entries.get(index).map(|(_, client)| client.clone())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).expect("valid header value")
    }

    fn tokens(text: &str) -> Authenticator {
        Authenticator::tokens(TokenTable::parse(text).expect("token file parses"))
    }

    #[test]
    fn open_mode_uses_the_whole_header_as_client_id() {
        let auth = Authenticator::Open;
        assert_eq!(
            auth.client_id(Some(&header("team-a"))),
            Ok(ClientId::new("team-a"))
        );
        // The prototype took the value verbatim, scheme and all.
        assert_eq!(
            auth.client_id(Some(&header("Bearer abc"))),
            Ok(ClientId::new("Bearer abc"))
        );
    }

    #[test]
    fn missing_or_empty_header_is_missing_in_both_modes() {
        for auth in [Authenticator::Open, tokens("a=t1")] {
            assert_eq!(auth.client_id(None), Err(AuthError::Missing));
            assert_eq!(auth.client_id(Some(&header(""))), Err(AuthError::Missing));
        }
    }

    #[test]
    fn open_mode_rejects_overlong_client_ids() {
        let auth = Authenticator::Open;
        let longest = "x".repeat(MAX_CLIENT_ID_BYTES);
        assert_eq!(
            auth.client_id(Some(&header(&longest))),
            Ok(ClientId::new(longest.clone()))
        );
        let too_long = "x".repeat(MAX_CLIENT_ID_BYTES + 1);
        assert!(matches!(
            auth.client_id(Some(&header(&too_long))),
            Err(AuthError::InvalidClientId(why)) if why.contains("257 bytes")
        ));
    }

    #[test]
    fn open_mode_rejects_control_characters_and_invalid_utf8() {
        let auth = Authenticator::Open;
        let tab = header("a\tb");
        assert!(matches!(
            auth.client_id(Some(&tab)),
            Err(AuthError::InvalidClientId(why)) if why.contains("control")
        ));
        let latin1 = HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid header");
        assert!(matches!(
            auth.client_id(Some(&latin1)),
            Err(AuthError::InvalidClientId(why)) if why.contains("UTF-8")
        ));
        let utf8 = HeaderValue::from_bytes("café".as_bytes()).expect("valid header");
        assert_eq!(auth.client_id(Some(&utf8)), Ok(ClientId::new("café")));
    }

    #[test]
    fn token_mode_maps_bearer_tokens_to_clients() {
        let auth = tokens("team-a=secret-a\nteam-b=secret-b\n");
        assert_eq!(
            auth.client_id(Some(&header("Bearer secret-a"))),
            Ok(ClientId::new("team-a"))
        );
        assert_eq!(
            auth.client_id(Some(&header("bearer   secret-b"))),
            Ok(ClientId::new("team-b"))
        );
    }

    #[test]
    fn token_mode_takes_influx_tokens_and_basic_auth_passwords() {
        let auth = tokens("team-a=secret-a\nteam-b=secret-b\n");
        assert_eq!(
            auth.client_id(Some(&header("Token secret-b"))),
            Ok(ClientId::new("team-b"))
        );
        let basic = |credential: &str| format!("Basic {}", BASE64_STANDARD.encode(credential));
        for credential in ["prometheus:secret-a", ":secret-a", "anyone:secret-a"] {
            assert_eq!(
                auth.client_id(Some(&header(&basic(credential)))),
                Ok(ClientId::new("team-a")),
                "{credential:?}"
            );
        }
        for credential in ["secret-a", "secret-a:", "prometheus:wrong"] {
            assert_eq!(
                auth.client_id(Some(&header(&basic(credential)))),
                Err(AuthError::UnknownToken),
                "{credential:?}"
            );
        }
    }

    #[test]
    fn token_mode_refuses_unknown_tokens_and_other_schemes() {
        let auth = tokens("team-a=secret-a");
        for value in [
            "Bearer wrong",
            "Bearer secret-a-but-longer",
            "Bearer ",
            "Bearer",
            "secret-a",
            "Basic secret-a",
            "Digest secret-a",
            "Token ",
            "team-a",
        ] {
            assert_eq!(
                auth.client_id(Some(&header(value))),
                Err(AuthError::UnknownToken),
                "{value:?}"
            );
        }
    }

    #[test]
    fn token_file_splits_at_the_first_equals_and_skips_comments() {
        let table = TokenTable::parse(
            "# clients of the web team\n\
             \n\
             web = abc==\n   \
             # indented comment\r\n\
             batch=x=y\r\n",
        )
        .expect("parses");
        assert_eq!(table.len(), 2);
        assert_eq!(table.lookup("abc=="), Some(ClientId::new("web")));
        assert_eq!(table.lookup("x=y"), Some(ClientId::new("batch")));
    }

    #[test]
    fn one_client_may_have_several_tokens() {
        let table = TokenTable::parse("web=old\nweb=new").expect("parses");
        assert_eq!(table.lookup("old"), Some(ClientId::new("web")));
        assert_eq!(table.lookup("new"), Some(ClientId::new("web")));
    }

    #[test]
    fn malformed_lines_are_named_by_number_without_the_token() {
        let cases = [
            ("a=1\nno-equals-sign-s3cr3t\n", 2),
            ("a=1\n\n=s3cr3t", 3),
            ("client-without-token=", 1),
            ("a=s3cr3t with space", 1),
            (
                &format!("{}=s3cr3t", "c".repeat(MAX_CLIENT_ID_BYTES + 1)),
                1,
            ),
            ("a\u{7}b=s3cr3t", 1),
            ("a=s3cr3t\nb=s3cr3t", 2),
        ];
        for (text, expected_line) in cases {
            let error = TokenTable::parse(text).expect_err(text);
            assert!(
                matches!(error, TokenFileError::Line { line, .. } if line == expected_line),
                "{text:?}: {error}"
            );
            let message = error.to_string();
            assert!(!message.contains("s3cr3t"), "{text:?} leaked: {message}");
        }
    }

    #[test]
    fn a_file_without_tokens_is_refused() {
        assert_eq!(
            TokenTable::parse("# nothing yet\n\n").err(),
            Some(TokenFileError::Empty)
        );
    }

    #[test]
    fn lookup_finds_each_of_many_tokens_and_nothing_close_to_them() {
        let text: String = (0..50)
            .map(|i| format!("client-{i}=token-{i:03}\n"))
            .collect();
        let table = TokenTable::parse(&text).expect("parses");
        for i in 0..50 {
            assert_eq!(
                table.lookup(&format!("token-{i:03}")),
                Some(ClientId::new(format!("client-{i}")))
            );
        }
        for near_miss in [
            "token-050",
            "token-00",
            "token-0000",
            "oken-001",
            "TOKEN-001",
            "",
        ] {
            assert_eq!(table.lookup(near_miss), None, "{near_miss:?}");
        }
    }

    #[test]
    fn the_table_keeps_digests_not_tokens() {
        let table = TokenTable::parse("web=s3cr3t-value").expect("parses");
        assert_eq!(table.entries.len(), 1);
        let (digest, client) = &table.entries[0];
        assert_eq!(*digest, token_digest("s3cr3t-value"));
        assert_eq!(*client, ClientId::new("web"));
        assert!(
            !digest
                .windows(b"s3cr3t".len())
                .any(|window| window == b"s3cr3t")
        );
    }

    #[test]
    fn a_swapped_table_is_used_by_the_next_lookup() {
        let auth = tokens("team-a=old");
        let Authenticator::Tokens(shared) = &auth else {
            panic!("token mode");
        };
        shared.store(Arc::new(TokenTable::parse("team-a=new").expect("parses")));
        assert_eq!(
            auth.client_id(Some(&header("Bearer old"))),
            Err(AuthError::UnknownToken)
        );
        assert_eq!(
            auth.client_id(Some(&header("Bearer new"))),
            Ok(ClientId::new("team-a"))
        );
    }

    #[test]
    fn a_token_file_that_is_not_utf8_is_refused_without_its_content() {
        let error = TokenTable::parse_bytes(b"a=s3cr3t\xff").expect_err("not UTF-8");
        assert_eq!(error, TokenFileError::NotUtf8 { offset: 8 });
        assert!(!error.to_string().contains("s3cr3t"));
    }

    #[test]
    fn debug_output_hides_tokens() {
        let table = TokenTable::parse("web=s3cr3t").expect("parses");
        let shown = format!("{table:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
