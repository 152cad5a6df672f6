//! The PROXY protocol header (HAProxy's proxy-protocol.txt), versions 1 and 2.
//!
//! A TCP proxy (HAProxy with `send-proxy-v2`, nginx's `proxy_protocol on` in its stream
//! module, a cloud load balancer) cannot add an `X-Forwarded-For` header: it does not speak
//! HTTP. Instead it sends one header at the very start of the connection, before any byte of
//! the client's, that names the client's address. With `--proxy-protocol` every connection
//! must begin with one; the connection reads it in its own state, before Reading (see
//! [`crate::connection`]), and from then on the address in it is the client's.
//!
//! Two encodings, told apart by their first bytes (section 2 of the spec):
//!
//! - **v1**, text: `PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n`, at most 107 bytes.
//!   `PROXY UNKNOWN …\r\n` says the proxy does not know the client: the connection's own
//!   addresses stand.
//! - **v2**, binary: a 12-byte signature, a version/command byte, a family byte, a 2-byte
//!   length, the addresses, then TLVs (type-length-value extensions, which we check for
//!   framing and otherwise skip). The `LOCAL` command is the proxy talking for itself
//!   (HAProxy's health checks with `check-send-proxy`): again the connection's addresses
//!   stand.
//!
//! This module only parses: it is handed the bytes received so far and says "complete, this
//! long", "not yet", or what is wrong. The spec is strict about the last case, and so are we:
//! a receiver must not guess, so anything malformed closes the connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature (section 2.2): chosen so that it cannot start an HTTP request or a v1
/// header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v2 fixed part: the signature, version/command, family, and the length.
const V2_FIXED: usize = 16;
/// The v1 prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header, CRLF included (section 2.1).
const V1_MAX: usize = 107;

/// Who the client is, according to the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The header names no client (`UNKNOWN`, v2 `LOCAL` or `UNSPEC`): keep the
    /// connection's own peer address.
    Connection,
    /// The client's address and port.
    Addr(SocketAddr),
    /// The client came to the proxy over a Unix socket (v2 `AF_UNIX`).
    Unix,
}

/// What the bytes received so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes; the client's own bytes follow it.
    Complete {
        /// The client, as the header names it.
        source: Source,
        /// The header's length, to be consumed from the input.
        len: usize,
    },
    /// A valid beginning: read more.
    Partial,
}

/// Why a header was refused. Each one closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// The connection does not start with either signature (a client talking HTTP straight
    /// to a port that expects a proxy, say).
    NotProxy,
    /// A v1 line longer than 107 bytes.
    V1TooLong,
    /// A v1 line that does not follow the grammar; the text says which part.
    V1Malformed(&'static str),
    /// A v2 version other than 2, or a command other than LOCAL and PROXY.
    V2Version,
    /// A v2 address family or transport we do not serve (datagrams, unknown values).
    V2Family(u8),
    /// A v2 length too short for its addresses, or TLVs that overrun it.
    V2Length,
    /// A header longer than `--max-header-bytes`.
    TooLong,
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHeaderError::NotProxy => f.write_str("no PROXY header signature"),
            ProxyHeaderError::V1TooLong => f.write_str("PROXY v1 line over 107 bytes"),
            ProxyHeaderError::V1Malformed(what) => write!(f, "malformed PROXY v1 line: {what}"),
            ProxyHeaderError::V2Version => f.write_str("PROXY v2 version or command unknown"),
            ProxyHeaderError::V2Family(fam) => {
                write!(f, "PROXY v2 family/transport 0x{fam:02x} not served")
            }
            ProxyHeaderError::V2Length => f.write_str("PROXY v2 length does not fit its content"),
            ProxyHeaderError::TooLong => f.write_str("PROXY header over --max-header-bytes"),
        }
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Parses the PROXY header at the start of `buf`, the bytes received so far. `max` bounds a
/// v2 header with its TLVs (`--max-header-bytes`); v1 has its own bound of 107 bytes.
pub fn parse(buf: &[u8], max: usize) -> Result<Parsed, ProxyHeaderError> {
    // Decide the version as soon as the bytes allow, so that a client that sends `GET`
    // to this port is turned away on its first bytes, not after a timeout.
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if buf.is_empty() {
        Ok(Parsed::Partial)
    } else if starts(V1_PREFIX) {
        parse_v1(buf)
    } else if starts(&V2_SIGNATURE) {
        parse_v2(buf, max)
    } else {
        Err(ProxyHeaderError::NotProxy)
    }
}

/// v1 (section 2.1): `PROXY <TCP4|TCP6|UNKNOWN> <src> <dst> <sport> <dport>\r\n`, fields
/// separated by exactly one space.
fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    use ProxyHeaderError::V1Malformed;
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError::V1TooLong)
        } else {
            Ok(Parsed::Partial)
        };
    };
    if lf < V1_PREFIX.len() || buf[lf - 1] != b'\r' {
        return Err(V1Malformed("line does not end in CRLF"));
    }
    let len = lf + 1;
    let line = &buf[V1_PREFIX.len()..lf - 1];
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        // The rest of the line is to be ignored (section 2.1), whatever its bytes.
        return Ok(Parsed::Complete {
            source: Source::Connection,
            len,
        });
    }
    let line = std::str::from_utf8(line).map_err(|_| V1Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    let want_v4 = match family {
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err(V1Malformed("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut next = |what| {
        fields
            .next()
            .filter(|f| !f.is_empty())
            .ok_or(V1Malformed(what))
    };
    let src: IpAddr = next("no source address")?
        .parse()
        .map_err(|_| V1Malformed("source address"))?;
    let dst: IpAddr = next("no destination address")?
        .parse()
        .map_err(|_| V1Malformed("destination address"))?;
    let sport = port(next("no source port")?)?;
    port(next("no destination port")?)?;
    if fields.next().is_some() {
        return Err(V1Malformed("fields after the destination port"));
    }
    if src.is_ipv4() != want_v4 || dst.is_ipv4() != want_v4 {
        return Err(V1Malformed("address does not match the protocol"));
    }
    Ok(Parsed::Complete {
        source: Source::Addr(SocketAddr::new(src, sport)),
        len,
    })
}

/// A v1 port: decimal, 0 to 65535, no sign and no leading zero.
fn port(s: &str) -> Result<u16, ProxyHeaderError> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyHeaderError::V1Malformed("port"));
    }
    s.parse()
        .map_err(|_| ProxyHeaderError::V1Malformed("port over 65535"))
}

/// v2 (section 2.2): the signature, then `\x2N` (version 2, command N), the family and
/// transport, a big-endian length, and that many bytes of addresses and TLVs.
fn parse_v2(buf: &[u8], max: usize) -> Result<Parsed, ProxyHeaderError> {
    if buf.len() < V2_FIXED {
        return Ok(Parsed::Partial);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 || command > 1 {
        return Err(ProxyHeaderError::V2Version);
    }
    let family = buf[13];
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > max {
        return Err(ProxyHeaderError::TooLong);
    }
    if buf.len() < len {
        return Ok(Parsed::Partial);
    }
    // LOCAL: the proxy speaks for itself (a health check). The receiver must discard the
    // block, family included (section 2.2), so it is not read, whatever its size.
    if command == 0 {
        return Ok(Parsed::Complete {
            source: Source::Connection,
            len,
        });
    }
    let rest = &buf[V2_FIXED..len];
    // The address block's size for the family; TLVs fill the rest (section 2.2).
    let (source, addresses) = match family {
        0x00 => (Source::Connection, 0), // AF_UNSPEC: the proxy does not know
        0x11 => {
            let a = rest.get(..12).ok_or(ProxyHeaderError::V2Length)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            (Source::Addr(SocketAddr::new(ip.into(), port)), 12)
        }
        0x21 => {
            let a = rest.get(..36).ok_or(ProxyHeaderError::V2Length)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            (
                Source::Addr(SocketAddr::new(Ipv6Addr::from(octets).into(), port)),
                36,
            )
        }
        0x31 => {
            rest.get(..216).ok_or(ProxyHeaderError::V2Length)?;
            (Source::Unix, 216)
        }
        other => return Err(ProxyHeaderError::V2Family(other)),
    };
    // UNSPEC carries addresses of a protocol we do not know, of a size we cannot know, so
    // the block is skipped whole, as the spec asks ("the receiver should ignore address
    // information"): only where TLVs are known to start can they be checked.
    if family != 0x00 {
        check_tlvs(&rest[addresses..])?;
    }
    Ok(Parsed::Complete { source, len })
}

/// TLVs (section 2.2.7): each one a type byte, a big-endian length and that many bytes. None
/// changes what we do, but each must fit exactly: a header whose TLVs overrun its length is
/// not one we can trust to end where it says.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyHeaderError> {
    while !tlvs.is_empty() {
        let head = tlvs.get(..3).ok_or(ProxyHeaderError::V2Length)?;
        let len = 3 + usize::from(u16::from_be_bytes([head[1], head[2]]));
        tlvs = tlvs.get(len..).ok_or(ProxyHeaderError::V2Length)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v4_block() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 198, 51, 100, 1];
        b.extend_from_slice(&56324u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    fn complete(source: Source, len: usize) -> Result<Parsed, ProxyHeaderError> {
        Ok(Parsed::Complete { source, len })
    }

    fn addr(s: &str) -> Source {
        Source::Addr(s.parse().unwrap())
    }

    /// After `UNKNOWN` the line is ignored, bytes that are not text included.
    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN \xff\xfe\x80\r\nGET"),
            complete(Source::Connection, 19)
        );
    }

    #[test]
    fn v1_table() {
        use ProxyHeaderError::*;
        let line = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
        let cases: &[(&str, Result<Parsed, ProxyHeaderError>)] = &[
            (line, complete(addr("192.0.2.7:56324"), line.len())),
            (
                "PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\nGET",
                complete(addr("[2001:db8::7]:1"), 44),
            ),
            ("PROXY UNKNOWN\r\n", complete(Source::Connection, 15)),
            (
                "PROXY UNKNOWNX\r\n",
                Err(V1Malformed("protocol is not TCP4, TCP6 or UNKNOWN")),
            ),
            (
                "PROXY UNKNOWN anything goes here\r\n",
                complete(Source::Connection, 34),
            ),
            ("", Ok(Parsed::Partial)),
            ("PRO", Ok(Parsed::Partial)),
            ("PROXY TCP4 192.0.2.7 198.51", Ok(Parsed::Partial)),
            ("GET / HTTP/1.1\r\n", Err(NotProxy)),
            ("proxy TCP4", Err(NotProxy)),
            (
                "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\n",
                Err(V1Malformed("line does not end in CRLF")),
            ),
            (
                "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
                Err(V1Malformed("protocol is not TCP4, TCP6 or UNKNOWN")),
            ),
            (
                "PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
                Err(V1Malformed("no destination address")),
            ),
            (
                "PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
                Err(V1Malformed("no destination port")),
            ),
            (
                "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
                Err(V1Malformed("fields after the destination port")),
            ),
            (
                "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
                Err(V1Malformed("port")),
            ),
            (
                "PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
                Err(V1Malformed("port")),
            ),
            (
                "PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
                Err(V1Malformed("port over 65535")),
            ),
            (
                "PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n",
                Err(V1Malformed("source address")),
            ),
            (
                "PROXY TCP4 ::1 ::1 1 2\r\n",
                Err(V1Malformed("address does not match the protocol")),
            ),
            (
                "PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
                Err(V1Malformed("address does not match the protocol")),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input.as_bytes(), MAX), *want, "{input:?}");
        }
        assert_eq!(parse(b"PROXY \xff\r\n", MAX), Err(V1Malformed("not ASCII")));
        let long = format!("PROXY UNKNOWN {}", "x".repeat(100));
        assert_eq!(parse(long.as_bytes(), MAX), Err(V1TooLong));
        // 107 bytes with the CRLF is the longest allowed.
        let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(107 - 16));
        assert_eq!(longest.len(), 107);
        assert_eq!(
            parse(longest.as_bytes(), MAX),
            complete(Source::Connection, 107)
        );
    }

    #[test]
    fn v2_table() {
        use ProxyHeaderError::*;
        let v4 = v4_block();
        let mut v6 = vec![0x20, 0x01, 0x0d, 0xb8];
        v6.resize(15, 0);
        v6.push(7);
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&8080u16.to_be_bytes());
        v6.extend_from_slice(&80u16.to_be_bytes());
        let mut with_tlvs = v4.clone();
        with_tlvs.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]); // NOOP, 3 bytes
        with_tlvs.extend_from_slice(&[0x05, 0, 0]); // UNIQUE_ID, empty
        let mut overrun = v4.clone();
        overrun.extend_from_slice(&[0x04, 0, 9, 0]);
        let cases: Vec<(Vec<u8>, Result<Parsed, ProxyHeaderError>)> = vec![
            (v2(1, 0x11, &v4), complete(addr("192.0.2.7:56324"), 28)),
            (v2(1, 0x21, &v6), complete(addr("[2001:db8::7]:8080"), 52)),
            (v2(1, 0x31, &[0; 216]), complete(Source::Unix, 232)),
            (v2(1, 0x00, &[]), complete(Source::Connection, 16)),
            (v2(0, 0x00, &[]), complete(Source::Connection, 16)),
            // UNSPEC with a block that is not TLVs (an unknown protocol's addresses):
            // skipped whole, the connection's own address kept.
            (
                v2(1, 0x00, &[0xde, 0xad, 0xbe, 0xef, 0x01]),
                complete(Source::Connection, 21),
            ),
            // LOCAL with addresses: they are the proxy's own, ignored.
            (v2(0, 0x11, &v4), complete(Source::Connection, 28)),
            // ... and not read at all: too short for its family, or a family we do not
            // know, LOCAL is still accepted (section 2.2: the block is discarded).
            (v2(0, 0x11, &[]), complete(Source::Connection, 16)),
            (v2(0, 0x21, &[0; 12]), complete(Source::Connection, 28)),
            (v2(0, 0x99, &[1, 2]), complete(Source::Connection, 18)),
            (
                v2(1, 0x11, &with_tlvs),
                complete(addr("192.0.2.7:56324"), 28 + 9),
            ),
            (v2(1, 0x11, &overrun), Err(V2Length)),
            (v2(1, 0x11, &v4[..11]), Err(V2Length)),
            (v2(1, 0x12, &v4), Err(V2Family(0x12))), // UDP
            (v2(1, 0x41, &v4), Err(V2Family(0x41))),
            (v2(2, 0x11, &v4), Err(V2Version)),
            (v2(1, 0x11, &v4)[..20].to_vec(), Ok(Parsed::Partial)),
            (V2_SIGNATURE[..5].to_vec(), Ok(Parsed::Partial)),
            (b"\r\n\r\nGET".to_vec(), Err(NotProxy)),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input, MAX), want, "{input:?}");
        }
        let mut version1 = v2(1, 0x11, &v4);
        version1[12] = 0x11;
        assert_eq!(parse(&version1, MAX), Err(V2Version));
        let big = v2(1, 0x11, &[0; 300]);
        assert_eq!(parse(&big, 200), Err(TooLong));
    }

    /// The header may arrive a byte at a time: every prefix of a complete header is
    /// `Partial` (never refused early), every prefix of a refused one is `Partial` or refused
    /// the same way, and bytes after a complete header change nothing. Checked on mutations
    /// of valid headers of every kind.
    #[test]
    fn prefixes_agree_with_the_whole() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut tlvs = v4_block();
        tlvs.extend_from_slice(&[0x04, 0, 2, 0, 0]);
        let bases: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(1, 0x11, &v4_block()),
            v2(1, 0x11, &tlvs),
            v2(0, 0x00, &[]),
            v2(1, 0x31, &[0; 216]),
        ];
        for round in 0..20_000 {
            let mut input = bases[round % bases.len()].clone();
            // A few random byte changes (or none), then the client's bytes.
            for _ in 0..next() % 3 {
                let at = (next() as usize) % input.len();
                input[at] = next() as u8;
            }
            input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let whole = parse(&input, MAX);
            let end = match whole {
                Ok(Parsed::Complete { len, .. }) => len,
                _ => input.len(),
            };
            for k in 0..end {
                let part = parse(&input[..k], MAX);
                match (&whole, &part) {
                    (_, Ok(Parsed::Partial)) => {}
                    (Err(e), Err(p)) if e == p => {}
                    _ => panic!("{input:?}: prefix {k} gives {part:?}, the whole {whole:?}"),
                }
            }
            if let Ok(Parsed::Complete { len, .. }) = whole {
                assert_eq!(parse(&input[..len], MAX), whole, "{input:?}");
            }
        }
    }

    #[test]
    fn the_clients_bytes_after_the_header_are_not_part_of_it() {
        let mut input = v2(1, 0x11, &v4_block());
        input.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(parse(&input, MAX), complete(addr("192.0.2.7:56324"), 28));
    }
}
