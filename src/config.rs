//! Command line and environment: every setting has a flag, an environment variable, and a
//! default that works on a developer's machine.
//!
//! A setting that a library crate's config also has takes its default from that crate's
//! `defaults` module, so a run without flags and a config's `Default` agree. Such durations are
//! [`humantime::Duration`]s here: clap shows a default through `Display`, which
//! [`std::time::Duration`] lacks.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use chat_bus::{NatsServers, NatsUrlError};
use chat_gateway::auth::{AuthConfig, JwtConfig};
use chat_gateway::defaults as gateway_defaults;
use chat_gateway::limits::{LimitsConfig, Rate};
use chat_gateway::proxies::TrustedProxies;
use chat_gateway::GatewayConfig;
use chat_persister::defaults as persister_defaults;
use chat_persister::PersisterConfig;
use chat_presence::defaults as presence_defaults;
use chat_presence::PresenceConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// NATS server of the cluster roles when none is configured.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

#[derive(Debug, Parser)]
#[command(
    name = "chat",
    version,
    about = "Real-time chat backend: Socket.IO API on one node or a NATS cluster. With no command, runs `all` (every role in one process)."
)]
pub struct Cli {
    /// The role to run; with none, `all`.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub settings: Settings,

    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Threads that run the process's async tasks; unset: one per CPU the process may use (its
    /// CPU limit where one is set). A role that needs less than a core runs cheaper on one:
    /// fewer threads to wake per message (ARCHITECTURE.md, Performance).
    #[arg(long, env = "CHAT_WORKER_THREADS", global = true)]
    pub worker_threads: Option<NonZeroUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Every role in one process, the default when no command is given: on an in-process bus,
    /// or on NATS when --nats-url is given.
    All,
    /// Socket.IO and REST front; run any number of them. Needs NATS.
    Gateway,
    /// Stores messages and answers queries; run one or more. Needs NATS and the database.
    Persister,
    /// Tracks who is online across gateways; run one. Needs NATS.
    Presence,
    /// Applies the database migrations and exits.
    Migrate,
}

impl Command {
    /// The role's name, in metrics and in the default trace service name (`chat-<role>`).
    pub fn role(self) -> &'static str {
        match self {
            Command::All => "all",
            Command::Gateway => "gateway",
            Command::Persister => "persister",
            Command::Presence => "presence",
            Command::Migrate => "migrate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    Development,
    Jwt,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct Settings {
    /// Port for HTTP and Socket.IO (the gateway), or for the health check (other roles).
    #[arg(long, env = "PORT", default_value_t = 3000, global = true)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0", global = true)]
    pub host: IpAddr,

    /// Directory of the embedded SQLite database (created if missing).
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Database URL (`postgres://…` or `sqlite://…`); when unset, SQLite in the data directory.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,

    /// NATS server URL, or the URLs of a NATS cluster's servers separated by commas (the role
    /// connects to any, and moves to another when it loses one). Cluster roles default to
    /// nats://127.0.0.1:4222; `all` uses the in-process bus unless this is set.
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<NatsServers>,

    /// Copies JetStream keeps of the work queue, its consumers and the key-value buckets, each
    /// on another server of the NATS cluster: 3 survives the loss of one server. More than 1
    /// needs a NATS cluster with at least that many servers. Changing it updates the existing
    /// stream, consumers and buckets at start-up.
    #[arg(long, env = "CHAT_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5), global = true)]
    pub stream_replicas: u8,

    /// Prefix of every NATS subject, stream and bucket: clusters (or test runs) with different
    /// prefixes share a NATS server without hearing each other.
    #[arg(long, env = "CHAT_SUBJECT_PREFIX", default_value = "chat", value_parser = parse_prefix, global = true)]
    pub subject_prefix: String,

    /// Partitions of the inbound work queue; each conversation's sends go through one, in
    /// order. Every gateway and persister of a cluster must use the same number.
    #[arg(long, env = "CHAT_PARTITIONS", default_value_t = chat_proto::DEFAULT_PARTITIONS, value_parser = clap::value_parser!(u32).range(1..=1024), global = true)]
    pub partitions: u32,

    /// This gateway's id, unique in the cluster (e.g. the pod name); generated when unset.
    #[arg(long, env = "CHAT_GATEWAY_ID", value_parser = parse_gateway_id, global = true)]
    pub gateway_id: Option<String>,

    /// How long a role keeps retrying NATS and the database at start-up before it gives up.
    #[arg(long, env = "CHAT_STARTUP_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub startup_timeout: Duration,

    /// How often a gateway tells presence which sockets it has open.
    #[arg(long, env = "CHAT_HEARTBEAT_INTERVAL", default_value_t = gateway_defaults::HEARTBEAT_INTERVAL.into(), global = true)]
    pub heartbeat_interval: humantime::Duration,

    /// How long presence waits for a silent gateway before taking its users offline.
    #[arg(long, env = "CHAT_GATEWAY_TIMEOUT", default_value_t = presence_defaults::GATEWAY_TIMEOUT.into(), global = true)]
    pub gateway_timeout: humantime::Duration,

    /// The term of the lease held by the presence replica that announces: when it dies,
    /// another replica takes over within about this long.
    #[arg(long, env = "CHAT_PRESENCE_LEASE", default_value_t = presence_defaults::LEASE.into(), value_parser = parse_lease, global = true)]
    pub presence_lease: humantime::Duration,

    /// How long the persister retries a batch while the database is unavailable before the
    /// senders get `message-error`.
    #[arg(long, env = "CHAT_STORE_TIMEOUT", default_value_t = persister_defaults::STORE_TIMEOUT.into(), global = true)]
    pub store_timeout: humantime::Duration,

    /// Most send commands the persister stores in one transaction.
    #[arg(long, env = "CHAT_BATCH_MAX", default_value_t = persister_defaults::MAX_BATCH as u32, value_parser = clap::value_parser!(u32).range(1..=4096), global = true)]
    pub batch_max: u32,

    /// How long a persister batch waits for more commands after its first, when they have
    /// lately come less than this apart (commands already waiting are always taken; idle, a
    /// batch does not wait). Zero never waits.
    #[arg(long, env = "CHAT_BATCH_LINGER", default_value_t = persister_defaults::BATCH_LINGER.into(), global = true)]
    pub batch_linger: humantime::Duration,

    /// Batches a persister stores at once (on NATS; the all-in-one mode's in-process queue
    /// keeps one, since only NATS hands out a partition's jobs one at a time).
    #[arg(long, env = "CHAT_BATCHES_IN_FLIGHT", default_value_t = persister_defaults::BATCHES_IN_FLIGHT as u32, value_parser = clap::value_parser!(u32).range(1..=64), global = true)]
    pub batches_in_flight: u32,

    /// Messages older than this are deleted by the persister, in batches, with their
    /// reactions and changes (`30d`, `12h`); unset keeps them for ever.
    #[arg(long, env = "CHAT_RETENTION", value_parser = parse_retention, global = true)]
    pub retention: Option<humantime::Duration>,

    /// Longest message `content` accepted, in characters.
    #[arg(long, env = "CHAT_MAX_CONTENT_CHARS", default_value_t = gateway_defaults::MAX_CONTENT_CHARS, global = true)]
    pub max_content_chars: usize,

    /// Largest Socket.IO packet accepted, in bytes; a client that sends more is disconnected.
    #[arg(long, env = "CHAT_MAX_PAYLOAD_BYTES", default_value_t = gateway_defaults::MAX_PAYLOAD_BYTES, global = true)]
    pub max_payload_bytes: u64,

    /// Conversation rooms one socket may be in at once.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_SOCKET", default_value_t = gateway_defaults::MAX_ROOMS_PER_SOCKET, global = true)]
    pub max_rooms_per_socket: usize,

    /// Most members a group may have, its creator included.
    #[arg(long, env = "CHAT_MAX_GROUP_MEMBERS", default_value_t = gateway_defaults::MAX_GROUP_MEMBERS, global = true)]
    pub max_group_members: usize,

    /// Packets waiting to be written to one socket before it is disconnected as a slow reader.
    #[arg(long, env = "CHAT_MAX_BUFFERED_PACKETS", default_value_t = gateway_defaults::MAX_BUFFERED_PACKETS, global = true)]
    pub max_buffered_packets: usize,

    /// How clients prove who they are: `development` trusts the `userId` query (anyone can be
    /// anyone); `jwt` requires a signed token.
    #[arg(long, env = "CHAT_AUTH", value_enum, default_value_t = AuthMode::Development, global = true)]
    pub auth: AuthMode,

    /// JWT: HS256 shared secret.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// JWT: PEM file with an RSA (RS256) or EC P-256 (ES256) public key.
    #[arg(long, env = "CHAT_JWT_PUBLIC_KEY_FILE", global = true)]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JWT: JWKS file; keys are chosen by the token's `kid`.
    #[arg(long, env = "CHAT_JWT_JWKS_FILE", global = true)]
    pub jwt_jwks_file: Option<PathBuf>,

    /// JWT: the claim holding the user id.
    #[arg(long, env = "CHAT_JWT_USER_CLAIM", default_value = gateway_defaults::JWT_USER_CLAIM, global = true)]
    pub jwt_user_claim: String,

    /// JWT: accepted audiences, comma-separated (unset: not checked).
    #[arg(long, env = "CHAT_JWT_AUDIENCE", value_delimiter = ',', global = true)]
    pub jwt_audience: Option<Vec<String>>,

    /// JWT: required issuer (unset: not checked).
    #[arg(long, env = "CHAT_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// JWT: clock-skew allowance for expiry and not-before.
    #[arg(long, env = "CHAT_JWT_LEEWAY", default_value_t = gateway_defaults::JWT_LEEWAY.into(), global = true)]
    pub jwt_leeway: humantime::Duration,

    /// Messages a user may send per second, per gateway (token bucket refill rate).
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = gateway_defaults::SEND_RATE, global = true)]
    pub send_rate: u32,

    /// Messages a user may send in a burst, per gateway.
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = gateway_defaults::SEND_BURST, global = true)]
    pub send_burst: u32,

    /// Typing events a user may send per second (burst: twice that), per gateway.
    #[arg(long, env = "CHAT_TYPING_RATE", default_value_t = gateway_defaults::TYPING_RATE, global = true)]
    pub typing_rate: u32,

    /// Joins a user may make per second (burst: 100), per gateway.
    #[arg(long, env = "CHAT_JOIN_RATE", default_value_t = gateway_defaults::JOIN_RATE, global = true)]
    pub join_rate: u32,

    /// Open connections one user may have on one gateway.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_USER", default_value_t = gateway_defaults::MAX_CONNECTIONS_PER_USER, global = true)]
    pub max_connections_per_user: usize,

    /// Open connections one client address may have on one gateway.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = gateway_defaults::MAX_CONNECTIONS_PER_ADDRESS, global = true)]
    pub max_connections_per_address: usize,

    /// Proxies (load balancers, ingress) trusted to name the client in X-Forwarded-For:
    /// comma-separated CIDR networks or addresses, IPv4 or IPv6 (`10.0.0.0/8,fd00::/8`). The
    /// header is read only from a peer in these networks, from the right, skipping entries that
    /// are themselves trusted proxies. Empty (the default): the client is the TCP peer.
    #[arg(long, env = "CHAT_TRUSTED_PROXIES", default_value = "", hide_default_value = true, global = true)]
    pub trusted_proxies: TrustedProxies,

    /// A connection whose peer accepts no data for this long is closed (a reader that never
    /// reads cannot hold server resources).
    #[arg(long, env = "CHAT_WRITE_STALL_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration, global = true)]
    pub write_stall_timeout: Duration,

    /// How long a gateway that got SIGTERM may take to drain: answer the sends in flight, tell
    /// its clients to reconnect elsewhere, close their connections.
    #[arg(long, env = "CHAT_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub shutdown_grace: Duration,

    /// Origins allowed by CORS, comma-separated, each `scheme://host[:port]` as browsers send
    /// it (no path, no `*`). Unset: any origin in development mode, none but the server's own
    /// in jwt mode.
    #[arg(long, env = "CHAT_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin, global = true)]
    pub cors_origins: Option<Vec<String>>,
}

/// One CORS origin as a browser's `Origin` header names it: the CORS layer compares bytes, so
/// a trailing slash or a path would never match, and a wildcard would stop the server at start.
fn parse_origin(raw: &str) -> Result<String, String> {
    let origin = raw.trim();
    let uri: axum::http::Uri =
        origin.parse().map_err(|_| format!("{origin:?} is not an origin (scheme://host[:port])"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|host| !host.is_empty() && !host.contains('*'));
    // `Uri` reports "/" as the path of "https://a.example" too: the text itself must end at the
    // authority.
    let bare = uri.authority().is_some_and(|a| origin.ends_with(a.as_str())) && uri.query().is_none();
    if scheme_ok && host_ok && bare {
        Ok(origin.to_owned())
    } else {
        Err(format!("{origin:?} is not an origin: scheme://host[:port] with http or https, no path, no wildcard"))
    }
}

impl Settings {
    pub fn gateway_config(&self) -> GatewayConfig {
        let defaults = GatewayConfig::default();
        GatewayConfig {
            gateway_id: self.gateway_id.clone().unwrap_or(defaults.gateway_id),
            max_content_chars: self.max_content_chars,
            max_payload_bytes: self.max_payload_bytes,
            allowed_origins: self.cors_origins.clone(),
            heartbeat_interval: self.heartbeat_interval.into(),
            max_rooms_per_socket: self.max_rooms_per_socket,
            max_group_members: self.max_group_members,
            max_buffered_packets: self.max_buffered_packets,
            limits: LimitsConfig {
                sends: Rate { per_second: self.send_rate, burst: self.send_burst },
                typing: Rate {
                    per_second: self.typing_rate,
                    burst: self.typing_rate.saturating_mul(gateway_defaults::TYPING_BURST_PER_RATE),
                },
                joins: Rate { per_second: self.join_rate, burst: gateway_defaults::JOIN_BURST },
                max_connections_per_user: self.max_connections_per_user,
                max_connections_per_address: self.max_connections_per_address,
            },
            trusted_proxies: self.trusted_proxies.clone(),
            auth: match self.auth {
                AuthMode::Development => AuthConfig::Development,
                AuthMode::Jwt => AuthConfig::Jwt(JwtConfig {
                    hs256_secret: self.jwt_secret.clone(),
                    public_key_file: self.jwt_public_key_file.clone(),
                    jwks_file: self.jwt_jwks_file.clone(),
                    user_claim: self.jwt_user_claim.clone(),
                    audience: self.jwt_audience.clone(),
                    issuer: self.jwt_issuer.clone(),
                    leeway_seconds: self.jwt_leeway.as_secs(),
                }),
            },
            ..defaults
        }
    }

    pub fn persister_config(&self) -> PersisterConfig {
        PersisterConfig {
            store_timeout: self.store_timeout.into(),
            max_batch: self.batch_max as usize,
            batch_linger: self.batch_linger.into(),
            batches_in_flight: self.batches_in_flight as usize,
            retention: self.retention.map(Into::into),
        }
    }

    pub fn presence_config(&self) -> PresenceConfig {
        // The pod name in Kubernetes, and the process id: unique per replica.
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "presence".to_owned());
        PresenceConfig {
            gateway_timeout: self.gateway_timeout.into(),
            lease: self.presence_lease.into(),
            replica_id: format!("{host}-{}", std::process::id()),
        }
    }

    /// The NATS servers of a cluster role: `--nats-url`, else the local default.
    pub fn nats_servers(&self) -> Result<NatsServers, NatsUrlError> {
        match &self.nats_url {
            Some(servers) => Ok(servers.clone()),
            None => DEFAULT_NATS_URL.parse(),
        }
    }
}

/// A lease is renewed every quarter of its term: under a second, renewals would load the
/// key-value store for nothing; JetStream also expires entries in whole steps.
fn parse_lease(raw: &str) -> Result<humantime::Duration, String> {
    let lease = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if lease < Duration::from_secs(1) {
        return Err(format!("{raw} is too short for a lease: at least 1s"));
    }
    Ok(lease.into())
}

fn parse_retention(raw: &str) -> Result<humantime::Duration, String> {
    let retention = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if retention < Duration::from_secs(1) {
        return Err(format!("{raw} is too short a retention: at least 1s"));
    }
    Ok(retention.into())
}

/// Subject tokens may not be empty or hold spaces or wildcards.
fn parse_prefix(raw: &str) -> Result<String, String> {
    let valid_token = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if raw.split('.').all(valid_token) {
        Ok(raw.to_owned())
    } else {
        Err("use letters, digits, '-' and '_', in tokens separated by '.'".into())
    }
}

/// Gateway ids become subject tokens and key-value keys.
fn parse_gateway_id(raw: &str) -> Result<String, String> {
    if !raw.is_empty() && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        Ok(raw.to_owned())
    } else {
        Err("use letters, digits, '-' and '_'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_means_all_in_one_on_port_3000_with_local_data() {
        let cli = Cli::try_parse_from(["chat"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.settings.port, 3000);
        assert_eq!(cli.settings.data_dir, PathBuf::from("./data"));
        assert!(cli.settings.database_url.is_none());
        assert!(cli.settings.nats_url.is_none());
        assert_eq!(cli.settings.nats_servers().expect("the default parses").to_string(), DEFAULT_NATS_URL);
        assert_eq!(cli.settings.stream_replicas, 1);
        assert_eq!(cli.settings.shutdown_grace, Duration::from_secs(10));
        assert_eq!(Command::All.role(), "all");
    }

    #[test]
    fn the_flags_default_to_the_configs_defaults() {
        let settings = Cli::try_parse_from(["chat", "--auth", "jwt"]).expect("parses").settings;
        let (gateway, defaults) = (settings.gateway_config(), GatewayConfig::default());
        assert_eq!(gateway.max_content_chars, defaults.max_content_chars);
        assert_eq!(gateway.max_payload_bytes, defaults.max_payload_bytes);
        assert_eq!(gateway.query_timeout, defaults.query_timeout);
        assert_eq!(gateway.max_pending_sends, defaults.max_pending_sends);
        assert_eq!(gateway.max_rooms_per_socket, defaults.max_rooms_per_socket);
        assert_eq!(gateway.max_group_members, defaults.max_group_members);
        assert_eq!(gateway.max_buffered_packets, defaults.max_buffered_packets);
        assert_eq!(gateway.heartbeat_interval, defaults.heartbeat_interval);
        assert_eq!(gateway.trusted_proxies, defaults.trusted_proxies);
        let (limits, default_limits) = (&gateway.limits, &defaults.limits);
        assert_eq!(limits.sends, default_limits.sends);
        assert_eq!(limits.typing, default_limits.typing);
        assert_eq!(limits.joins, default_limits.joins);
        assert_eq!(limits.max_connections_per_user, default_limits.max_connections_per_user);
        assert_eq!(limits.max_connections_per_address, default_limits.max_connections_per_address);
        let AuthConfig::Jwt(jwt) = gateway.auth else { panic!("--auth jwt gives a JWT config") };
        assert_eq!(jwt.user_claim, JwtConfig::default().user_claim);
        assert_eq!(jwt.leeway_seconds, JwtConfig::default().leeway_seconds);

        let (persister, defaults) = (settings.persister_config(), PersisterConfig::default());
        assert_eq!(persister.store_timeout, defaults.store_timeout);
        assert_eq!(persister.max_batch, defaults.max_batch);
        assert_eq!(persister.batch_linger, defaults.batch_linger);
        // The one difference, on purpose: the flag's default is for NATS, the config's for any queue.
        assert_eq!(persister.batches_in_flight, persister_defaults::BATCHES_IN_FLIGHT);
        assert_eq!(defaults.batches_in_flight, persister_defaults::BATCHES_IN_FLIGHT_IN_PROCESS);

        let (presence, defaults) = (settings.presence_config(), PresenceConfig::default());
        assert_eq!(presence.gateway_timeout, defaults.gateway_timeout);
        assert_eq!(presence.lease, defaults.lease);
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "chat",
            "gateway",
            "--port",
            "4100",
            "--gateway-id",
            "gw-1",
            "--subject-prefix",
            "t1.chat",
            "--heartbeat-interval",
            "2s",
            "--shutdown-grace",
            "3s",
            "--cors-origins",
            "https://a.example,https://b.example",
        ])
        .expect("parses");
        assert_eq!(cli.command, Some(Command::Gateway));
        assert_eq!(cli.settings.port, 4100);
        let gateway = cli.settings.gateway_config();
        assert_eq!(gateway.gateway_id, "gw-1");
        assert_eq!(gateway.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(cli.settings.shutdown_grace, Duration::from_secs(3));
        assert_eq!(gateway.allowed_origins.map(|o| o.len()), Some(2));
    }

    #[test]
    fn worker_threads_are_the_runtime_default_unless_a_positive_count_is_given() {
        assert_eq!(Cli::try_parse_from(["chat"]).expect("parses").worker_threads, None);
        let cli = Cli::try_parse_from(["chat", "persister", "--worker-threads", "1"]).expect("parses");
        assert_eq!(cli.worker_threads.map(NonZeroUsize::get), Some(1));
        for bad in ["0", "-1", "many"] {
            assert!(Cli::try_parse_from(["chat", "--worker-threads", bad]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes_and_gateway_ids_that_would_break_subjects_are_refused() {
        for prefix in ["", "a..b", "chat.*", "chat >", "chat."] {
            assert!(Cli::try_parse_from(["chat", "--subject-prefix", prefix]).is_err(), "{prefix:?}");
        }
        for id in ["", "gw.1", "gw 1", "gw*"] {
            assert!(Cli::try_parse_from(["chat", "--gateway-id", id]).is_err(), "{id:?}");
        }
    }

    #[test]
    fn nats_url_takes_a_comma_separated_list_of_servers() {
        let cli = Cli::try_parse_from([
            "chat",
            "gateway",
            "--nats-url",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223, nats://127.0.0.1:4224",
            "--stream-replicas",
            "3",
        ])
        .expect("parses");
        let servers = cli.settings.nats_servers().expect("given");
        assert_eq!(servers.len(), 3);
        assert_eq!(servers.to_string(), "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224");
        assert_eq!(cli.settings.stream_replicas, 3);
    }

    #[test]
    fn cors_origins_are_bare_origins() {
        let cli = Cli::try_parse_from(["chat", "--cors-origins", "https://a.example, http://localhost:5173"])
            .expect("parses");
        assert_eq!(
            cli.settings.gateway_config().allowed_origins,
            Some(vec!["https://a.example".to_owned(), "http://localhost:5173".to_owned()])
        );
        for bad in
            ["*", "https://*.example", "https://a.example/", "https://a.example/app", "a.example", "ftp://a.example"]
        {
            let err = Cli::try_parse_from(["chat", "--cors-origins", bad]).expect_err(bad);
            assert!(err.to_string().contains("is not an origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_are_networks_and_a_bad_one_is_named() {
        let settings = Cli::try_parse_from(["chat"]).expect("parses").settings;
        assert!(settings.gateway_config().trusted_proxies.is_empty(), "X-Forwarded-For is off by default");
        let cli = Cli::try_parse_from(["chat", "gateway", "--trusted-proxies", "10.0.0.0/8, fd00::/8,192.168.1.7"])
            .expect("parses");
        let proxies = cli.settings.gateway_config().trusted_proxies;
        assert_eq!(proxies.to_string(), "10.0.0.0/8,fd00::/8,192.168.1.7/32");
        let err = Cli::try_parse_from(["chat", "--trusted-proxies", "10.0.0.0/8,10.0.0.300"]).expect_err("bad");
        let text = err.to_string();
        assert!(text.contains("--trusted-proxies") && text.contains("\"10.0.0.300\""), "{text}");
    }

    #[test]
    fn a_bad_nats_url_or_replica_count_is_a_clear_error() {
        for (url, expected) in [
            ("nats://127.0.0.1:4222,http://127.0.0.1:4223", "invalid NATS URL http://127.0.0.1:4223"),
            ("nats://127.0.0.1:4222,", "NATS URL 2 of 2 is empty"),
            ("nats://127.0.0.1:nope", "invalid NATS URL nats://127.0.0.1:nope"),
            ("", "no NATS URL given"),
        ] {
            let err = Cli::try_parse_from(["chat", "gateway", "--nats-url", url]).expect_err(url).to_string();
            assert!(err.contains("--nats-url") && err.contains(expected), "{url:?}: {err}");
        }
        for replicas in ["0", "6", "three"] {
            let err = Cli::try_parse_from(["chat", "--stream-replicas", replicas]).expect_err(replicas).to_string();
            assert!(err.contains("--stream-replicas"), "{replicas}: {err}");
        }
    }
}
