//! What `taglake serve` is allowed to do, checked once before it listens.
//!
//! The builder takes the settings as the user typed them (`"512MiB"`,
//! `"30s"`, `"0.0.0.0:5433"`) and [`ServeConfigBuilder::build`] turns them
//! into a [`ServeConfig`] or an [`Error::Parameter`] naming the setting (as
//! its builder method is named; `taglake serve` shows it as its flag). The security rules live
//! here, so no code path can start a server that breaks them: a
//! non-loopback address needs a users file, a certificate needs its key,
//! and the export directory must exist (it is resolved once, symlinks and
//! all, and every `COPY … TO` is checked against that resolved path) and
//! must not hold the warehouse, the users file or the TLS files (nor lie
//! inside the warehouse): a reader could otherwise overwrite them.
//!
//! Every limit a client could otherwise sidestep has a setting here, each
//! with a default a BI tool does not reach in normal use: memory per query
//! and per connection, the statement timeout, open cursors per connection,
//! the size of one export, connections logged in and still logging in, the
//! time to log in and the time a session may stay idle. The server's
//! memory bound is `max_connections × connection_memory` for queries, plus
//! the warm tag bitmaps.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use taglake_base::units::{parse_duration, parse_size};
use taglake_storage::ParamMessage;

use crate::users::Users;
use crate::{Error, Result};

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";

/// How the server's messages (to clients and in its log) name one of its
/// settings, given the setting's builder name (`max_connections`). A
/// program names them as its users set them: `taglake serve` by its flags.
pub type SettingName = fn(&'static str) -> String;

/// The default naming: the setting's own name.
fn setting_by_name(setting: &'static str) -> String {
    format!("setting `{setting}`")
}

/// A validated server configuration. Its fields are private: the only way
/// to get one is [`ServeConfigBuilder::build`], which enforces the rules
/// above (and [`crate::Server::start`] checks the security rule again).
#[derive(Debug, Clone)]
pub struct ServeConfig {
    listen: SocketAddr,
    warehouse: PathBuf,
    users: Option<Users>,
    tls: Option<(PathBuf, PathBuf)>,
    require_tls: bool,
    export_dir: Option<PathBuf>,
    export_max: u64,
    query_memory: usize,
    connection_memory: usize,
    statement_timeout: Duration,
    max_connections: usize,
    max_pending: usize,
    max_cursors: usize,
    auth_timeout: Duration,
    idle_timeout: Duration,
    refresh_interval: Duration,
    setting_name: SettingName,
}

impl ServeConfig {
    /// A builder with the defaults: loopback, 1 GiB per query and 2 GiB per
    /// connection, 5 minutes per statement, 64 connections (plus 16 still
    /// logging in, 10 seconds each), 16 open cursors per connection, 30
    /// minutes idle, exports up to 10 GiB, a refresh check every 5 seconds.
    pub fn builder(warehouse: impl Into<PathBuf>) -> ServeConfigBuilder {
        ServeConfigBuilder {
            warehouse: warehouse.into(),
            listen: DEFAULT_LISTEN.into(),
            users: None,
            tls_cert: None,
            tls_key: None,
            require_tls: false,
            export_dir: None,
            export_max: "10GiB".into(),
            query_memory: "1GiB".into(),
            connection_memory: "2GiB".into(),
            statement_timeout: "5m".into(),
            max_connections: 64,
            max_pending: 16,
            max_cursors: 16,
            auth_timeout: "10s".into(),
            idle_timeout: "30m".into(),
            refresh_interval: "5s".into(),
            setting_name: setting_by_name,
        }
    }

    /// A setting as the server's messages name it (see [`SettingName`]).
    pub fn setting(&self, setting: &'static str) -> String {
        (self.setting_name)(setting)
    }

    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
    /// The warehouse directory.
    pub fn warehouse(&self) -> &Path {
        &self.warehouse
    }
    /// Who may log in (SCRAM-SHA-256); `None` = no authentication (loopback only).
    pub fn users(&self) -> Option<&Users> {
        self.users.as_ref()
    }
    /// Certificate chain and private key (PEM) for TLS.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        self.tls.as_ref().map(|(c, k)| (c.as_path(), k.as_path()))
    }
    /// Whether connections that do not ask for TLS are refused.
    pub fn require_tls(&self) -> bool {
        self.require_tls
    }
    /// Where `COPY … TO` may write (canonical path); `None` = refused.
    pub fn export_dir(&self) -> Option<&Path> {
        self.export_dir.as_deref()
    }
    /// Most bytes one `COPY … TO` may write.
    pub fn export_max(&self) -> u64 {
        self.export_max
    }
    /// Memory one query may hold in sorts, joins and aggregations.
    pub fn query_memory(&self) -> usize {
        self.query_memory
    }
    /// Memory all the queries and open cursors of one connection may hold together.
    pub fn connection_memory(&self) -> usize {
        self.connection_memory
    }
    /// Longest a statement may run, planning and streaming included.
    pub fn statement_timeout(&self) -> Duration {
        self.statement_timeout
    }
    /// Most logged-in connections at once; the next login gets error 53300.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// Most connections still negotiating TLS or logging in at once; more
    /// sockets are closed as they arrive.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }
    /// Most open cursors (and suspended portals) one connection may hold.
    pub fn max_cursors(&self) -> usize {
        self.max_cursors
    }
    /// Longest a new connection may take to log in.
    pub fn auth_timeout(&self) -> Duration {
        self.auth_timeout
    }
    /// Longest a logged-in connection may stay silent before it is closed.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
    /// How often the warehouse is checked for new tables and snapshots.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    /// The rule no server may break: a non-loopback address needs users.
    pub(crate) fn check_exposure(listen: SocketAddr, users: Option<&Users>) -> Result<()> {
        if users.is_none() && !listen.ip().is_loopback() {
            return Err(Error::Parameter(
                ParamMessage::text(format!(
                    "refusing to listen on {listen} without authentication: anyone who reaches that address could \
                     read every member; give "
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
pub struct ServeConfigBuilder {
    warehouse: PathBuf,
    listen: String,
    users: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    require_tls: bool,
    export_dir: Option<PathBuf>,
    export_max: String,
    query_memory: String,
    connection_memory: String,
    statement_timeout: String,
    max_connections: usize,
    max_pending: usize,
    max_cursors: usize,
    auth_timeout: String,
    idle_timeout: String,
    refresh_interval: String,
    setting_name: SettingName,
}

impl ServeConfigBuilder {
    /// `HOST:PORT` to listen on (port 0 picks a free one).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }
    /// The users file (see [`Users`]).
    pub fn users(mut self, path: impl Into<PathBuf>) -> Self {
        self.users = Some(path.into());
        self
    }
    /// TLS certificate chain and private key, both PEM.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }
    /// TLS certificate alone (an error at build time without the key).
    pub fn tls_cert(mut self, cert: Option<PathBuf>) -> Self {
        self.tls_cert = cert;
        self
    }
    /// TLS key alone (an error at build time without the certificate).
    pub fn tls_key(mut self, key: Option<PathBuf>) -> Self {
        self.tls_key = key;
        self
    }
    /// Refuse connections that do not start TLS.
    pub fn require_tls(mut self, yes: bool) -> Self {
        self.require_tls = yes;
        self
    }
    /// The directory `COPY … TO` may write into.
    pub fn export_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.export_dir = Some(dir.into());
        self
    }
    /// Most bytes one `COPY … TO` may write, e.g. `10GiB`.
    pub fn export_max(mut self, size: impl Into<String>) -> Self {
        self.export_max = size.into();
        self
    }
    /// Per-query memory, e.g. `512MiB`, `2GiB`, `1000000`.
    pub fn query_memory(mut self, size: impl Into<String>) -> Self {
        self.query_memory = size.into();
        self
    }
    /// Per-connection memory (all its queries and cursors), e.g. `2GiB`.
    pub fn connection_memory(mut self, size: impl Into<String>) -> Self {
        self.connection_memory = size.into();
        self
    }
    /// Statement timeout, e.g. `30s`, `5m`, `1h`, `250ms`.
    pub fn statement_timeout(mut self, d: impl Into<String>) -> Self {
        self.statement_timeout = d.into();
        self
    }
    /// Most logged-in connections at once.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Most connections still logging in at once.
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }
    /// Most open cursors per connection.
    pub fn max_cursors(mut self, n: usize) -> Self {
        self.max_cursors = n;
        self
    }
    /// How long a new connection may take to log in, e.g. `10s`.
    pub fn auth_timeout(mut self, d: impl Into<String>) -> Self {
        self.auth_timeout = d.into();
        self
    }
    /// How long a logged-in connection may stay silent, e.g. `30m`.
    pub fn idle_timeout(mut self, d: impl Into<String>) -> Self {
        self.idle_timeout = d.into();
        self
    }
    /// How often to look for new table versions and snapshots.
    pub fn refresh_interval(mut self, d: impl Into<String>) -> Self {
        self.refresh_interval = d.into();
        self
    }
    /// How the server's messages name its settings (default: by their
    /// names, as `` setting `max_connections` ``).
    pub fn setting_names(mut self, name: SettingName) -> Self {
        self.setting_name = name;
        self
    }

    // Long on purpose: every setting's check, in the order of the flags, building one config.
    /// Checks every setting and reads the users file.
    pub fn build(self) -> Result<ServeConfig> {
        let listen = resolve(&self.listen)?;
        let users = self.users.as_deref().map(Users::load).transpose()?;
        ServeConfig::check_exposure(listen, users.as_ref())?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) => Some((readable(&c, "tls_cert")?, readable(&k, "tls_key")?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(needs("tls_cert")
                    .then_param("tls_key")
                    .then_text(" (the certificate's private key)")
                    .into());
            }
            (None, Some(_)) => {
                return Err(needs("tls_key").then_param("tls_cert").then_text(" (the certificate chain)").into());
            }
        };
        if self.require_tls && tls.is_none() {
            return Err(needs("require_tls").then_param("tls_cert").then_text(" and ").then_param("tls_key").into());
        }
        let export_dir = match self.export_dir {
            None => None,
            Some(d) => {
                let export_dir = |text: String| Error::from(ParamMessage::param("export_dir").then_text(text));
                let canonical = d
                    .canonicalize()
                    .map_err(|e| export_dir(format!(" {}: {e} (create the directory first)", d.display())))?;
                if !canonical.is_dir() {
                    return Err(export_dir(format!(" {}: not a directory", d.display())));
                }
                let mut protected = vec![(self.warehouse.clone(), "the warehouse")];
                protected.extend(self.users.iter().map(|u| (u.clone(), "the users file")));
                if let Some((c, k)) = &tls {
                    protected.push((c.clone(), "the TLS certificate"));
                    protected.push((k.clone(), "the TLS key"));
                }
                for (path, what) in protected {
                    check_apart(&d, &canonical, &path, what)?;
                }
                Some(canonical)
            }
        };
        let size =
            |parameter: &'static str, text: &str, min: usize, example: &str| {
                parse_size(text).filter(|&n| n >= min).ok_or_else(|| {
                    Error::from(ParamMessage::param(parameter).then_text(format!(
                        " '{text}': expected a size of at least {}, e.g. {example}",
                        show_size(min)
                    )))
                })
            };
        let export_max = size("export_max", &self.export_max, 1 << 10, "10GiB")? as u64;
        let query_memory = size("query_memory", &self.query_memory, 1 << 20, "512MiB or 2GiB")?;
        let connection_memory = size("connection_memory", &self.connection_memory, 1 << 20, "2GiB")?;
        if connection_memory < query_memory {
            return Err(ParamMessage::param("connection_memory")
                .then_text(format!(" '{}' is below ", self.connection_memory))
                .then_param("query_memory")
                .then_text(format!(
                    " '{}': a connection's queries share its memory, so it must be at least one query's",
                    self.query_memory
                ))
                .into());
        }
        let duration = |parameter: &'static str, text: &str, min: Duration, example: &str| {
            parse_duration(text).filter(|d| *d >= min && !d.is_zero()).ok_or_else(|| {
                let least = if min.is_zero() { "above zero".to_string() } else { format!("of at least {min:?}") };
                Error::from(
                    ParamMessage::param(parameter)
                        .then_text(format!(" '{text}': expected a duration {least}, e.g. {example}")),
                )
            })
        };
        let statement_timeout =
            duration("statement_timeout", &self.statement_timeout, Duration::ZERO, "30s, 5m or 1h")?;
        let refresh_interval = duration("refresh_interval", &self.refresh_interval, Duration::from_millis(100), "5s")?;
        let auth_timeout = duration("auth_timeout", &self.auth_timeout, Duration::from_millis(100), "10s")?;
        let idle_timeout = duration("idle_timeout", &self.idle_timeout, Duration::from_secs(1), "30m")?;
        for (parameter, n) in [
            ("max_connections", self.max_connections),
            ("max_pending", self.max_pending),
            ("max_cursors", self.max_cursors),
        ] {
            if n == 0 {
                return Err(ParamMessage::param(parameter).then_text(" must be at least 1").into());
            }
        }
        Ok(ServeConfig {
            listen,
            warehouse: self.warehouse,
            users,
            tls,
            require_tls: self.require_tls,
            export_dir,
            export_max,
            query_memory,
            connection_memory,
            statement_timeout,
            max_connections: self.max_connections,
            max_pending: self.max_pending,
            max_cursors: self.max_cursors,
            auth_timeout,
            idle_timeout,
            refresh_interval,
            setting_name: self.setting_name,
        })
    }
}

/// Refuses an export directory that holds `path` (or, for the warehouse,
/// lies inside it): `COPY … TO` could otherwise overwrite it.
fn check_apart(given: &Path, exports: &Path, path: &Path, what: &str) -> Result<()> {
    // A file that does not exist yet (a warehouse created later) is
    // judged by its nearest existing ancestor.
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(c) => break rest.iter().rev().fold(c, |p: PathBuf, part: &std::ffi::OsString| p.join(part)),
            Err(_) => match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() };
                }
                _ => return Ok(()),
            },
        }
    };
    let inside = resolved.starts_with(exports);
    let holds = what == "the warehouse" && exports.starts_with(&resolved);
    if inside || holds {
        let relation = if inside { "contains" } else { "is inside" };
        return Err(ParamMessage::param("export_dir")
            .then_text(format!(
                " {}: it {relation} {what} ({}); COPY … TO could overwrite it, so give a directory of its own",
                given.display(),
                path.display()
            ))
            .into());
    }
    Ok(())
}

fn show_size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b} bytes"),
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

/// "`parameter` needs …".
fn needs(parameter: &'static str) -> ParamMessage {
    ParamMessage::param(parameter).then_text(" needs ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error as `taglake serve` shows it: settings named by their flags.
    fn err(b: ServeConfigBuilder) -> String {
        match b.build().unwrap_err() {
            Error::Parameter(m) => m.render(|p| format!("--{}", p.replace('_', "-"))),
            other => other.to_string(),
        }
    }

    #[test]
    fn a_public_address_without_users_is_refused() {
        let e = err(ServeConfig::builder("wh").listen("0.0.0.0:5433"));
        assert!(e.starts_with("refusing to listen on 0.0.0.0:5433 without authentication"), "{e}");
        let e = err(ServeConfig::builder("wh").listen("[::]:5433"));
        assert!(e.contains("without authentication"), "{e}");
        assert!(ServeConfig::builder("wh").listen("127.0.0.1:0").build().is_ok());
        assert!(ServeConfig::builder("wh").listen("[::1]:0").build().is_ok());
    }

    #[test]
    fn every_bad_setting_names_its_flag() {
        let b = || ServeConfig::builder("wh");
        assert!(err(b().listen("nowhere")).starts_with("--listen 'nowhere':"));
        assert!(err(b().query_memory("12 parsecs")).starts_with("--query-memory '12 parsecs'"));
        assert!(err(b().query_memory("10KiB")).contains("at least 1MiB"));
        assert!(err(b().statement_timeout("0s")).starts_with("--statement-timeout '0s'"));
        assert!(err(b().refresh_interval("1ms")).starts_with("--refresh-interval '1ms'"));
        assert_eq!(err(b().max_connections(0)), "--max-connections must be at least 1");
        assert_eq!(err(b().max_pending(0)), "--max-pending must be at least 1");
        assert_eq!(err(b().max_cursors(0)), "--max-cursors must be at least 1");
        assert!(err(b().export_max("1")).starts_with("--export-max '1': expected a size of at least 1KiB"));
        assert!(err(b().idle_timeout("0s")).starts_with("--idle-timeout '0s'"));
        assert!(err(b().auth_timeout("1ms")).starts_with("--auth-timeout '1ms'"));
        assert!(err(b().query_memory("2GiB").connection_memory("1GiB")).contains("is below --query-memory"));
        assert_eq!(
            err(b().tls_cert(Some("c.pem".into()))),
            "--tls-cert needs --tls-key (the certificate's private key)"
        );
        assert_eq!(err(b().tls_key(Some("k.pem".into()))), "--tls-key needs --tls-cert (the certificate chain)");
        assert!(err(b().tls("/nonexistent/c.pem", "/nonexistent/k.pem")).starts_with("--tls-cert /nonexistent/c.pem:"));
        assert_eq!(err(b().require_tls(true)), "--require-tls needs --tls-cert and --tls-key");
        assert!(err(b().export_dir("/nonexistent/exports")).starts_with("--export-dir /nonexistent/exports:"));
        assert!(err(b().users("/nonexistent/users")).starts_with("/nonexistent/users:"));
    }

    /// The library names the setting as its builder does; only a program
    /// knows its flags.
    #[test]
    fn errors_name_the_setting_not_a_flag() {
        let e = ServeConfig::builder("wh").max_connections(0).build().unwrap_err();
        assert_eq!(e.to_string(), "`max_connections` must be at least 1");
        let Error::Parameter(m) = e else { panic!("a parameter error") };
        assert_eq!(m.parameter(), Some("max_connections"));
        let e = ServeConfig::builder("wh").query_memory("2GiB").connection_memory("1GiB").build().unwrap_err();
        assert!(e.to_string().starts_with("`connection_memory` '1GiB' is below `query_memory` '2GiB'"), "{e}");
    }

    #[test]
    fn the_export_directory_is_kept_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&real, &link).unwrap();
            let c = ServeConfig::builder("wh").export_dir(&link).build().unwrap();
            assert_eq!(c.export_dir().unwrap(), real.canonicalize().unwrap());
        }
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(err(ServeConfig::builder("wh").export_dir(&file)).ends_with("not a directory"));
    }

    /// An export directory that holds the warehouse, the users file or the
    /// TLS files, or lies inside the warehouse, is refused: `COPY … TO`
    /// could overwrite Delta logs or secrets.
    #[test]
    fn the_export_directory_keeps_apart_from_what_the_server_reads() {
        let root = tempfile::tempdir().unwrap();
        let wh = root.path().join("warehouse");
        std::fs::create_dir_all(wh.join("orders/_delta_log")).unwrap();
        let e = err(ServeConfig::builder(&wh).export_dir(root.path()));
        assert!(e.contains("it contains the warehouse"), "{e}");
        let e = err(ServeConfig::builder(&wh).export_dir(wh.join("orders")));
        assert!(e.contains("it is inside the warehouse"), "{e}");
        // A warehouse not created yet is judged by where it would be.
        let e = err(ServeConfig::builder(root.path().join("later/wh")).export_dir(root.path()));
        assert!(e.contains("it contains the warehouse"), "{e}");
        let users = root.path().join("users");
        Users::set_password(&users, "ana", "pw").unwrap();
        let exports = root.path().join("exports");
        std::fs::create_dir(&exports).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let e = err(ServeConfig::builder(elsewhere.path()).users(&users).export_dir(root.path()));
        assert!(e.contains("it contains the users file"), "{e}");
        let config = ServeConfig::builder(&wh).users(&users).export_dir(&exports).build().unwrap();
        assert_eq!(config.export_dir(), Some(exports.canonicalize().unwrap().as_path()));
        assert_eq!(config.export_max(), 10 << 30);
        assert_eq!((config.max_pending(), config.max_cursors()), (16, 16));
        assert_eq!(
            (config.auth_timeout(), config.idle_timeout()),
            (Duration::from_secs(10), Duration::from_secs(1800))
        );
    }

    /// The rule `Server::start` checks again, whatever built the configuration.
    #[test]
    fn exposure_needs_users() {
        let public: SocketAddr = "0.0.0.0:5433".parse().unwrap();
        assert!(ServeConfig::check_exposure(public, None).is_err());
        assert!(ServeConfig::check_exposure("127.0.0.1:5433".parse().unwrap(), None).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        Users::set_password(&users, "ana", "pw").unwrap();
        assert!(ServeConfig::check_exposure(public, Some(&Users::load(&users).unwrap())).is_ok());
    }
}
