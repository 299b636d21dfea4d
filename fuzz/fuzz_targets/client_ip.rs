//! The client IP rule (client_ip.rs): X-Forwarded-For, the peer address and the trusted
//! networks are arbitrary. Never panics; without trusted hops the client is the peer; the
//! client is always the peer or an address of the header; a network's text form parses back
//! to itself.
#![no_main]

use arbitrary::{Result, Unstructured};
use aura_guard_core::client_ip::{client_ip, forwarded_for_before_envoy, ip_key, parse_ip, Cidr};
use libfuzzer_sys::fuzz_target;

fn case(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let peer: String = u.arbitrary()?;
    let xff: Option<String> = u.arbitrary()?;
    let hops = u.int_in_range(0..=5)?;
    let n = u.int_in_range(0..=4)?;
    let mut nets = Vec::new();
    for _ in 0..n {
        let s: String = u.arbitrary()?;
        if let Ok(c) = s.parse::<Cidr>() {
            let back: Cidr = match c.to_string().parse() {
                Ok(b) => b,
                Err(e) => panic!("{s:?} -> {c} does not parse back: {e}"),
            };
            assert_eq!(back, c, "{s:?}");
            nets.push(c);
        }
    }
    let envoy_appends: bool = u.arbitrary()?;
    let before = forwarded_for_before_envoy(xff.as_deref(), envoy_appends);
    if let Some(b) = &before {
        assert!(!b.is_empty() && b.trim() == b);
    }
    let peer_ip = parse_ip(&peer);
    assert_eq!(client_ip(&peer, before.as_deref(), 0, &nets), peer_ip);
    let got = client_ip(&peer, before.as_deref(), hops, &nets);
    assert_eq!(got.is_some(), peer_ip.is_some());
    if let Some(ip) = got {
        let from_header = before
            .as_deref()
            .into_iter()
            .flat_map(|x| x.split(','))
            .filter_map(parse_ip)
            .any(|e| e == ip);
        assert!(
            Some(ip) == peer_ip || from_header,
            "{ip} from {peer:?} {before:?}"
        );
        assert_eq!(Some(ip), parse_ip(&ip.to_string()), "{ip}");
        let _ = ip_key(ip, u.arbitrary()?);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = case(data);
});
