//! The client side: a session whose queries run on the cluster.

use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use datafusion::catalog::TableProvider;
use datafusion::execution::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use taglake_query::{Catalog, TagSet};
use taglake_storage::{ParamMessage, Table, Warehouse};

use crate::codec::{LogicalCodec, PhysicalCodec};
use crate::files::FilesTable;
use crate::{Error, Result};

/// A scheduler address, `df://HOST:PORT` (the port defaults to 50050).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    /// Host name or address.
    pub host: String,
    /// gRPC port of the scheduler.
    pub port: u16,
}

impl ClusterUrl {
    /// Ballista's default scheduler port.
    pub const DEFAULT_PORT: u16 = 50050;

    /// Parses `df://HOST[:PORT]`.
    pub fn parse(text: &str) -> Result<ClusterUrl> {
        let bad = |why: &str| {
            Error::Parameter(
                ParamMessage::param("cluster")
                    .then_text(format!(" {text:?}: {why}; expected df://HOST:PORT, e.g. df://localhost:50050")),
            )
        };
        let rest = text.strip_prefix("df://").ok_or_else(|| bad("the address must start with df://"))?;
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(bad("no host"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad("the port is not a number from 1 to 65535"))?),
            None => (rest, Self::DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad("no host or port 0"));
        }
        Ok(ClusterUrl { host: host.to_string(), port })
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

/// Largest gRPC message: plans carry selected-member bitmaps (about
/// 1.2 MB per 10 M members selected) and tag refresh results.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// The session configuration every taglake cluster process uses: Ballista's
/// settings with taglake's codecs, and room for plans that carry bitmaps.
pub(crate) fn cluster_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_information_schema(true)
        .with_ballista_logical_extension_codec(Arc::new(LogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(PhysicalCodec::default()))
        .with_ballista_grpc_client_max_message_size(MAX_MESSAGE)
}

/// A session over the warehouse whose queries run on the cluster at `url`,
/// with the same tables, `members` tag columns and `audience()` as an
/// embedded one, and the tags it answers from.
pub async fn connect(url: &ClusterUrl, wh: &Warehouse) -> Result<(SessionContext, Option<Arc<TagSet>>)> {
    let ctx = SessionContext::new_with_state(remote_state(url).await?);
    let tags = TagSet::load(wh, None).await?.map(Arc::new);
    Catalog::from_providers(providers(wh).await?, tags.clone()).register(&ctx)?;
    Ok((ctx, tags))
}

/// A session state whose plans run on the cluster at `url` (checked to answer).
pub async fn remote_state(url: &ClusterUrl) -> Result<SessionState> {
    let address = format!("{}:{}", url.host, url.port);
    match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(Error::Unreachable { url: url.to_string(), cause: e.into() }),
        Err(_) => return Err(Error::Unreachable { url: url.to_string(), cause: "no answer within 10 s".into() }),
    }
    let state = SessionStateBuilder::new().with_config(cluster_config()).with_default_features().build();
    let ctx = SessionContext::remote_with_state(&format!("df://{address}"), state)
        .await
        .map_err(Error::engine(format!("opening a session on {url}")))?;
    Ok(ctx.state())
}

/// Readers of every existing table a cluster can read: the Parquet files of
/// each table's current version, with the embedded providers' column types
/// (so both modes return the same types).
pub async fn providers(wh: &Warehouse) -> Result<Vec<(Table, Arc<dyn TableProvider>)>> {
    let mut providers: Vec<(Table, Arc<dyn TableProvider>)> = Vec::new();
    for table in Table::ALL {
        let Some(files) = FilesTable::load(wh, table).await? else { continue };
        providers.push((table, Arc::new(files)));
    }
    Ok(providers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_parse_and_bad_ones_say_why() {
        assert_eq!(
            ClusterUrl::parse("df://localhost:50050").unwrap(),
            ClusterUrl { host: "localhost".into(), port: 50050 }
        );
        assert_eq!(ClusterUrl::parse("df://10.0.0.7").unwrap(), ClusterUrl { host: "10.0.0.7".into(), port: 50050 });
        assert_eq!(ClusterUrl::parse("df://sched:6000/").unwrap().to_string(), "df://sched:6000");
        for (bad, why) in [
            ("localhost:50050", "must start with df://"),
            ("df://", "no host"),
            ("df://host:http", "not a number"),
            ("df://host:70000", "not a number"),
            ("df://host:0", "port 0"),
            ("df://host/x", "no host"),
        ] {
            let err = ClusterUrl::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("df://HOST:PORT"), "{bad}: {err}");
        }
    }
}
