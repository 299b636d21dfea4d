//! Client IP: Envoy's downstream address, or the X-Forwarded-For entry written by the
//! outermost trusted proxy. Only the `trusted_hops` rightmost entries were written by
//! proxies we trust; everything left of them is client-controlled and ignored, so a client
//! cannot pick its own identity by sending an X-Forwarded-For header.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

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

/// The client address for rate limiting.
///
/// * `downstream`: Envoy's `source.address` (the TCP peer), e.g. `10.0.0.1:5555`.
/// * `xff`: all X-Forwarded-For values joined with `,` (None when absent).
/// * `trusted_hops`: number of trusted proxies in front of Envoy. With N > 0 the entry N-th
///   from the right is taken (each trusted proxy appends its peer). If the header is shorter
///   than N or that entry is not an address, the request did not come through the expected
///   chain and the peer address is used.
pub fn client_ip(downstream: &str, xff: Option<&str>, trusted_hops: u32) -> Option<IpAddr> {
    let peer = parse_ip(downstream);
    if trusted_hops == 0 {
        return peer;
    }
    let Some(xff) = xff else {
        return peer;
    };
    let entries: Vec<&str> = xff.split(',').map(str::trim).collect();
    let from_right = usize::try_from(trusted_hops).ok();
    let chosen = from_right
        .and_then(|n| entries.len().checked_sub(n))
        .and_then(|i| entries.get(i))
        .and_then(|e| parse_ip(e));
    chosen.or(peer)
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
        IpAddr::V6(v6) => {
            let len = u32::from(v6_prefix_len.min(128));
            if len == 128 {
                return v6.to_string();
            }
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            let net = Ipv6Addr::from(u128::from(v6) & mask);
            format!("{net}/{len}")
        }
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

    #[test]
    fn zero_trusted_hops_ignores_xff() {
        assert_eq!(client_ip("9.9.9.9:1", Some("1.1.1.1"), 0), ip("9.9.9.9"));
    }

    #[test]
    fn one_hop_takes_rightmost_entry_so_client_prefix_is_ignored() {
        // Client sent "6.6.6.6" itself; the trusted proxy appended the real peer 2.2.2.2.
        assert_eq!(
            client_ip("10.0.0.1:5", Some("6.6.6.6, 2.2.2.2"), 1),
            ip("2.2.2.2")
        );
        assert_eq!(client_ip("10.0.0.1:5", Some("2.2.2.2"), 1), ip("2.2.2.2"));
    }

    #[test]
    fn two_hops_take_second_from_right() {
        let xff = "6.6.6.6, 7.7.7.7, 3.3.3.3, 10.0.0.2";
        assert_eq!(client_ip("10.0.0.1:5", Some(xff), 2), ip("3.3.3.3"));
    }

    #[test]
    fn spoofing_many_entries_cannot_move_the_trusted_position() {
        let spoof = "1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4";
        let xff = format!("{spoof}, 5.5.5.5");
        assert_eq!(client_ip("10.0.0.1:5", Some(&xff), 1), ip("5.5.5.5"));
    }

    #[test]
    fn short_or_missing_or_garbage_xff_falls_back_to_peer() {
        assert_eq!(client_ip("10.0.0.1:5", Some("2.2.2.2"), 2), ip("10.0.0.1"));
        assert_eq!(client_ip("10.0.0.1:5", None, 1), ip("10.0.0.1"));
        assert_eq!(
            client_ip("10.0.0.1:5", Some("1.1.1.1, nonsense"), 1),
            ip("10.0.0.1")
        );
        assert_eq!(client_ip("10.0.0.1:5", Some(""), 1), ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_entries_with_brackets_and_ports_in_xff() {
        assert_eq!(
            client_ip("[::1]:5", Some("[2001:db8::1]:1234"), 1),
            ip("2001:db8::1")
        );
        assert_eq!(
            client_ip("[::1]:5", Some("2001:db8::2"), 1),
            ip("2001:db8::2")
        );
        assert_eq!(client_ip("[2001:db8::9]:5", None, 1), ip("2001:db8::9"));
    }

    #[test]
    fn unparsable_peer_and_no_trust_gives_none() {
        assert_eq!(client_ip("pipe:/x", Some("1.1.1.1"), 0), None);
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
