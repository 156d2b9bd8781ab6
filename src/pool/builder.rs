//! [`PoolBuilder`]: how a [`Pool`] is built, with every setting's default, for one server,
//! a Redis Cluster or a primary behind Sentinel.

use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionInfo, IntoConnectionInfo};

use super::link;
use super::manager::Target;
use super::sentinel::SentinelTarget;
use super::{
    Cluster, Config, DEFAULT_CONNECT_TIMEOUT, DEFAULT_CONNECTION_TIMEOUT, DEFAULT_MAX_SIZE,
    DEFAULT_RESPONSE_TIMEOUT, Health, MIN_MAX_SIZE, Manager, Node, Pool, Topology, too_small,
};
use crate::error::{Error, Result};

/// Builds a [`Pool`]; made by [`Pool::builder`]. Every setting has a default.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct PoolBuilder {
    config: Config,
    username: Option<String>,
    password: Option<String>,
    lazy: bool,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            config: Config {
                max_size: DEFAULT_MAX_SIZE,
                min_idle: 1,
                connection_timeout: DEFAULT_CONNECTION_TIMEOUT,
                response_timeout: DEFAULT_RESPONSE_TIMEOUT,
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            },
            username: None,
            password: None,
            lazy: false,
        }
    }
}

impl PoolBuilder {
    /// Sets the most connections the pool keeps open to one server (per primary of a
    /// cluster).
    ///
    /// Waiting takes one connection per lock name and process, however many threads and
    /// lock objects wait for it: the others wait in the process. A connection that waits in
    /// `BLPOP` is busy until the wait ends, and all but one connection may wait at once, so
    /// that a holder can always release; when more names are waited on at once than that,
    /// their waiters take turns (each wait in Redis lasts at most a second). Give a pool at
    /// least one more connection than names waited on at once.
    ///
    /// Must be at least 2.
    ///
    /// Defaults to 16.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.config.max_size = max_size;
        self
    }

    /// Sets how many idle connections the pool keeps open, making them in the background.
    ///
    /// Must be at most [`max_size`](Self::max_size).
    ///
    /// Defaults to 1.
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.config.min_idle = min_idle;
        self
    }

    /// Sets the longest wait for a free connection when every connection is in use. A
    /// server that cannot be reached is reported at once, not after this.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 5 s.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.config.connection_timeout = timeout;
        self
    }

    /// Sets the longest wait for any one reply: a call on a stalled server fails with
    /// [`Error::Timeout`] after this. A waiter's `BLPOP` waits longer, as long as its wait.
    /// Locks may set a shorter or longer one of their own.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 2 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.config.response_timeout = timeout;
        self
    }

    /// Sets the longest a new connection may take, TCP, TLS and the handshake together.
    ///
    /// Must be between 1 ms and 10 years.
    ///
    /// Defaults to 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Sets the user name to log in with (Redis 6 ACLs), over what a URL says. With
    /// Sentinel it applies to the primary, not to the sentinels.
    ///
    /// Defaults to the URL's (for a cluster, the first node's; with Sentinel, the first
    /// sentinel's), or none.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the password to log in with, over what a URL says. With Sentinel it applies to
    /// the primary, not to the sentinels.
    ///
    /// Defaults to the URL's (for a cluster, the first node's; with Sentinel, the first
    /// sentinel's), or none.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Builds the pool without connecting: for a service that may start before its Redis
    /// does. The first call that needs a connection makes one (and reports the server if
    /// it cannot be reached); a cluster's slot map is asked for then too.
    ///
    /// Defaults to `false`: building connects once, and fails naming the server when it
    /// cannot be reached.
    pub fn connect_lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// Builds a pool of connections to the server at `url`, after connecting once to check
    /// that it can be reached (unless [lazy](Self::connect_lazy)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a setting out of range or a URL that cannot be parsed,
    /// and when what is at the address cannot hold the locks (a Sentinel, a node of a
    /// cluster, something that does not speak Redis), has no such database, or has no
    /// password and was given one: the message says what is there and what to use instead;
    /// [`Error::Unreachable`] when nothing answers at the address within the connect
    /// timeout, or TLS fails; [`Error::AuthFailed`] when the server refuses the
    /// credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder().max_size(4).build("redis://127.0.0.1:6379/")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build(self, url: &str) -> Result<Pool> {
        let info = parse_url("url", url)?;
        self.build_with_info(info)
    }

    /// Builds a pool on a `redis::Client` made your way: for TLS with certificates of your
    /// own (`redis::Client::build_with_tls`), or settings a URL cannot say.
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
    /// let pool = Pool::builder().build_with_client(client)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_with_client(self, client: redis::Client) -> Result<Pool> {
        self.build_with_info(client.get_connection_info().clone())
    }

    fn build_with_info(self, info: ConnectionInfo) -> Result<Pool> {
        self.check()?;
        let info = self.credentials(info);
        let server = link::server_name(&info);
        if !self.lazy {
            // Fails fast, naming the server, instead of letting the first lock wait it out.
            link::connect_direct(
                &info,
                self.config.connect_timeout,
                self.config.response_timeout,
            )
            .map_err(|f| f.to_error(&server))?;
        }
        let node = Node::new(Target::Direct(info), server, &self.config);
        Ok(Pool::with_topology(self.config, Topology::Single(node)))
    }

    /// Builds a pool of connections to the primaries of a Redis Cluster, found from any of
    /// its `nodes` (`redis://host:port`; one is enough, more are tried in turn when one is
    /// down). The credentials and TLS mode of the first apply to every node.
    ///
    /// Commands go to the primary of their key's slot, on connections this crate controls:
    /// `MOVED` and `ASK` are followed, and no command whose reply was lost is ever sent
    /// again. Keys carry hash tags, so that the keys of one lock share a slot; see
    /// `docs/deployments.md`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a setting out of range, an empty list, a URL that
    /// cannot be parsed, or a server that is not in cluster mode; [`Error::Unreachable`] or
    /// [`Error::AuthFailed`] when no node could be asked for the slot map.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder().max_size(8).build_cluster(&["redis://10.0.0.1:7000/"])?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build_cluster(self, nodes: &[&str]) -> Result<Pool> {
        self.check()?;
        if nodes.is_empty() {
            return Err(Error::invalid(
                "nodes",
                "the node list is empty; give the URL of at least one node of the cluster",
            ));
        }
        let seeds = nodes
            .iter()
            .map(|url| parse_url("nodes", url).map(|info| self.credentials(info)))
            .collect::<Result<Vec<_>>>()?;
        let cluster = Cluster::connect(seeds, self.config, self.lazy)?;
        Ok(Pool::with_topology(self.config, Topology::Cluster(cluster)))
    }

    /// Builds a pool of connections to the primary that Sentinel names `service`, asked of
    /// the `sentinels` (`redis://host:26379`) in turn. Every new connection asks again, so
    /// after a failover the pool finds the new primary by itself: calls fail (within their
    /// bounds) while it is under way, then succeed without a new pool.
    ///
    /// The primary is connected to with the credentials and TLS mode of the first sentinel
    /// URL, unless [`username`](Self::username) or [`password`](Self::password) say
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOptions`] for a setting out of range, an empty list, a URL that
    /// cannot be parsed, or an address where a plain server answers instead of a Sentinel;
    /// [`Error::Unreachable`] when no sentinel could be reached, none knows `service`, or
    /// its primary could not be reached; [`Error::AuthFailed`] when the primary refuses the
    /// credentials.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use redis_mutex::Pool;
    ///
    /// let pool = Pool::builder()
    ///     .password("secret")
    ///     .build_sentinel(&["redis://10.0.0.1:26379/"], "mymaster")?;
    /// # Ok::<(), redis_mutex::Error>(())
    /// ```
    pub fn build_sentinel(self, sentinels: &[&str], service: &str) -> Result<Pool> {
        self.check()?;
        if sentinels.is_empty() {
            return Err(Error::invalid(
                "sentinels",
                "the sentinel list is empty; give the URL of at least one sentinel",
            ));
        }
        if service.is_empty() {
            return Err(Error::invalid(
                "service",
                "the service name is empty; give the name sentinel monitors the primary under",
            ));
        }
        let sentinels = sentinels
            .iter()
            .map(|url| parse_url("sentinels", url))
            .collect::<Result<Vec<_>>>()?;
        let node = self.credentials(sentinels[0].clone());
        let names: Vec<String> = sentinels.iter().map(link::server_name).collect();
        let server = format!("primary `{service}` (via sentinel {})", names.join(", "));
        let target = Target::Sentinel(SentinelTarget {
            // The sentinels themselves take no database number.
            sentinels: sentinels
                .into_iter()
                .map(|info| {
                    let settings = info.redis_settings().clone().set_db(0);
                    info.set_redis_settings(settings)
                })
                .collect(),
            service: service.to_owned(),
            node,
        });
        let manager = Manager {
            target: target.clone(),
            connect_timeout: self.config.connect_timeout,
            response_timeout: self.config.response_timeout,
            health: Arc::new(Health::new(server.clone())),
            primary: None,
            room: None,
        };
        if !self.lazy {
            r2d2::ManageConnection::connect(&manager)?;
        }
        let node = Node::new(target, server, &self.config);
        Ok(Pool::with_topology(self.config, Topology::Single(node)))
    }

    fn check(&self) -> Result<()> {
        let c = &self.config;
        if c.max_size < MIN_MAX_SIZE {
            return Err(Error::invalid("max_size", too_small(c.max_size)));
        }
        if c.min_idle > c.max_size {
            return Err(Error::invalid(
                "min_idle",
                format!("{} is more than max_size ({})", c.min_idle, c.max_size),
            ));
        }
        for (field, d) in [
            ("connection_timeout", c.connection_timeout),
            ("response_timeout", c.response_timeout),
            ("connect_timeout", c.connect_timeout),
        ] {
            crate::time::check_duration(field, d)?;
        }
        Ok(())
    }

    /// `info` with this builder's user name and password, if set.
    fn credentials(&self, info: ConnectionInfo) -> ConnectionInfo {
        let mut settings = info.redis_settings().clone();
        if let Some(username) = &self.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        info.set_redis_settings(settings)
    }
}

fn parse_url(field: &'static str, url: &str) -> Result<ConnectionInfo> {
    url.into_connection_info().map_err(|e| {
        let what = bad_port(url).unwrap_or_else(|| e.to_string());
        Error::invalid(
            field,
            format!(
                "{what} in {:?}; write it like \"redis://[user:password@]host:port/db\", \
                 \"rediss://…\" for TLS or \"unix:///path/to/socket\"",
                redacted(url)
            ),
        )
    })
}

/// `url`'s host and port, between the scheme and the path, without the credentials.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some(
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host),
    )
}

/// What is wrong with `url`'s port, if that is what is wrong: a number out of range, or
/// not a number.
fn bad_port(url: &str) -> Option<String> {
    let host = authority(url)?;
    let port = match host.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':')?,
        None => host.rsplit_once(':')?.1,
    };
    match port.parse::<u16>() {
        Ok(port) if port > 0 => None,
        _ => Some(format!(
            "the port `{port}` is not a port number (1 to 65535)"
        )),
    }
}

/// `url` with its password hidden: errors never show one.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials
                .split_once(':')
                .map_or(credentials, |(user, _)| user);
            let hidden = if credentials.contains(':') {
                ":***"
            } else {
                ""
            };
            format!("{scheme}://{user}{hidden}@{host}{}", &rest[end..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_told_by_its_port_and_never_shows_a_password() {
        let e = parse_url("url", "redis://:secret@127.0.0.1:99999/").unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("the port `99999` is not a port number"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("redis://:***@127.0.0.1:99999/"), "{text}");
        assert_eq!(redacted("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redacted("redis://u@h:1"), "redis://u@h:1");
        assert_eq!(redacted("redis://h:1/"), "redis://h:1/");
        assert_eq!(bad_port("redis://[::1]:6379/"), None);
        assert_eq!(bad_port("redis://h/"), None);
        assert!(bad_port("redis://h:x/").is_some());
    }

    #[test]
    fn credentials_override_the_urls() {
        let builder = Pool::builder().username("u").password("p");
        let info = builder.credentials(parse_url("url", "redis://a:b@h:1/2").unwrap());
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().password(), Some("p"));
        assert_eq!(info.redis_settings().db(), 2);
        assert_eq!(link::server_name(&info), "h:1");
    }
}
