//! Who may log in: a users file of SCRAM-SHA-256 secrets.
//!
//! One line per user, `#` starts a comment:
//!
//! ```text
//! # name:method:iterations:salt:salted-password (base64)
//! marketing:SCRAM-SHA-256:4096:3q2+7w8xVg9Z0pEd3kq7Tg==:E0Pc1C3uL8f0...=
//! ```
//!
//! The secret is the RFC 5802 `SaltedPassword` (PBKDF2-HMAC-SHA-256 of the
//! password), which is what the SCRAM exchange needs on the server side; the
//! password itself is never stored and never crosses the wire. Whoever can
//! read the file can log in to this server as that user (as with any SCRAM
//! secret), so `taglake passwd` writes it readable by its owner only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{SCRAM_ITERATIONS, gen_salted_password};
use datafusion_postgres::pgwire::api::auth::{AuthSource, LoginInfo, Password};
use datafusion_postgres::pgwire::error::PgWireResult;

use crate::{Error, Result, file_err};

const METHOD: &str = "SCRAM-SHA-256";
/// The least PBKDF2 iteration count accepted (RFC 7677's minimum).
pub const MIN_ITERATIONS: usize = 4096;

/// The users of a server, by name.
#[derive(Debug, Clone)]
pub struct Users {
    by_name: Arc<BTreeMap<String, Secret>>,
    iterations: usize,
    /// Key of the stand-in secrets of unknown names (see [`Users::stand_in`]).
    decoy_key: Arc<[u8; 32]>,
    /// Salt length of the stand-ins: the length the file's salts have.
    salt_len: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Secret {
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl Users {
    /// Reads and checks a users file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(file_err(path))?;
        let users = Self::parse(&text, path)?;
        if users.by_name.is_empty() {
            return Err(Error::Users {
                path: path.into(),
                line: 0,
                message: "no users in the file (add one with `taglake passwd NAME --users FILE`)".into(),
            });
        }
        Ok(users)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        let mut iterations = None;
        for (i, raw) in text.lines().enumerate() {
            let bad = |message: String| Error::Users { path: path.into(), line: i + 1, message };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split(':').collect();
            let [name, method, iters, salt, secret] = parts[..] else {
                return Err(bad(format!(
                    "expected name:{METHOD}:iterations:salt:salted-password, found {} field(s)",
                    parts.len()
                )));
            };
            check_name(name).map_err(bad)?;
            if method != METHOD {
                return Err(bad(format!("unsupported method '{method}' (only {METHOD})")));
            }
            let iters: usize = iters
                .parse()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad(format!("iterations '{iters}' is not a positive number")))?;
            if iters < MIN_ITERATIONS {
                return Err(bad(format!(
                    "iterations {iters} is below {MIN_ITERATIONS}, the least SCRAM-SHA-256 allows (RFC 7677); set the \
                     password again with `taglake passwd`"
                )));
            }
            if *iterations.get_or_insert(iters) != iters {
                return Err(bad("every user must use the same iteration count".into()));
            }
            let salt = B64.decode(salt).map_err(|e| bad(format!("salt is not base64: {e}")))?;
            let salted_password = B64.decode(secret).map_err(|e| bad(format!("salted password is not base64: {e}")))?;
            if salted_password.len() != 32 {
                return Err(bad(format!("salted password is {} bytes, expected 32", salted_password.len())));
            }
            if by_name.insert(name.to_string(), Secret { salt, salted_password }).is_some() {
                return Err(bad(format!("user '{name}' appears twice")));
            }
        }
        // The stand-ins' key comes from the secrets themselves: stable across
        // restarts (a name answers the same way every time) and unknown to
        // anyone who cannot read the file.
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        digest.update(b"taglake serve: stand-in SCRAM secrets\0");
        let mut salt_lens = BTreeMap::new();
        for (name, secret) in &by_name {
            for part in [name.as_bytes(), &secret.salt, &secret.salted_password] {
                digest.update(&(part.len() as u64).to_be_bytes());
                digest.update(part);
            }
            *salt_lens.entry(secret.salt.len()).or_insert(0usize) += 1;
        }
        let mut decoy_key = [0u8; 32];
        decoy_key.copy_from_slice(digest.finish().as_ref());
        let salt_len = salt_lens.iter().max_by_key(|(len, n)| (**n, **len)).map_or(16, |(len, _)| *len);
        Ok(Users {
            by_name: Arc::new(by_name),
            iterations: iterations.unwrap_or(SCRAM_ITERATIONS),
            decoy_key: Arc::new(decoy_key),
            salt_len,
        })
    }

    /// The secret an unknown name is challenged with: a salt of the usual
    /// length and a salted password, both derived from the name and a key
    /// only the server knows. The exchange then runs exactly as for a known
    /// user with a wrong password (same iteration count, same salt length
    /// and the same salt on every attempt, the same error after the proof),
    /// so names cannot be probed.
    fn stand_in(&self, name: &str) -> Secret {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.decoy_key.as_slice());
        let derive = |label: &[u8], len: usize| {
            let mut out = Vec::with_capacity(len);
            let mut block = 0u32;
            while out.len() < len {
                let mut ctx = ring::hmac::Context::with_key(&key);
                for part in [label, name.as_bytes(), &block.to_be_bytes()] {
                    ctx.update(part);
                    ctx.update(b"\0");
                }
                out.extend_from_slice(ctx.sign().as_ref());
                block += 1;
            }
            out.truncate(len);
            out
        };
        Secret { salt: derive(b"salt", self.salt_len), salted_password: derive(b"salted-password", 32) }
    }

    /// Whether `password` is `name`'s password, for a login form (the
    /// studio's) rather than a SCRAM exchange. The typed password is
    /// salted and stretched as SCRAM does (PBKDF2-HMAC-SHA-256 with the
    /// stored salt and iteration count), both salted passwords are turned
    /// into the RFC 5802 `StoredKey` (SHA-256 of HMAC(SaltedPassword,
    /// "Client Key")), and those are compared in constant time. An unknown
    /// name is checked against its stand-in secret ([`Users::stand_in`]):
    /// the same work and the same answer as a known name with a wrong
    /// password, so names cannot be probed by timing either.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        use subtle::ConstantTimeEq;
        let (secret, known) = match self.by_name.get(name) {
            Some(s) => (s.clone(), true),
            None => (self.stand_in(name), false),
        };
        let typed = gen_salted_password(password, &secret.salt, self.iterations);
        let same: bool = stored_key(&typed).ct_eq(&stored_key(&secret.salted_password)).into();
        same && known
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The PBKDF2 iteration count the file's secrets use.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Adds or replaces a user in a users file (created if missing),
    /// writing through a temporary file and a rename, mode 0600.
    /// Returns `true` when the user was new.
    pub fn set_password(path: &Path, name: &str, password: &str) -> Result<bool> {
        check_name(name).map_err(Error::Config)?;
        if password.is_empty() {
            return Err(Error::Config("the password is empty".into()));
        }
        let existing = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(file_err(path)(e)),
        };
        let users = Self::parse(&existing, path)?;
        let mut salt = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| Error::Config("the system's random source failed".into()))?;
        let salted = gen_salted_password(password, &salt, users.iterations);
        let entry = format!("{name}:{METHOD}:{}:{}:{}", users.iterations, B64.encode(salt), B64.encode(salted));
        let mut out = String::new();
        let mut replaced = false;
        for line in existing.lines() {
            if line.trim().split(':').next() == Some(name) {
                out.push_str(&entry);
                replaced = true;
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        if existing.is_empty() {
            out.push_str("# taglake serve users: name:method:iterations:salt:salted-password (base64)\n");
        }
        if !replaced {
            out.push_str(&entry);
            out.push('\n');
        }
        write_private(path, &out)?;
        Ok(!replaced)
    }
}

/// RFC 5802's `StoredKey`: SHA-256 of HMAC(SaltedPassword, "Client Key").
fn stored_key(salted_password: &[u8]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salted_password);
    let client_key = ring::hmac::sign(&key, b"Client Key");
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, client_key.as_ref()).as_ref());
    out
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 63 || name.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control()) {
        return Err(format!("user name '{name}' must be 1–63 characters without ':' or spaces"));
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp: PathBuf = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("users")));
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(file_err(&tmp))?;
        f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(file_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(file_err(path))
}

#[async_trait]
impl AuthSource for Users {
    // The trait's signature (async-trait) elides the lifetime.
    #[allow(elided_lifetimes_in_paths)]
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        // An unknown user gets a stand-in secret and fails at the proof,
        // exactly like a known user with a wrong password.
        let secret = match self.by_name.get(user) {
            Some(s) => s.clone(),
            None => self.stand_in(user),
        };
        Ok(Password::new(Some(secret.salt), secret.salted_password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_added_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        assert!(Users::set_password(&path, "ana", "s3cret").unwrap());
        assert!(Users::set_password(&path, "bo", "other").unwrap());
        let before = Users::load(&path).unwrap();
        assert!(!Users::set_password(&path, "ana", "new").unwrap());
        let after = Users::load(&path).unwrap();
        assert_eq!(after.names().collect::<Vec<_>>(), ["ana", "bo"]);
        assert_ne!(before.by_name["ana"], after.by_name["ana"]);
        assert_eq!(before.by_name["bo"], after.by_name["bo"]);
        let ana = &after.by_name["ana"];
        assert_eq!(ana.salted_password, gen_salted_password("new", &ana.salt, SCRAM_ITERATIONS));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(std::fs::read_to_string(&path).unwrap().contains("ana:SCRAM-SHA-256:4096:"));
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_problem() {
        let p = Path::new("users");
        let good = format!("a:{METHOD}:4096:c2FsdA==:{}", B64.encode([7u8; 32]));
        let cases = [
            ("a:b", "users:1: expected name:SCRAM-SHA-256:iterations:salt:salted-password, found 2 field(s)"),
            ("# c\n\na:md5:4096:x:y", "users:3: unsupported method 'md5' (only SCRAM-SHA-256)"),
            ("a:SCRAM-SHA-256:many:x:y", "users:1: iterations 'many' is not a positive number"),
            ("a:SCRAM-SHA-256:4096:!!:y", "users:1: salt is not base64"),
            ("a:SCRAM-SHA-256:4096:c2FsdA==:c2FsdA==", "users:1: salted password is 4 bytes, expected 32"),
            (&format!("{good}\n{good}"), "users:2: user 'a' appears twice"),
            (&format!("{good}\nb:{METHOD}:8192:c2FsdA==:{}", B64.encode([7u8; 32])), "users:2: every user must use"),
            (" x y:SCRAM-SHA-256:1:a:b", "users:1: user name 'x y' must be"),
            ("a:SCRAM-SHA-256:4095:c2FsdA==:y", "users:1: iterations 4095 is below 4096"),
            ("a:SCRAM-SHA-256:1:c2FsdA==:y", "users:1: iterations 1 is below 4096"),
        ];
        for (text, want) in cases {
            let e = Users::parse(text, p).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# nobody\n").unwrap();
        assert!(Users::load(&empty).unwrap_err().to_string().contains("no users in the file"));
        assert!(Users::set_password(&empty, "a:b", "x").unwrap_err().to_string().contains("without ':'"));
        assert_eq!(Users::set_password(&empty, "a", "").unwrap_err().to_string(), "the password is empty");
    }

    /// A login form's check: the password `set_password` wrote verifies,
    /// any other does not, and an unknown name never does.
    #[test]
    fn verify_accepts_the_password_set_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::set_password(&path, "ana", "s3cret pass").unwrap();
        Users::set_password(&path, "bo", "other").unwrap();
        let users = Users::load(&path).unwrap();
        assert!(users.verify("ana", "s3cret pass"));
        assert!(users.verify("bo", "other"));
        for (name, pw) in [("ana", "s3cret"), ("ana", "s3cret pass "), ("ana", ""), ("bo", "s3cret pass")] {
            assert!(!users.verify(name, pw), "{name} / {pw:?}");
        }
        assert!(!users.verify("mallory", "s3cret pass"));
        assert!(!users.verify("", ""));
        // The stored key of the secret is RFC 5802's: HMAC then SHA-256.
        let ana = &users.by_name["ana"];
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &ana.salted_password);
        let client = ring::hmac::sign(&key, b"Client Key");
        assert_eq!(
            &stored_key(&ana.salted_password)[..],
            ring::digest::digest(&ring::digest::SHA256, client.as_ref()).as_ref()
        );
    }

    /// An unknown name is answered like a known one: the same iteration
    /// count, a salt of the same length that is the same on every attempt,
    /// and a secret no password matches.
    #[test]
    fn unknown_names_get_a_stable_stand_in_shaped_like_a_real_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::set_password(&path, "ana", "s3cret").unwrap();
        let users = Users::load(&path).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ask = |name: &str| {
            let login = LoginInfo::new(Some(name), None, "127.0.0.1".into());
            rt.block_on(users.get_password(&login)).expect("every name gets a challenge")
        };
        let real = ask("ana");
        let (a, b, other) = (ask("mallory"), ask("mallory"), ask("eve"));
        assert_eq!(a.salt().unwrap().len(), real.salt().unwrap().len());
        assert_eq!(a.password().len(), real.password().len());
        assert_eq!((a.salt(), a.password()), (b.salt(), b.password()), "the same on every attempt");
        assert_ne!(a.salt(), other.salt(), "each name its own");
        assert_ne!(a.salt(), real.salt());
        // Reloading the same file gives the same stand-ins (stable across restarts).
        let again = Users::load(&path).unwrap();
        assert_eq!(again.stand_in("mallory"), users.stand_in("mallory"));
        assert_ne!(users.stand_in("mallory").salted_password, gen_salted_password("s3cret", a.salt().unwrap(), 4096));
    }
}
