//! The store's credentials: a bearer token or a basic-auth password, each read from a file that
//! may change while the consumer runs (a Kubernetes Secret mount is swapped atomically when the
//! Secret rotates). Before each request the file is looked at (one `stat`, no read) and re-read
//! only if it changed, or after the store answered 401/403; a file that cannot be read then
//! keeps the last value, with one warning until it can be read again.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::sink::SinkError;

/// How the sink authenticates to the store. Names files, never holds their contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthSettings {
    /// `Authorization: Bearer <token>`, the token read from `--sink-bearer-token-file`.
    BearerTokenFile(PathBuf),
    /// `Authorization: Basic ...` (RFC 7617) with `--sink-basic-auth-username` and the password
    /// read from `--sink-basic-auth-password-file`.
    Basic {
        username: String,
        password_file: PathBuf,
    },
}

/// The credentials in use, kept fresh from their files.
#[derive(Debug)]
pub(super) enum Credentials {
    Bearer(SecretFile),
    Basic {
        username: String,
        password: SecretFile,
    },
}

impl Credentials {
    /// Reads the files `settings` names; an unreadable or empty file is an error naming its flag.
    pub(super) fn open(settings: &AuthSettings) -> Result<Self, SinkError> {
        match settings {
            AuthSettings::BearerTokenFile(path) => Ok(Self::Bearer(SecretFile::open(
                "--sink-bearer-token-file",
                path.clone(),
            )?)),
            AuthSettings::Basic {
                username,
                password_file,
            } => {
                // RFC 7617: the user-id cannot hold a colon (the password may).
                if username.is_empty()
                    || username.contains(':')
                    || username.contains(char::is_control)
                {
                    return Err(SinkError::Store(format!(
                        "--sink-basic-auth-username {username:?}: must be non-empty, without ':' \
                         or control characters"
                    )));
                }
                Ok(Self::Basic {
                    username: username.clone(),
                    password: SecretFile::open(
                        "--sink-basic-auth-password-file",
                        password_file.clone(),
                    )?,
                })
            }
        }
    }

    /// `request` with the `Authorization` header (marked sensitive, so it is never logged).
    pub(super) fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Bearer(token) => request.bearer_auth(token.current().0),
            Self::Basic { username, password } => {
                request.basic_auth(username, Some(password.current().0))
            }
        }
    }

    /// The store refused the credentials (401/403): read the file again before the next request
    /// even if it looks unchanged (a rewrite within the file system's timestamp granularity).
    pub(super) fn refused(&self) {
        match self {
            Self::Bearer(file) | Self::Basic { password: file, .. } => file.mark_stale(),
        }
    }
}

/// A secret; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Secret(pub(super) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What identifies one version of a file without reading it: a Secret update replaces the file
/// (new inode), an edit in place changes its modification time or length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    device: u64,
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    // `metadata` follows symlinks: a Secret mount's file is a link into its current version.
    let metadata = std::fs::metadata(path)?;
    Ok(Fingerprint {
        device: metadata.dev(),
        inode: metadata.ino(),
        modified: metadata.modified().ok(),
        len: metadata.len(),
    })
}

/// A secret read from a file, whitespace around it trimmed (as Prometheus does), re-read when
/// the file changes.
pub(super) struct SecretFile {
    flag: &'static str,
    path: PathBuf,
    state: Mutex<SecretState>,
}

struct SecretState {
    value: Secret,
    /// The version `value` was read from; `None` forces a read.
    read_from: Option<Fingerprint>,
    /// Whether the last look at the file failed (warned about once until it works again).
    failing: bool,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFile")
            .field("flag", &self.flag)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretFile {
    /// Reads `path` now; `flag` names it in errors and logs.
    pub(super) fn open(flag: &'static str, path: PathBuf) -> Result<Self, SinkError> {
        let read = fingerprint(&path)
            .and_then(|print| Ok((print, read_secret(&path)?)))
            .map_err(|error| SinkError::Store(format!("{flag} {}: {error}", path.display())))?;
        let (read_from, value) = read;
        Ok(Self {
            flag,
            path,
            state: Mutex::new(SecretState {
                value,
                read_from: Some(read_from),
                failing: false,
            }),
        })
    }

    /// The secret as the file holds it now, or the last one read if the file cannot be read.
    pub(super) fn current(&self) -> Secret {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let looked = fingerprint(&self.path).and_then(|print| {
            if state.read_from == Some(print) {
                return Ok(None);
            }
            Ok(Some((print, read_secret(&self.path)?)))
        });
        match looked {
            Ok(None) => {}
            Ok(Some((print, value))) => {
                if value != state.value {
                    tracing::info!(flag = self.flag, path = %self.path.display(),
                        "the file changed: its new secret is used from now on");
                }
                state.value = value;
                state.read_from = Some(print);
                state.failing = false;
            }
            Err(error) => {
                if !state.failing {
                    tracing::warn!(flag = self.flag, path = %self.path.display(), %error,
                        "cannot read the file; the secret read last is used until it can");
                }
                state.failing = true;
                // Look again next time, whatever the file's fingerprint then.
                state.read_from = None;
            }
        }
        state.value.clone()
    }

    fn mark_stale(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_from = None;
    }
}

/// The trimmed contents of `path`; empty is an error (a Secret mid-update, or the wrong key).
fn read_secret(path: &Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(Secret(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  first\n").expect("write");
        let file = SecretFile::open("--sink-bearer-token-file", path.clone()).expect("opens");
        assert_eq!(file.current().0, "first");

        // A Secret update: a new file renamed over the old one.
        let next = dir.path().join("token.next");
        std::fs::write(&next, "second").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_eq!(file.current().0, "second");

        std::fs::remove_file(&path).expect("remove");
        assert_eq!(
            file.current().0,
            "second",
            "a missing file keeps the last secret"
        );
        std::fs::write(&path, "\n").expect("write");
        assert_eq!(
            file.current().0,
            "second",
            "an empty file keeps the last secret"
        );
        std::fs::write(&path, "third").expect("write");
        assert_eq!(file.current().0, "third");
    }

    #[test]
    fn a_kubernetes_secret_update_is_seen_through_its_symlinks() {
        // A Secret volume: `token` -> `..data/token`, `..data` -> a timestamped directory; an
        // update writes a new directory and renames a new `..data` link over the old one.
        let dir = tempfile::tempdir().expect("tempdir");
        let version = |name: &str, token: &str| {
            std::fs::create_dir(dir.path().join(name)).expect("mkdir");
            std::fs::write(dir.path().join(name).join("token"), token).expect("write");
        };
        version("..2026_01", "first");
        std::os::unix::fs::symlink("..2026_01", dir.path().join("..data")).expect("link");
        std::os::unix::fs::symlink("..data/token", dir.path().join("token")).expect("link");
        let file =
            SecretFile::open("--sink-bearer-token-file", dir.path().join("token")).expect("opens");
        assert_eq!(file.current().0, "first");

        version("..2026_02", "fresh");
        std::os::unix::fs::symlink("..2026_02", dir.path().join("..data_tmp")).expect("link");
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
        std::fs::remove_dir_all(dir.path().join("..2026_01")).expect("old version removed");
        assert_eq!(file.current().0, "fresh");
    }

    #[test]
    fn a_refused_secret_is_read_again_even_if_the_file_looks_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "aaaa").expect("write");
        let credentials = Credentials::open(&AuthSettings::Basic {
            username: "writer".to_owned(),
            password_file: path.clone(),
        })
        .expect("opens");
        let Credentials::Basic { password, .. } = &credentials else {
            panic!("basic credentials expected");
        };
        // Same length, same inode, and the modification time put back: invisible to `stat`.
        let modified = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        std::fs::write(&path, "bbbb").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(modified))
            .expect("set mtime");
        assert_eq!(password.current().0, "aaaa");
        credentials.refused();
        assert_eq!(password.current().0, "bbbb");
    }

    #[test]
    fn unusable_files_and_usernames_are_refused_at_startup_by_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let error = Credentials::open(&AuthSettings::BearerTokenFile(missing.clone()))
            .expect_err("refused")
            .to_string();
        assert!(
            error.starts_with(&format!("--sink-bearer-token-file {}: ", missing.display())),
            "{error}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").expect("write");
        let error = Credentials::open(&AuthSettings::Basic {
            username: "writer".to_owned(),
            password_file: empty.clone(),
        })
        .expect_err("refused")
        .to_string();
        assert_eq!(
            error,
            format!(
                "--sink-basic-auth-password-file {}: the file is empty",
                empty.display()
            )
        );
        std::fs::write(&empty, "pw").expect("write");
        for username in ["", "a:b"] {
            assert!(
                Credentials::open(&AuthSettings::Basic {
                    username: username.to_owned(),
                    password_file: empty.clone(),
                })
                .is_err(),
                "{username:?} accepted"
            );
        }
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "hunter2").expect("write");
        let credentials = Credentials::open(&AuthSettings::BearerTokenFile(path)).expect("opens");
        let shown = format!("{credentials:?} {:?}", Secret("hunter2".to_owned()));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
