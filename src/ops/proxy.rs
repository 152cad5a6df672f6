//! Who the client really is, behind a trusted reverse proxy.
//!
//! Behind nginx, every connection comes from nginx, and the real client is named in a header
//! the proxy sets. Which header is the operator's choice, as with nginx's `real_ip_header`:
//! `--real-ip-header` names exactly one of `X-Forwarded-For` (the default), `X-Real-IP` or
//! `Forwarded` (RFC 7239), and no other header is ever looked at. Anyone can send any of
//! them, so the header is believed only when the immediate peer is a proxy named in
//! `--trust-proxy`. Believing a second header as a fallback is how a client-sent
//! `X-Forwarded-For` used to win behind a front that sets only `X-Real-IP`.
//!
//! The list headers (`X-Forwarded-For`, `Forwarded`) grow to the right: each proxy appends
//! the address it saw. So they are read from the right, the way nginx's
//! `real_ip_recursive on` does: skip entries that are themselves trusted proxies, and the
//! first one that is not is the client. Everything to its left was written by the client and
//! proves nothing. An entry that is not an address (`unknown`, an obfuscated name, garbage)
//! ends the walk: nothing to its left can be vouched for, so the last address read stands.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`, a bare address), or `unix`
/// for clients of a Unix-socket listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedProxy {
    /// An IP network.
    Net {
        /// The network address.
        addr: std::net::IpAddr,
        /// The prefix length.
        prefix: u8,
    },
    /// Unix-socket peers.
    Unix,
}

impl TrustedProxy {
    /// Whether `ip` is in this range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let TrustedProxy::Net { addr, prefix } = *self else {
            return false;
        };
        // An IPv4 client on an IPv6 socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for TrustedProxy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "unix" {
            return Ok(TrustedProxy::Unix);
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not an address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0 to {max}"))?,
        };
        // `::ffff:a.b.c.d` is how an IPv6 socket shows an IPv4 client, and `contains`
        // compares such clients as IPv4: keep the range as the IPv4 one it means, or it
        // would never match.
        if let std::net::IpAddr::V6(v6) = addr
            && prefix >= 96
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            return Ok(TrustedProxy::Net {
                addr: v4.into(),
                prefix: prefix - 96,
            });
        }
        Ok(TrustedProxy::Net { addr, prefix })
    }
}

/// Which request header names the real client behind a trusted proxy (`--real-ip-header`),
/// as nginx's `real_ip_header`. Only this one header is ever believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RealIpHeader {
    /// `X-Forwarded-For`: a list; each proxy appends the address it saw.
    #[default]
    XForwardedFor,
    /// `X-Real-IP`: one address, set by the proxy.
    XRealIp,
    /// `Forwarded` (RFC 7239): a list of elements with a `for=` parameter.
    Forwarded,
}

impl RealIpHeader {
    /// The header's name.
    pub fn name(self) -> &'static str {
        match self {
            RealIpHeader::XForwardedFor => "X-Forwarded-For",
            RealIpHeader::XRealIp => "X-Real-IP",
            RealIpHeader::Forwarded => "Forwarded",
        }
    }
}

impl std::str::FromStr for RealIpHeader {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            RealIpHeader::XForwardedFor,
            RealIpHeader::XRealIp,
            RealIpHeader::Forwarded,
        ]
        .into_iter()
        .find(|h| h.name().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| format!("'{s}': expected X-Forwarded-For, X-Real-IP or Forwarded"))
    }
}

impl std::fmt::Display for RealIpHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the immediate peer (`None`: a Unix-socket client) is a trusted proxy.
pub fn is_trusted(peer: Option<SocketAddr>, trusted: &[TrustedProxy]) -> bool {
    match peer {
        None => trusted.contains(&TrustedProxy::Unix),
        Some(addr) => trusted.iter().any(|t| t.contains(addr.ip())),
    }
}

/// The client's address for the log and the metrics: from the configured header if the
/// peer is trusted, otherwise the peer itself. `values` are the values of every line of the
/// `header` field, in order. `None` means a Unix-socket peer with no usable header.
pub fn client_addr<'v>(
    peer: Option<SocketAddr>,
    header: RealIpHeader,
    values: impl IntoIterator<Item = &'v [u8]>,
    trusted: &[TrustedProxy],
) -> Option<IpAddr> {
    let direct = peer.map(|p| p.ip());
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return direct;
    }
    let is_proxy = |ip: &IpAddr| trusted.iter().any(|t| t.contains(*ip));
    // Every line of a list field, in order, forms one list (RFC 9110 section 5.3).
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for value in values {
        match header {
            RealIpHeader::XRealIp => {
                // One address, not a list: the last line a trusted proxy set wins.
                hops = vec![parse_ip(value.trim_ascii())];
            }
            RealIpHeader::XForwardedFor => hops.extend(
                value
                    .split(|&b| b == b',')
                    .map(|item| parse_ip(item.trim_ascii())),
            ),
            RealIpHeader::Forwarded => hops.extend(split_list(value).map(forwarded_for)),
        }
    }
    let mut client = direct;
    for hop in hops.iter().rev() {
        let Some(ip) = hop else {
            break; // not an address: the chain of trust ends here
        };
        client = Some(*ip);
        if !is_proxy(ip) {
            break;
        }
    }
    client
}

fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// The elements of a comma-separated list, commas inside quoted strings left alone.
fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut in_quotes = false;
    let mut escaped = false;
    value.split(move |&b| {
        if escaped {
            escaped = false;
        } else if in_quotes && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            in_quotes = !in_quotes;
        }
        b == b',' && !in_quotes
    })
}

/// The address in one `Forwarded` element's `for=` parameter (RFC 7239 sections 4 and 6):
/// `for=192.0.2.60`, `for="192.0.2.60:4711"`, `for="[2001:db8::1]"` or
/// `for="[2001:db8::1]:4711"`. `None` for `unknown`, an obfuscated name, or no `for=`.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let value = element.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = (pair[..eq].trim_ascii(), pair[eq + 1..].trim_ascii());
        name.eq_ignore_ascii_case(b"for").then_some(value)
    })?;
    let node = match value {
        [b'"', inner @ .., b'"'] => inner,
        bare => bare,
    };
    if let Some(rest) = node.strip_prefix(b"[") {
        // An IPv6 address is always in brackets, with or without a port after them.
        let end = rest.iter().position(|&b| b == b']')?;
        let port = &rest[end + 1..];
        if !(port.is_empty() || is_port(port)) {
            return None;
        }
        return std::str::from_utf8(&rest[..end])
            .ok()?
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    let host = match node.iter().position(|&b| b == b':') {
        Some(colon) if is_port(&node[colon..]) => &node[..colon],
        Some(_) => return None,
        None => node,
    };
    match parse_ip(host)? {
        v4 @ IpAddr::V4(_) => Some(v4),
        IpAddr::V6(_) => None, // an IPv6 address outside brackets is not a valid node
    }
}

/// `:1*5DIGIT`, as a node's port (an obfuscated port `:_x` is not an address's port).
fn is_port(text: &[u8]) -> bool {
    matches!(text, [b':', digits @ ..] if (1..=5).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RealIpHeader::*;

    fn client(trusted: &str, header: RealIpHeader, values: &[&str]) -> String {
        let trusted: Vec<TrustedProxy> = trusted
            .split(',')
            .filter(|t| !t.is_empty())
            .filter_map(|t| t.parse().ok())
            .collect();
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 5000)));
        let values = values.iter().map(|v| v.as_bytes());
        client_addr(peer, header, values, &trusted).map_or("-".to_string(), |ip| ip.to_string())
    }

    /// The client-address table: trusted ranges, which header, its lines, and the answer.
    /// The peer is always 127.0.0.1.
    #[test]
    fn client_address_table() {
        let cases: &[(&str, RealIpHeader, &[&str], &str)] = &[
            // No trusted proxies, or an untrusted peer: headers are ignored.
            ("", XForwardedFor, &["6.6.6.6"], "127.0.0.1"),
            ("10.0.0.0/8", XForwardedFor, &["6.6.6.6"], "127.0.0.1"),
            ("10.0.0.0/8", XRealIp, &["6.6.6.6"], "127.0.0.1"),
            // The right-most untrusted entry is the client; the rest is claims.
            ("127.0.0.1", XForwardedFor, &["6.6.6.6, 1.2.3.4"], "1.2.3.4"),
            (
                "127.0.0.0/8,10.0.0.0/8",
                XForwardedFor,
                &["6.6.6.6, 9.9.9.9, 10.0.0.5"],
                "9.9.9.9",
            ),
            // Several lines are one list.
            (
                "127.0.0.1",
                XForwardedFor,
                &["6.6.6.6", "2.2.2.2"],
                "2.2.2.2",
            ),
            // Garbage ends the walk; an address to its right still counts.
            (
                "127.0.0.1",
                XForwardedFor,
                &["1.1.1.1, junk, 3.3.3.3"],
                "3.3.3.3",
            ),
            (
                "127.0.0.1,10.0.0.0/8",
                XForwardedFor,
                &["1.1.1.1, junk, 10.0.0.1"],
                "10.0.0.1",
            ),
            ("127.0.0.1", XForwardedFor, &["junk"], "127.0.0.1"),
            // Every hop a proxy: the left-most is as far as we can see.
            (
                "127.0.0.1,10.0.0.0/8",
                XForwardedFor,
                &["10.0.0.1, 10.0.0.2"],
                "10.0.0.1",
            ),
            ("127.0.0.1", XForwardedFor, &["2001:db8::1"], "2001:db8::1"),
            ("127.0.0.1", XForwardedFor, &[], "127.0.0.1"),
            // X-Real-IP: one address.
            ("127.0.0.1", XRealIp, &[" 5.5.5.5 "], "5.5.5.5"),
            ("127.0.0.1", XRealIp, &["5.5.5.5, 6.6.6.6"], "127.0.0.1"),
            ("127.0.0.1", XRealIp, &[], "127.0.0.1"),
            // Forwarded (RFC 7239).
            (
                "127.0.0.1",
                Forwarded,
                &["for=192.0.2.60;proto=http;by=203.0.113.43"],
                "192.0.2.60",
            ),
            (
                "127.0.0.1",
                Forwarded,
                &["For=\"[2001:db8:cafe::17]:4711\""],
                "2001:db8:cafe::17",
            ),
            (
                "127.0.0.1",
                Forwarded,
                &["for=\"[2001:db8::1]\""],
                "2001:db8::1",
            ),
            (
                "127.0.0.1",
                Forwarded,
                &["for=\"192.0.2.43:47011\""],
                "192.0.2.43",
            ),
            (
                "127.0.0.1",
                Forwarded,
                &["for=6.6.6.6, for=7.7.7.7"],
                "7.7.7.7",
            ),
            (
                "127.0.0.1",
                Forwarded,
                &["for=6.6.6.6", "proto=https;for=7.7.7.7"],
                "7.7.7.7",
            ),
            (
                "127.0.0.1,10.0.0.0/8",
                Forwarded,
                &["for=6.6.6.6, for=10.1.1.1"],
                "6.6.6.6",
            ),
            // A comma inside quotes does not split an element.
            (
                "127.0.0.1",
                Forwarded,
                &["for=\"a,b\";by=x, for=8.8.8.8"],
                "8.8.8.8",
            ),
            // Not addresses: unknown, obfuscated, unbracketed IPv6, a bad port, no for=.
            ("127.0.0.1", Forwarded, &["for=unknown"], "127.0.0.1"),
            ("127.0.0.1", Forwarded, &["for=_hidden"], "127.0.0.1"),
            (
                "127.0.0.1",
                Forwarded,
                &["for=\"2001:db8::1\""],
                "127.0.0.1",
            ),
            ("127.0.0.1", Forwarded, &["for=\"1.2.3.4:_p\""], "127.0.0.1"),
            ("127.0.0.1", Forwarded, &["proto=http"], "127.0.0.1"),
            // Only the configured header is read: these callers pass its lines only, so
            // an X-Forwarded-For value handed in as Forwarded means nothing.
            ("127.0.0.1", Forwarded, &["6.6.6.6"], "127.0.0.1"),
        ];
        for (trusted, header, values, want) in cases {
            assert_eq!(
                client(trusted, *header, values),
                *want,
                "{trusted:?} {header:?} {values:?}"
            );
        }
    }

    /// A range written as IPv4-mapped IPv6 means the IPv4 range, and matches IPv4 peers
    /// however their socket shows them.
    #[test]
    fn mapped_ranges_match_ipv4_peers() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("address");
        for (range, inside, outside) in [
            ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.2"),
            ("::ffff:127.0.0.1/128", "::ffff:127.0.0.1", "::1"),
            ("::ffff:10.0.0.0/104", "10.200.0.1", "11.0.0.1"),
        ] {
            let range: TrustedProxy = range.parse().expect("range");
            assert!(range.contains(ip(inside)), "{range:?} {inside}");
            assert!(!range.contains(ip(outside)), "{range:?} {outside}");
        }
        assert_eq!(
            "::ffff:10.0.0.0/104".parse(),
            Ok(TrustedProxy::Net {
                addr: ip("10.0.0.0"),
                prefix: 8
            })
        );
    }

    #[test]
    fn unix_peers() {
        let unix = [TrustedProxy::Unix];
        let xff = [&b"8.8.4.4"[..]];
        assert_eq!(client_addr(None, XForwardedFor, xff, &[]), None);
        assert_eq!(
            client_addr(None, XForwardedFor, xff, &unix),
            Some(IpAddr::from([8, 8, 4, 4]))
        );
    }
}
