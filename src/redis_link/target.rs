//! Which Redis `REDIS_URL` names: one server (`redis://host:port`), or a Redis Cluster
//! (`redis+cluster://host:port,host:port,…`: any reachable nodes as seeds; the client learns the rest and follows
//! slot moves). Everything that talks to Redis opens its connections and subscriptions here, so no caller needs
//! to know which of the two it has.
//!
//! On a cluster, keys that belong together carry a hash tag (`{…}`, see [`tag`]) so they live in one slot; a
//! pipeline is sent command by command (its commands may span slots, and the callers' pipelines are batches, not
//! transactions); pub/sub uses ordinary channels, which a cluster relays to every node, so a subscriber on any
//! node hears every publisher (RESP3 push messages, as the cluster client requires).

use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// The scheme that marks a cluster's seed list.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A Redis deployment to connect to.
#[derive(Clone)]
pub enum RedisTarget {
    Single(redis::Client),
    Cluster { seeds: Vec<String> },
}

impl std::fmt::Debug for RedisTarget {
    // Never the URLs: they may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisTarget::Single(_) => f.write_str("RedisTarget::Single"),
            RedisTarget::Cluster { seeds } => {
                write!(f, "RedisTarget::Cluster({} seeds)", seeds.len())
            }
        }
    }
}

impl RedisTarget {
    pub fn open(url: &str) -> RedisResult<RedisTarget> {
        match cluster_seeds(url) {
            Some(seeds) => {
                // Validates every seed now, so a typo fails start-up rather than the first call.
                ClusterClient::new(seeds.clone())?;
                Ok(RedisTarget::Cluster { seeds })
            }
            None => Ok(RedisTarget::Single(redis::Client::open(url)?)),
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisTarget::Cluster { .. })
    }

    /// A command connection that reconnects by itself. `timeout` bounds connecting and each answer.
    pub async fn connect(&self, timeout: Duration, retries: usize) -> RedisResult<RedisConn> {
        match self {
            RedisTarget::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout)
                    .set_number_of_retries(retries);
                let manager = ConnectionManager::new_with_config(client.clone(), config).await?;
                Ok(RedisConn::Single(manager))
            }
            RedisTarget::Cluster { seeds } => {
                let client = ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(retries.try_into().unwrap_or(u32::MAX))
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// The messages published on `channel` from now on, until the connection drops (the stream then ends and the
    /// caller subscribes again).
    pub async fn messages(&self, channel: &str) -> RedisResult<BoxStream<'static, redis::Msg>> {
        match self {
            RedisTarget::Single(client) => {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok(pubsub.into_on_message().boxed())
            }
            RedisTarget::Cluster { seeds } => {
                let (pushes, received) = tokio::sync::mpsc::unbounded_channel();
                let client = ClusterClientBuilder::new(seeds.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(pushes)
                    .build()?;
                let mut connection = client.get_async_connection().await?;
                connection.subscribe(channel).await?;
                // The connection lives as long as the stream: dropping it would end the subscription.
                let stream = futures_util::stream::unfold(
                    (connection, received),
                    |(connection, mut received)| async move {
                        let push = received.recv().await?;
                        Some((redis::Msg::from_push_info(push), (connection, received)))
                    },
                )
                .filter_map(std::future::ready);
                Ok(stream.boxed())
            }
        }
    }
}

/// The seeds of a `redis+cluster://[user:password@]host:port,host:port` URL, each as a `redis://` URL with the
/// credentials; `None` for any other URL.
pub fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let rest = url.trim().strip_prefix(CLUSTER_SCHEME)?;
    let rest = rest.trim_end_matches('/');
    let (credentials, hosts) = match rest.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), rest),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|host| format!("redis://{credentials}{host}"))
        .collect();
    Some(seeds)
}

/// `value` as a hash tag: keys sharing it hash to one cluster slot (only the first `{…}` of a key counts).
/// Harmless on a single server.
pub fn tag(value: &str) -> String {
    format!("{{{value}}}")
}

/// A connection to either kind of deployment; both reconnect by themselves.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Runs the commands of `pipe` (replies ignored): in one round trip on a single server, one command at a time
    /// (several in flight) on a cluster, where they may belong to different slots.
    pub async fn run_batch(&mut self, pipe: &Pipeline) -> RedisResult<()> {
        match self {
            RedisConn::Single(conn) => pipe.query_async::<()>(conn).await,
            RedisConn::Cluster(conn) => {
                // At most a pipeline's worth (a few hundred) in flight on the multiplexed node connections.
                let mut sends = futures_util::stream::FuturesUnordered::new();
                for cmd in pipe.cmd_iter() {
                    let mut conn = conn.clone();
                    sends.push(async move { cmd.query_async::<()>(&mut conn).await });
                }
                while let Some(result) = sends.next().await {
                    result?;
                }
                Ok(())
            }
        }
    }

    /// Runs `cmd` on the node that owns the slot of `key` (for commands without a key of their own, such as a
    /// `SCAN` whose pattern is hash-tagged); on a single server, just runs it.
    pub async fn query_at<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match self {
            RedisConn::Single(conn) => cmd.query_async(conn).await,
            RedisConn::Cluster(conn) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                // The server's own hash (CRC16 of the tag) rather than a copy of it here.
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(key)
                    .query_async(conn)
                    .await?;
                let route = Route::new(slot, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = conn.route_command(cmd, routing).await?;
                redis::from_redis_value(&value)
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            RedisConn::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_seeds_with_the_credentials() {
        assert_eq!(
            cluster_seeds("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/").unwrap(),
            ["redis://u:p@10.0.0.1:7000", "redis://u:p@10.0.0.2:7001"]
        );
        assert_eq!(
            cluster_seeds("redis+cluster://r1:6379").unwrap(),
            ["redis://r1:6379"]
        );
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379"), None);
    }

    #[test]
    fn opening_tells_the_kinds_apart() {
        assert!(!RedisTarget::open("redis://127.0.0.1:6379")
            .unwrap()
            .is_cluster());
        assert!(
            RedisTarget::open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
                .unwrap()
                .is_cluster()
        );
        assert!(RedisTarget::open("redis+cluster://").is_err(), "no seed");
    }

    #[test]
    fn a_tag_is_braced() {
        assert_eq!(tag("shop.myshopify.com"), "{shop.myshopify.com}");
    }
}
