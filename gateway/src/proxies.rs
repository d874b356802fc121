//! Which address a connection comes from, when proxies stand in front of the gateway.
//!
//! `X-Forwarded-For` is written by the client as much as by proxies: anyone can send one. It is
//! therefore read only when the TCP peer is a proxy the operator named (`--trusted-proxies`),
//! and then from the right: each trusted proxy appends the address it received the request
//! from, so the entries at the right end were written by our proxies, and the first entry
//! (from the right) that is not one of them is the address our outermost proxy saw: the
//! client. Everything to its left came from the client and is ignored; a client that writes
//! its own header gains nothing. An entry that is not an address means the chain cannot be
//! read, so the peer's address is used (the connection then counts against its proxy's
//! address, never against an address the client chose).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header proxies append the client's address to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks whose hosts are trusted to write `X-Forwarded-For`; empty (the default): the
/// header is never read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A `--trusted-proxies` entry that is neither a network nor an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("trusted proxy {position} of {count}, {entry:?}, is not an IP address or CIDR network (e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)")]
pub struct TrustedProxiesError {
    pub entry: String,
    /// 1-based.
    pub position: usize,
    pub count: usize,
}

impl FromStr for TrustedProxies {
    type Err = TrustedProxiesError;

    /// A comma-separated list of CIDR networks, IPv4 or IPv6; a bare address is a network of
    /// one (/32 or /128). Blank input is the empty list.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        let entries: Vec<&str> = raw.split(',').map(str::trim).collect();
        let count = entries.len();
        let networks = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                parse_network(entry).ok_or_else(|| TrustedProxiesError {
                    entry: (*entry).to_owned(),
                    position: index + 1,
                    count,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(networks))
    }
}

fn parse_network(entry: &str) -> Option<IpNet> {
    if let Ok(network) = entry.parse::<IpNet>() {
        // `10.1.2.3/8` names 10.0.0.0/8: the host bits say nothing more.
        return Some(network.trunc());
    }
    entry.parse::<IpAddr>().ok().map(|address| IpNet::from(address.to_canonical()))
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let networks: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&networks.join(","))
    }
}

impl TrustedProxies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client's address, given the TCP peer's and the request's headers (see the module
    /// doc for the rule).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        // Several headers are one list, in order (RFC 9110, 5.3).
        let entries: Vec<&str> = headers
            .get_all(FORWARDED_FOR)
            .iter()
            .map(|value| value.to_str().unwrap_or(""))
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut furthest = peer;
        for entry in entries.iter().rev() {
            let Some(address) = parse_entry(entry) else { return peer };
            if !self.trusts(address) {
                return address;
            }
            furthest = address;
        }
        // Every hop is one of our proxies: the request started inside, at the leftmost.
        furthest
    }
}

/// An address as proxies write it: bare, or with a port (`192.0.2.1:4711`, `[2001:db8::1]:443`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let address = entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn proxies(raw: &str) -> TrustedProxies {
        raw.parse().expect("valid")
    }

    fn ip(raw: &str) -> IpAddr {
        raw.parse().expect("an address")
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).expect("a header value"));
        }
        headers
    }

    #[test]
    fn networks_and_bare_addresses_of_both_families_parse() {
        let parsed = proxies(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8, 2001:db8::1, 172.16.5.4/12");
        assert_eq!(parsed.to_string(), "10.0.0.0/8,192.168.1.7/32,fd00::/8,2001:db8::1/128,172.16.0.0/12");
        assert!(proxies("").is_empty());
        assert!(proxies("  ").is_empty());
    }

    #[test]
    fn a_bad_entry_is_named_with_its_position() {
        for (raw, entry, position) in [
            ("10.0.0.0/8,nonsense", "nonsense", 2),
            ("10.0.0.0/33", "10.0.0.0/33", 1),
            ("10.0.0.0/8,,fd00::/8", "", 2),
            ("10.0.0.1:80", "10.0.0.1:80", 1),
        ] {
            let error = raw.parse::<TrustedProxies>().expect_err(raw);
            assert_eq!((error.entry.as_str(), error.position), (entry, position), "{raw}");
            assert!(error.to_string().contains(&format!("{entry:?}")), "{error}");
        }
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        let none = TrustedProxies::default();
        assert_eq!(none.client_address(ip("203.0.113.9"), &headers(&["198.51.100.1"])), ip("203.0.113.9"));
    }

    #[test]
    fn a_peer_outside_the_trusted_networks_is_the_client_whatever_it_says() {
        let trusted = proxies("10.0.0.0/8");
        let spoofed = headers(&["198.51.100.1"]);
        assert_eq!(trusted.client_address(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
    }

    #[test]
    fn the_entry_our_proxy_appended_is_taken_not_the_leftmost_the_client_wrote() {
        let trusted = proxies("10.0.0.0/8");
        // The client sent `X-Forwarded-For: 1.2.3.4`; our proxy appended what it saw.
        let forwarded = headers(&["1.2.3.4, 198.51.100.7"]);
        assert_eq!(trusted.client_address(ip("10.1.2.3"), &forwarded), ip("198.51.100.7"));
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_from_the_right() {
        let trusted = proxies("10.0.0.0/8, 192.168.0.0/16");
        // client → edge proxy (192.168.3.3) → ingress (10.0.0.5) → gateway
        let forwarded = headers(&["6.6.6.6, 198.51.100.7, 192.168.3.3"]);
        assert_eq!(trusted.client_address(ip("10.0.0.5"), &forwarded), ip("198.51.100.7"));
        // Several headers are one list, in order.
        let split = headers(&["6.6.6.6", "198.51.100.7", "192.168.3.3"]);
        assert_eq!(trusted.client_address(ip("10.0.0.5"), &split), ip("198.51.100.7"));
        // Nothing but our own proxies: the leftmost is where the request started.
        let internal = headers(&["10.9.9.9, 192.168.3.3"]);
        assert_eq!(trusted.client_address(ip("10.0.0.5"), &internal), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(trusted.client_address(ip("10.0.0.5"), &HeaderMap::new()), ip("10.0.0.5"));
    }

    #[test]
    fn ipv6_peers_entries_and_ipv4_mapped_peers() {
        let trusted = proxies("fd00::/8, 10.0.0.0/8");
        let forwarded = headers(&["2001:db8::66, 2001:db8::7, fd00::2"]);
        assert_eq!(trusted.client_address(ip("fd00::1"), &forwarded), ip("2001:db8::7"));
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        let forwarded = headers(&["[2001:db8::7]:443"]);
        assert_eq!(trusted.client_address(ip("::ffff:10.0.0.5"), &forwarded), ip("2001:db8::7"));
        let forwarded = headers(&["198.51.100.7:51234"]);
        assert_eq!(trusted.client_address(ip("10.0.0.5"), &forwarded), ip("198.51.100.7"));
    }

    #[test]
    fn a_malformed_entry_falls_back_to_the_peer() {
        let trusted = proxies("10.0.0.0/8");
        for value in ["unknown", "198.51.100.7, garbage", "198.51.100.7,,10.0.0.9", "_hidden, 10.0.0.9", ""] {
            assert_eq!(trusted.client_address(ip("10.0.0.5"), &headers(&[value])), ip("10.0.0.5"), "{value:?}");
        }
        // Left of the client's entry, nothing is read: the client's own junk changes nothing.
        let forwarded = headers(&["garbage, 198.51.100.7"]);
        assert_eq!(trusted.client_address(ip("10.0.0.5"), &forwarded), ip("198.51.100.7"));
    }
}
