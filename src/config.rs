//! Command line and environment: every setting has a flag, an environment variable, and a
//! default that works on a developer's machine.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chat_gateway::GatewayConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "chat",
    version,
    about = "Real-time chat backend: Socket.IO API on one node or a NATS cluster"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub server: ServerArgs,

    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every role in one process on an in-process bus (the default).
    All,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Port for HTTP and Socket.IO.
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

    /// Longest message `content` accepted, in characters.
    #[arg(
        long,
        env = "CHAT_MAX_CONTENT_CHARS",
        default_value_t = 10_000,
        global = true
    )]
    pub max_content_chars: usize,

    /// Largest Socket.IO packet accepted, in bytes; a client that sends more is disconnected.
    #[arg(
        long,
        env = "CHAT_MAX_PAYLOAD_BYTES",
        default_value_t = 1_000_000,
        global = true
    )]
    pub max_payload_bytes: u64,

    /// Origins allowed by CORS, comma-separated; unset allows any origin (development).
    #[arg(long, env = "CHAT_CORS_ORIGINS", value_delimiter = ',', global = true)]
    pub cors_origins: Option<Vec<String>>,
}

impl ServerArgs {
    pub fn gateway_config(&self) -> GatewayConfig {
        GatewayConfig {
            max_content_chars: self.max_content_chars,
            max_payload_bytes: self.max_payload_bytes,
            allowed_origins: self.cors_origins.clone(),
            query_timeout: Duration::from_secs(5),
            ..GatewayConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_means_all_in_one_on_port_3000_with_local_data() {
        let cli = Cli::try_parse_from(["chat"]).expect("parses");
        assert!(cli.command.is_none());
        assert_eq!(cli.server.port, 3000);
        assert_eq!(cli.server.data_dir, PathBuf::from("./data"));
        assert!(cli.server.database_url.is_none());
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::try_parse_from([
            "chat",
            "all",
            "--port",
            "4100",
            "--data-dir",
            "/tmp/x",
            "--cors-origins",
            "https://a.example,https://b.example",
        ])
        .expect("parses");
        assert!(matches!(cli.command, Some(Command::All)));
        assert_eq!(cli.server.port, 4100);
        assert_eq!(
            cli.server.gateway_config().allowed_origins.unwrap().len(),
            2
        );
    }
}
