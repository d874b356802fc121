//! [`NatsServers`]: the NATS servers a role connects to, from `NATS_URL`.
//!
//! One URL names one server; several, separated by commas, name servers of one NATS cluster.
//! The client connects to any of them, and when the connection is lost it reconnects to
//! another: a role then survives the loss of the server it was talking to. A URL may carry
//! credentials (`nats://user:password@host:4222`), so what is shown of one, in logs and in
//! errors, never includes them.

use std::fmt;
use std::str::FromStr;

use async_nats::ServerAddr;

/// The servers of one NATS cluster (or one server), in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsServers(Vec<ServerAddr>);

/// Why a `NATS_URL` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatsUrlError {
    #[error("no NATS URL given")]
    Empty,
    #[error("NATS URL {position} of {count} is empty: remove the stray comma")]
    EmptyEntry { position: usize, count: usize },
    #[error("invalid NATS URL {url}: {reason} (expected nats://host:port, or several separated by commas)")]
    Invalid {
        /// The URL as given, its credentials hidden.
        url: String,
        reason: String,
    },
}

impl NatsServers {
    /// The addresses, for the client.
    pub fn addrs(&self) -> &[ServerAddr] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for NatsServers {
    type Err = NatsUrlError;

    /// Parses one URL or a comma-separated list (spaces around the commas are allowed). A
    /// URL without a scheme is `nats://`, without a port 4222.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.trim().is_empty() {
            return Err(NatsUrlError::Empty);
        }
        let entries: Vec<&str> = raw.split(',').map(str::trim).collect();
        let count = entries.len();
        let mut servers = Vec::with_capacity(count);
        for (index, entry) in entries.into_iter().enumerate() {
            if entry.is_empty() {
                return Err(NatsUrlError::EmptyEntry { position: index + 1, count });
            }
            let invalid = |reason: String| NatsUrlError::Invalid { url: hide_credentials(entry), reason };
            let addr = entry.parse::<ServerAddr>().map_err(|e| invalid(e.to_string()))?;
            // The client would accept `nats://` and fail only when connecting, less clearly.
            if addr.host().is_empty() {
                return Err(invalid("empty host".into()));
            }
            servers.push(addr);
        }
        Ok(Self(servers))
    }
}

/// The URLs, comma-separated, each as `scheme://host:port` with `***@` in place of credentials.
impl fmt::Display for NatsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, addr) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            let credentials = if addr.has_user_pass() { "***@" } else { "" };
            let host = addr.host();
            if host.contains(':') {
                write!(f, "{}://{credentials}[{host}]:{}", addr.scheme(), addr.port())?;
            } else {
                write!(f, "{}://{credentials}{host}:{}", addr.scheme(), addr.port())?;
            }
        }
        Ok(())
    }
}

/// A URL that did not parse, with whatever precedes its last `@` (user, password or token)
/// replaced by `***`.
fn hide_credentials(url: &str) -> String {
    let Some(at) = url.rfind('@') else { return url.to_owned() };
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    if start > at {
        return url.to_owned();
    }
    format!("{}***{}", &url[..start], &url[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_comma_separated_list() {
        let one: NatsServers = "nats://127.0.0.1:4222".parse().expect("parses");
        assert_eq!(one.len(), 1);
        assert_eq!(one.to_string(), "nats://127.0.0.1:4222");

        let three: NatsServers = "nats://a:4222, nats://b:4223 ,c".parse().expect("parses");
        assert_eq!(three.len(), 3);
        assert_eq!(three.to_string(), "nats://a:4222,nats://b:4223,nats://c:4222", "scheme and port default");
        let ports: Vec<u16> = three.addrs().iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4222]);
    }

    #[test]
    fn empty_values_and_stray_commas_are_refused() {
        assert_eq!("".parse::<NatsServers>(), Err(NatsUrlError::Empty));
        assert_eq!("  ".parse::<NatsServers>(), Err(NatsUrlError::Empty));
        assert_eq!("nats://a:4222,".parse::<NatsServers>(), Err(NatsUrlError::EmptyEntry { position: 2, count: 2 }));
        assert_eq!(
            "nats://a:4222,,nats://b:4222".parse::<NatsServers>(),
            Err(NatsUrlError::EmptyEntry { position: 2, count: 3 })
        );
    }

    #[test]
    fn a_bad_url_is_named_in_the_error() {
        for (raw, named, why) in [
            ("http://a:4222", "http://a:4222", "scheme"),
            ("nats://a:4222,nats://b:port", "nats://b:port", "invalid port"),
            ("nats://a b:4222", "nats://a b:4222", "invalid"),
            ("nats://", "nats://", "empty host"),
        ] {
            let err = raw.parse::<NatsServers>().expect_err(raw);
            let text = err.to_string();
            assert!(matches!(err, NatsUrlError::Invalid { .. }), "{raw}: {err:?}");
            assert!(text.contains(named) && text.contains(why), "{raw}: {text}");
        }
    }

    #[test]
    fn credentials_never_show() {
        let servers: NatsServers = "nats://user:secret@a:4222,nats://token@b:4222".parse().expect("parses");
        assert_eq!(servers.to_string(), "nats://***@a:4222,nats://***@b:4222");
        assert_eq!(servers.addrs()[0].password(), Some("secret"), "the client still gets them");

        let err = "nats://user:secret@a:port".parse::<NatsServers>().expect_err("bad port").to_string();
        assert!(!err.contains("secret") && !err.contains("user") && err.contains("nats://***@a:port"), "{err}");
        assert_eq!(hide_credentials("user:secret@a"), "***@a");
        assert_eq!(hide_credentials("nats://a:4222"), "nats://a:4222");
    }
}
