//! What `taglake studio` is allowed to do, checked once before it listens.
//!
//! The builder takes the settings as given (`"0.0.0.0:8080"`, paths) and
//! [`StudioConfigBuilder::build`] turns them into a [`StudioConfig`] or an
//! [`Error::Parameter`] naming the setting (as its builder method is
//! named; `taglake studio` shows it as its flag). The security rule lives
//! here, as in `taglake serve`'s configuration, so no code path can start
//! a studio that breaks it: a non-loopback address needs a users file (and
//! [`crate::Studio::start`] checks it again). A certificate needs its key;
//! the export directory must exist and keep apart from the warehouse.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use taglake_base::units::parse_duration;
use taglake_serve::Users;
use taglake_storage::ParamMessage;

use crate::{Error, Result};

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// A validated studio configuration; the only way to get one is
/// [`StudioConfigBuilder::build`].
#[derive(Debug, Clone)]
pub struct StudioConfig {
    listen: SocketAddr,
    warehouse: PathBuf,
    users: Option<Users>,
    tls: Option<(PathBuf, PathBuf)>,
    export_dir: Option<PathBuf>,
    refresh_interval: Duration,
    session_idle: Duration,
    session_max: Duration,
}

impl StudioConfig {
    /// A builder with the defaults: loopback port 8080, no users, no TLS,
    /// a refresh check every 5 seconds, sessions that end after 30 minutes
    /// without a request or 12 hours after the login.
    pub fn builder(warehouse: impl Into<PathBuf>) -> StudioConfigBuilder {
        StudioConfigBuilder {
            warehouse: warehouse.into(),
            listen: DEFAULT_LISTEN.into(),
            users: None,
            tls_cert: None,
            tls_key: None,
            export_dir: None,
            refresh_interval: "5s".into(),
            session_idle: "30m".into(),
            session_max: "12h".into(),
        }
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
    /// The warehouse directory.
    pub fn warehouse(&self) -> &Path {
        &self.warehouse
    }
    /// Who may log in; `None` = no login (loopback only).
    pub fn users(&self) -> Option<&Users> {
        self.users.as_ref()
    }
    /// Certificate chain and private key (PEM) for HTTPS.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        self.tls.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))
    }
    /// Where exports will be written (canonical path), when given.
    pub fn export_dir(&self) -> Option<&Path> {
        self.export_dir.as_deref()
    }
    /// How often the warehouse is checked for a new snapshot.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }
    /// A session without a request for this long ends.
    pub fn session_idle(&self) -> Duration {
        self.session_idle
    }
    /// A session ends this long after it began, however busy.
    pub fn session_max(&self) -> Duration {
        self.session_max
    }

    /// The rule no studio may break: a non-loopback address needs users.
    pub(crate) fn check_exposure(listen: SocketAddr, users: Option<&Users>) -> Result<()> {
        if users.is_none() && !listen.ip().is_loopback() {
            return Err(Error::Parameter(
                ParamMessage::text(format!(
                    "refusing to listen on {listen} without logins: anyone who reaches that address could read \
                     every member; give "
                ))
                .then_param("users")
                .then_text(" FILE (add users with `taglake passwd NAME ")
                .then_param("users")
                .then_text(" FILE`) or listen on 127.0.0.1"),
            ));
        }
        Ok(())
    }
}

/// The settings as given; [`build`](Self::build) checks them.
#[derive(Debug, Clone)]
pub struct StudioConfigBuilder {
    warehouse: PathBuf,
    listen: String,
    users: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    export_dir: Option<PathBuf>,
    refresh_interval: String,
    session_idle: String,
    session_max: String,
}

impl StudioConfigBuilder {
    /// `HOST:PORT` to listen on (port 0 picks a free one).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }
    /// The users file (`taglake passwd`), as `taglake serve` reads it.
    pub fn users(mut self, path: Option<PathBuf>) -> Self {
        self.users = path;
        self
    }
    /// TLS certificate chain (PEM); needs [`tls_key`](Self::tls_key).
    pub fn tls_cert(mut self, cert: Option<PathBuf>) -> Self {
        self.tls_cert = cert;
        self
    }
    /// TLS private key (PEM); needs [`tls_cert`](Self::tls_cert).
    pub fn tls_key(mut self, key: Option<PathBuf>) -> Self {
        self.tls_key = key;
        self
    }
    /// The directory exports will be written into.
    pub fn export_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.export_dir = dir;
        self
    }
    /// How often to look for a new snapshot, e.g. `5s`.
    pub fn refresh_interval(mut self, every: impl Into<String>) -> Self {
        self.refresh_interval = every.into();
        self
    }
    /// How long a session may go without a request, e.g. `30m`.
    pub fn session_idle(mut self, idle: impl Into<String>) -> Self {
        self.session_idle = idle.into();
        self
    }
    /// How long a session may last at most, e.g. `12h`.
    pub fn session_max(mut self, max: impl Into<String>) -> Self {
        self.session_max = max.into();
        self
    }

    /// Checks every setting.
    pub fn build(self) -> Result<StudioConfig> {
        let listen = resolve(&self.listen)?;
        let users = self.users.as_deref().map(Users::load).transpose()?;
        StudioConfig::check_exposure(listen, users.as_ref())?;
        let tls = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ParamMessage::param("tls_cert")
                    .then_text(" needs ")
                    .then_param("tls_key")
                    .then_text(" (the certificate's private key)")
                    .into());
            }
            (None, Some(_)) => {
                return Err(ParamMessage::param("tls_key")
                    .then_text(" needs ")
                    .then_param("tls_cert")
                    .then_text(" (the certificate chain)")
                    .into());
            }
            (Some(c), Some(k)) => Some((readable(&c, "tls_cert")?, readable(&k, "tls_key")?)),
        };
        let export_dir = self.export_dir.map(|d| export_dir(&d, &self.warehouse)).transpose()?;
        let refresh_interval = duration(&self.refresh_interval, "refresh_interval", Duration::from_millis(100))?;
        let session_idle = duration(&self.session_idle, "session_idle", Duration::from_secs(1))?;
        let session_max = duration(&self.session_max, "session_max", Duration::from_secs(1))?;
        Ok(StudioConfig {
            listen,
            warehouse: self.warehouse,
            users,
            tls,
            export_dir,
            refresh_interval,
            session_idle,
            session_max,
        })
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    let bad = |why: String| {
        Error::from(
            ParamMessage::param("listen")
                .then_text(format!(" '{addr}': {why} (expected HOST:PORT, e.g. {DEFAULT_LISTEN})")),
        )
    };
    let mut all = addr.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    all.next().ok_or_else(|| bad("the name resolves to no address".into()))
}

fn readable(path: &Path, parameter: &'static str) -> Result<PathBuf> {
    std::fs::metadata(path)
        .map_err(|e| Error::from(ParamMessage::param(parameter).then_text(format!(" {}: {e}", path.display()))))?;
    Ok(path.to_path_buf())
}

fn duration(text: &str, parameter: &'static str, least: Duration) -> Result<Duration> {
    parse_duration(text).filter(|d| *d >= least).ok_or_else(|| {
        ParamMessage::param(parameter)
            .then_text(format!(" '{text}': expected a duration of at least {}ms, like 5s or 30m", least.as_millis()))
            .into()
    })
}

/// The export directory, resolved: it must exist and be a directory, and
/// neither hold the warehouse nor lie inside it.
fn export_dir(dir: &Path, warehouse: &Path) -> Result<PathBuf> {
    let bad =
        |why: String| Error::from(ParamMessage::param("export_dir").then_text(format!(" {}: {why}", dir.display())));
    let resolved = dir.canonicalize().map_err(|e| bad(e.to_string()))?;
    if !resolved.is_dir() {
        return Err(bad("not a directory".into()));
    }
    if let Ok(wh) = warehouse.canonicalize()
        && (resolved.starts_with(&wh) || wh.starts_with(&resolved))
    {
        return Err(bad(format!(
            "it holds or lies inside the warehouse ({}); give a directory of its own",
            warehouse.display()
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: StudioConfigBuilder) -> String {
        match b.build().unwrap_err() {
            Error::Parameter(m) => m.render(|p| format!("--{}", p.replace('_', "-"))),
            other => other.to_string(),
        }
    }

    #[test]
    fn a_public_address_needs_users() {
        let e = err(StudioConfig::builder("wh").listen("0.0.0.0:8080"));
        assert!(e.starts_with("refusing to listen on 0.0.0.0:8080 without logins"), "{e}");
        assert!(e.contains("give --users FILE"), "{e}");
        assert!(StudioConfig::builder("wh").listen("127.0.0.1:0").build().is_ok());
        assert!(StudioConfig::builder("wh").listen("[::1]:0").build().is_ok());
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        Users::set_password(&users, "ana", "pw").unwrap();
        let c = StudioConfig::builder("wh").listen("0.0.0.0:0").users(Some(users)).build().unwrap();
        assert!(c.users().is_some());
        let public: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(StudioConfig::check_exposure(public, None).is_err());
    }

    #[test]
    fn every_bad_setting_names_itself() {
        let b = || StudioConfig::builder("wh");
        assert!(err(b().listen("nowhere")).starts_with("--listen 'nowhere':"));
        assert_eq!(err(b().tls_cert(Some("c".into()))), "--tls-cert needs --tls-key (the certificate's private key)");
        assert_eq!(err(b().tls_key(Some("k".into()))), "--tls-key needs --tls-cert (the certificate chain)");
        assert!(
            err(b().tls_cert(Some("/nonexistent/c".into())).tls_key(Some("/nonexistent/k".into())))
                .starts_with("--tls-cert /nonexistent/c:")
        );
        assert!(err(b().export_dir(Some("/nonexistent/x".into()))).starts_with("--export-dir /nonexistent/x:"));
        assert!(err(b().refresh_interval("1ms")).starts_with("--refresh-interval '1ms'"));
        assert!(err(b().session_idle("soon")).starts_with("--session-idle 'soon'"));
        let e = StudioConfig::builder("wh").listen("x").build().unwrap_err().to_string();
        assert!(e.starts_with("`listen` 'x'"), "the library names the setting, not a flag: {e}");
    }

    #[test]
    fn the_export_directory_keeps_apart_from_the_warehouse() {
        let root = tempfile::tempdir().unwrap();
        let wh = root.path().join("warehouse");
        std::fs::create_dir_all(wh.join("orders")).unwrap();
        assert!(err(StudioConfig::builder(&wh).export_dir(Some(root.path().into()))).contains("inside the warehouse"));
        assert!(err(StudioConfig::builder(&wh).export_dir(Some(wh.join("orders")))).contains("inside the warehouse"));
        let exports = root.path().join("exports");
        std::fs::create_dir(&exports).unwrap();
        let c = StudioConfig::builder(&wh).export_dir(Some(exports.clone())).build().unwrap();
        assert_eq!(c.export_dir(), Some(exports.canonicalize().unwrap().as_path()));
    }
}
