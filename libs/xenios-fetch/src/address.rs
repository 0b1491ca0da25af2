//! Which IP addresses a `url` input may reach: public unicast only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Names of cloud metadata services. Their addresses are refused anyway (link-local or
/// private); refusing the names too gives a clear reason and covers resolvers that answer
/// them with something unexpected.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
];

/// Metadata endpoints named apart from their range, so a refusal says what was at stake.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, …
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];
const METADATA_V6: &[Ipv6Addr] = &[Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)]; // AWS

/// IPv4 ranges that are not public unicast (IANA special-purpose registry). Order matters
/// where ranges nest: the first match names the range.
const V4_RANGES: &[([u8; 4], u32, &str)] = &[
    ([0, 0, 0, 0], 32, "unspecified"),
    ([0, 0, 0, 0], 8, "this network"),
    ([10, 0, 0, 0], 8, "private"),
    ([100, 64, 0, 0], 10, "shared address space (CGNAT)"),
    ([127, 0, 0, 0], 8, "loopback"),
    ([169, 254, 0, 0], 16, "link-local"),
    ([172, 16, 0, 0], 12, "private"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments"),
    ([192, 0, 2, 0], 24, "documentation"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast"),
    ([192, 168, 0, 0], 16, "private"),
    ([198, 18, 0, 0], 15, "benchmarking"),
    ([198, 51, 100, 0], 24, "documentation"),
    ([203, 0, 113, 0], 24, "documentation"),
    ([224, 0, 0, 0], 4, "multicast"),
    ([255, 255, 255, 255], 32, "broadcast"),
    ([240, 0, 0, 0], 4, "reserved"),
];

/// IPv6 ranges that are not public unicast, checked after the forms that embed an IPv4
/// address. Anything outside 2000::/3 (global unicast) is refused as well.
const V6_RANGES: &[([u16; 8], u32, &str)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
    ([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "NAT64 local use"),
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
    ([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo"),
    (
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments",
    ),
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
    ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "segment routing"),
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local"),
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
];

/// The range that makes `ip` unreachable for `url` inputs, or `None` for a public unicast
/// address. IPv6 forms that carry an IPv4 address (mapped `::ffff:a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address they lead to.
pub fn forbidden_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// Whether `host` (lowercase, no trailing dot) names a cloud metadata service.
pub(crate) fn is_metadata_name(host: &str) -> bool {
    METADATA_NAMES.contains(&host)
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if METADATA_V4.contains(&ip) {
        return Some("cloud metadata");
    }
    let bits = ip.to_bits();
    V4_RANGES
        .iter()
        .find(|(net, prefix, _)| {
            in_prefix(bits.into(), u32::from_be_bytes(*net).into(), *prefix, 32)
        })
        .map(|(_, _, name)| *name)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if METADATA_V6.contains(&ip) {
        return Some("cloud metadata");
    }
    if let Some(v4) = embedded_v4(ip) {
        return forbidden_v4(v4);
    }
    let bits = ip.to_bits();
    if let Some((_, _, name)) = V6_RANGES
        .iter()
        .find(|(net, prefix, _)| in_prefix(bits, Ipv6Addr::from(*net).to_bits(), *prefix, 128))
    {
        return Some(name);
    }
    (bits >> 125 != 0b001).then_some("reserved")
}

/// The IPv4 address a packet to `ip` ends up at, for the forms that say so.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    let low32 = Ipv4Addr::from_bits(bits as u32);
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(low32)
    } else if segments[0] == 0x2002 {
        Some(Ipv4Addr::from_bits((bits >> 80) as u32))
    } else if segments[..6] == [0; 6] && bits > 1 {
        // IPv4-compatible (deprecated), which some stacks still route as IPv4.
        Some(low32)
    } else {
        None
    }
}

fn in_prefix(bits: u128, net: u128, prefix: u32, width: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        (u128::MAX << (width - prefix)) & (u128::MAX >> (128 - width))
    };
    bits & mask == net & mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Option<&'static str> {
        forbidden_range(s.parse().unwrap())
    }

    #[test]
    fn refuses_every_non_public_ipv4_range() {
        let cases = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "shared address space (CGNAT)"),
            ("100.127.255.254", "shared address space (CGNAT)"),
            ("100.100.100.200", "cloud metadata"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.192", "IETF protocol assignments"),
            ("192.0.2.10", "documentation"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
        ];
        for (ip, expected) in cases {
            assert_eq!(range(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn refuses_every_non_public_ipv6_range() {
        let cases = [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("64:ff9b:1::1", "NAT64 local use"),
            ("2002:7f00:1::1", "loopback"),
            ("2002:c0a8:101::1", "private"),
            ("100::1", "discard-only"),
            ("2001::1", "Teredo"),
            ("2001:2::1", "benchmarking"),
            ("2001:db8::1", "documentation"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("4000::1", "reserved"),
        ];
        for (ip, expected) in cases {
            assert_eq!(range(ip), Some(expected), "{ip}");
        }
    }

    #[test]
    fn lets_public_unicast_through() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "172.15.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(range(ip), None, "{ip}");
        }
    }

    #[test]
    fn knows_metadata_names() {
        assert!(is_metadata_name("metadata.google.internal"));
        assert!(is_metadata_name("instance-data"));
        assert!(!is_metadata_name("example.com"));
    }
}
