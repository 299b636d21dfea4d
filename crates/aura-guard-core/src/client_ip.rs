//! Client IP: Envoy's downstream address, or the X-Forwarded-For entry written by the
//! outermost trusted proxy. X-Forwarded-For is believed only when the TCP peer is one of the
//! configured proxies (`ratelimit.trusted_proxies`), and then only hop by hop while each
//! address reached is again a trusted proxy, at most `trusted_hops` hops: every entry used was
//! written by a proxy we trust, so a client cannot pick its own identity, neither by sending
//! the header nor by connecting to Envoy directly (docs/ratelimit.md, "Who is limited").

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Parses `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`, tolerating surrounding spaces.
/// IPv4-mapped IPv6 addresses become IPv4 so both spellings share a counter.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let ip = if let Ok(sa) = s.parse::<SocketAddr>() {
        sa.ip()
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else {
        s.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .ok()?
    };
    Some(ip.to_canonical())
}

/// `ip` with every bit below the first `len` cleared (`len` beyond the address keeps it).
fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

/// A network in CIDR form (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a single host).
/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is kept as its IPv4 network, because
/// addresses are compared in their canonical form ([`parse_ip`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` (in any spelling, IPv4-mapped included) is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && network(ip, self.len) == self.net
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Refuses a prefix longer than the address and host bits set below the prefix
    /// (`10.0.0.1/8` is more likely a typo than a wish to trust all of 10/8).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR (e.g. 10.0.0.0/8)"))?;
        let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max && len.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        let (ip, len) = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if len >= 96 => (IpAddr::V4(v4), len - 96),
                _ => (ip, len),
            },
            IpAddr::V4(_) => (ip, len),
        };
        if network(ip, len) != ip {
            return Err(format!(
                "{s:?} has host bits set below the prefix; write the network address"
            ));
        }
        Ok(Cidr { net: ip, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// The client address.
///
/// * `downstream`: Envoy's `source.address` (the TCP peer), e.g. `10.0.0.1:5555`.
/// * `xff`: X-Forwarded-For as the proxies in front of Envoy sent it
///   ([`forwarded_for_before_envoy`]), None when absent.
/// * `trusted_hops`: the most proxies in front of Envoy (0: X-Forwarded-For is ignored).
/// * `trusted_proxies`: the networks those proxies have their addresses in.
///
/// The walk (nginx's `real_ip_recursive`, bounded by `trusted_hops`): start at the peer; while
/// the current address is a trusted proxy and hops remain, step to the next entry from the
/// right (the address that proxy saw as its peer). The address reached is the client. A
/// missing or unparsable entry stops the walk at the proxy that sent it. A peer that is not an
/// address (e.g. a pipe) is never trusted and gives None.
pub fn client_ip(
    downstream: &str,
    xff: Option<&str>,
    trusted_hops: u32,
    trusted_proxies: &[Cidr],
) -> Option<IpAddr> {
    let mut current = parse_ip(downstream)?;
    let mut entries = xff.into_iter().flat_map(|x| x.rsplit(','));
    for _ in 0..trusted_hops {
        if !trusted_proxies.iter().any(|c| c.contains(current)) {
            break;
        }
        match entries.next().and_then(parse_ip) {
            Some(ip) => current = ip,
            None => break,
        }
    }
    Some(current)
}

/// X-Forwarded-For as the proxies in front of Envoy sent it. With `use_remote_address: true`
/// (envoy/envoy.yaml) Envoy appends one entry before any filter runs: the peer address, or
/// its own address for a loopback peer. `trusted_hops` counts the proxies in front of Envoy,
/// so with `envoy_appends` that rightmost entry is dropped first. Empty results become None.
pub fn forwarded_for_before_envoy(xff: Option<&str>, envoy_appends: bool) -> Option<String> {
    let xff = xff?.trim();
    let kept = match (envoy_appends, xff.rsplit_once(',')) {
        (false, _) => xff,
        (true, Some((rest, _))) => rest,
        (true, None) => "",
    };
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_string())
}

/// The value used as the `ip` descriptor entry: the canonical address, or for IPv6 the
/// network of `v6_prefix_len` bits in CIDR form (one host can usually use a whole /64).
pub fn ip_key(ip: IpAddr, v6_prefix_len: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(_) if v6_prefix_len >= 128 => ip.to_string(),
        IpAddr::V6(_) => format!("{}/{v6_prefix_len}", network(ip, v6_prefix_len)),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn parses_v4_v6_with_and_without_ports() {
        assert_eq!(parse_ip("1.2.3.4"), ip("1.2.3.4"));
        assert_eq!(parse_ip(" 1.2.3.4:8080 "), ip("1.2.3.4"));
        assert_eq!(parse_ip("::1"), ip("::1"));
        assert_eq!(parse_ip("[::1]"), ip("::1"));
        assert_eq!(parse_ip("[2001:db8::7]:443"), ip("2001:db8::7"));
        assert_eq!(parse_ip("2001:db8::7"), ip("2001:db8::7"));
        assert_eq!(parse_ip("::ffff:10.1.2.3"), ip("10.1.2.3"));
        assert_eq!(parse_ip("unknown"), None);
        assert_eq!(parse_ip("1.2.3.4:"), None);
        assert_eq!(parse_ip("[::1"), None);
        assert_eq!(parse_ip(""), None);
    }

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    /// The proxies of most tests: a private network.
    fn lan() -> Vec<Cidr> {
        nets(&["10.0.0.0/8"])
    }

    /// The client IP of a request whose peer is the proxy 10.0.0.1.
    fn behind_lan(xff: Option<&str>, trusted_hops: u32) -> Option<IpAddr> {
        client_ip("10.0.0.1:5", xff, trusted_hops, &lan())
    }

    #[test]
    fn zero_trusted_hops_ignores_xff() {
        assert_eq!(
            client_ip("9.9.9.9:1", Some("1.1.1.1"), 0, &nets(&["9.9.9.9"])),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn one_hop_takes_rightmost_entry_so_client_prefix_is_ignored() {
        // Client sent "6.6.6.6" itself; the trusted proxy appended the real peer 2.2.2.2.
        assert_eq!(behind_lan(Some("6.6.6.6, 2.2.2.2"), 1), ip("2.2.2.2"));
        assert_eq!(behind_lan(Some("2.2.2.2"), 1), ip("2.2.2.2"));
    }

    #[test]
    fn two_hops_take_second_from_right() {
        let xff = "6.6.6.6, 7.7.7.7, 3.3.3.3, 10.0.0.2";
        assert_eq!(behind_lan(Some(xff), 2), ip("3.3.3.3"));
    }

    #[test]
    fn spoofing_many_entries_cannot_move_the_trusted_position() {
        let spoof = "1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4";
        let xff = format!("{spoof}, 5.5.5.5");
        assert_eq!(behind_lan(Some(&xff), 1), ip("5.5.5.5"));
    }

    #[test]
    fn missing_or_garbage_xff_falls_back_to_the_trusted_peer() {
        assert_eq!(behind_lan(None, 1), ip("10.0.0.1"));
        assert_eq!(behind_lan(Some("1.1.1.1, nonsense"), 1), ip("10.0.0.1"));
        assert_eq!(behind_lan(Some(""), 1), ip("10.0.0.1"));
        assert_eq!(behind_lan(Some("1.1.1.1,,"), 1), ip("10.0.0.1"));
    }

    #[test]
    fn a_chain_shorter_than_trusted_hops_ends_at_the_first_untrusted_entry() {
        // The client reached the inner proxy directly: the entry that proxy wrote is the
        // client's real address (before trusted proxies were checked hop by hop, the peer was
        // used here).
        assert_eq!(behind_lan(Some("2.2.2.2"), 2), ip("2.2.2.2"));
        // Every entry is a trusted proxy (an internal caller): the last one reached.
        assert_eq!(behind_lan(Some("10.0.0.9"), 3), ip("10.0.0.9"));
    }

    #[test]
    fn forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_is_ignored() {
        // A client connecting to Envoy directly picks any X-Forwarded-For it likes.
        for xff in ["1.2.3.4", "10.0.0.1, 1.2.3.4", "203.0.113.1:80"] {
            assert_eq!(
                client_ip("198.51.100.7:5", Some(xff), 1, &lan()),
                ip("198.51.100.7"),
                "{xff}"
            );
            assert_eq!(
                client_ip("198.51.100.7:5", Some(xff), 16, &lan()),
                ip("198.51.100.7")
            );
        }
        // No proxy list at all: nothing is trusted.
        assert_eq!(
            client_ip("10.0.0.1:5", Some("1.2.3.4"), 1, &[]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn each_hop_must_be_a_trusted_proxy_not_just_the_peer() {
        // Two trusted hops configured, but the client connected to the inner proxy (10.0.0.1)
        // directly with a forged entry: that proxy appended the client's real address
        // 203.0.113.50, which is not a proxy, so the forged 6.6.6.6 is never reached.
        let forged = behind_lan(Some("6.6.6.6, 203.0.113.50"), 2);
        assert_eq!(forged, ip("203.0.113.50"));
        // Through both proxies (outer 10.0.0.2): the outer proxy's entry is used.
        let through = behind_lan(Some("6.6.6.6, 192.0.2.1, 10.0.0.2"), 2);
        assert_eq!(through, ip("192.0.2.1"));
        // More trusted proxies than hops: the walk stops after `trusted_hops`.
        let internal = behind_lan(Some("10.0.0.4, 10.0.0.3, 10.0.0.2"), 2);
        assert_eq!(internal, ip("10.0.0.3"));
    }

    #[test]
    fn ipv4_mapped_peers_and_entries_match_ipv4_networks() {
        let trusted = nets(&["127.0.0.1/32", "::ffff:10.0.0.0/104"]);
        assert_eq!(
            client_ip("[::ffff:127.0.0.1]:5", Some("192.0.2.8"), 1, &trusted),
            ip("192.0.2.8")
        );
        assert_eq!(
            client_ip(
                "[::ffff:10.9.9.9]:5",
                Some("[::ffff:192.0.2.9]:1"),
                1,
                &trusted
            ),
            ip("192.0.2.9")
        );
        // A mapped spelling of an untrusted peer is still untrusted.
        assert_eq!(
            client_ip("[::ffff:198.51.100.1]:5", Some("1.1.1.1"), 1, &trusted),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn ipv6_entries_with_brackets_and_ports_in_xff() {
        let loopback = nets(&["::1"]);
        assert_eq!(
            client_ip("[::1]:5", Some("[2001:db8::1]:1234"), 1, &loopback),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip("[::1]:5", Some("2001:db8::2"), 1, &loopback),
            ip("2001:db8::2")
        );
        assert_eq!(
            client_ip("[2001:db8::9]:5", None, 1, &loopback),
            ip("2001:db8::9")
        );
    }

    #[test]
    fn unparsable_peer_is_never_trusted_and_gives_none() {
        assert_eq!(client_ip("pipe:/x", Some("1.1.1.1"), 0, &[]), None);
        assert_eq!(client_ip("pipe:/x", Some("1.1.1.1"), 1, &lan()), None);
    }

    #[test]
    fn cidrs_parse_networks_and_single_addresses() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains("10.255.1.2".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(
            !c.contains("::a00:1".parse().unwrap()),
            "IPv4-compatible is IPv6"
        );
        let host: Cidr = " 127.0.0.1 ".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!("::1".parse::<Cidr>().unwrap().to_string(), "::1/128");
        let mapped: Cidr = "::ffff:192.168.0.0/112".parse().unwrap();
        assert_eq!(mapped.to_string(), "192.168.0.0/16");
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix_len(), 0);
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn cidrs_with_host_bits_bad_prefixes_or_names_are_refused() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "2001:db8::1/32",
            "::/129",
            "localhost",
            "10.0.0.0/8/8",
            "[::1]/128",
            "10.0.0.0:80",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn ipv6_keys_aggregate_to_the_prefix_and_ipv4_stays_exact() {
        assert_eq!(ip_key("1.2.3.4".parse().unwrap(), 64), "1.2.3.4");
        let a = ip_key("2001:db8:1:2:aaaa::1".parse().unwrap(), 64);
        let b = ip_key("2001:db8:1:2:bbbb::2".parse().unwrap(), 64);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_eq!(ip_key("2001:db8::1".parse().unwrap(), 128), "2001:db8::1");
        assert_eq!(
            ip_key("2001:db8:ffff::1".parse().unwrap(), 48),
            "2001:db8:ffff::/48"
        );
    }
}
