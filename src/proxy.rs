//! Who the client really is, behind a trusted reverse proxy.
//!
//! Behind nginx, every connection comes from nginx. The real client is in
//! `X-Forwarded-For` (each proxy appends the address it saw) or `X-Real-IP`. But anyone can
//! send those headers, so they are believed only when the immediate peer is a proxy named
//! in `--trust-proxy`, and in `X-Forwarded-For` only the entries that trusted proxies
//! appended count: the right-most entry that is not itself a trusted proxy is the client.
//! Everything to its left was written by the client and proves nothing.

use std::net::{IpAddr, SocketAddr};

use crate::config::TrustedProxy;
use crate::request::Request;

/// Whether the immediate peer (`None`: a Unix-socket client) is a trusted proxy.
pub fn is_trusted(peer: Option<SocketAddr>, trusted: &[TrustedProxy]) -> bool {
    match peer {
        None => trusted.contains(&TrustedProxy::Unix),
        Some(addr) => trusted.iter().any(|t| t.contains(addr.ip())),
    }
}

/// The client's address for the log: from the headers if the peer is trusted, otherwise
/// the peer itself. `None` means a Unix-socket peer with no usable header.
pub fn client_addr(
    peer: Option<SocketAddr>,
    req: &Request<'_>,
    trusted: &[TrustedProxy],
) -> Option<IpAddr> {
    let direct = peer.map(|p| p.ip());
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return direct;
    }
    // All X-Forwarded-For lines, in order, form one list (RFC 9110 section 5.3).
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in req.headers_named("x-forwarded-for") {
        for item in value.split(|&b| b == b',') {
            let Some(ip) = std::str::from_utf8(item.trim_ascii())
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                // An entry that is not an address: nothing left of it can be trusted.
                hops.clear();
                continue;
            };
            hops.push(ip);
        }
    }
    if let Some(client) = hops
        .iter()
        .rev()
        .find(|ip| !trusted.iter().any(|t| t.contains(**ip)))
    {
        return Some(*client);
    }
    if let Some(first) = hops.first() {
        return Some(*first); // every hop is a trusted proxy: the first is as far as we see
    }
    req.header("x-real-ip")
        .and_then(|v| std::str::from_utf8(v.trim_ascii()).ok())
        .and_then(|s| s.parse().ok())
        .or(direct)
}
