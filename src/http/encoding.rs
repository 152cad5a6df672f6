//! Choosing a precompressed sidecar from `Accept-Encoding` (RFC 9110 section 12.5.3).
//!
//! If `style.css.br` or `style.css.gz` sits next to `style.css`, a client that accepts that
//! coding gets the sidecar's bytes with `Content-Encoding`, and the server spends no CPU
//! compressing. q-values are honoured; `q=0` means "not this one"; on a tie, brotli wins
//! (it is smaller).

/// A content coding we have sidecars for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `.br` sidecar, `Content-Encoding: br`.
    Brotli,
    /// `.gz` sidecar, `Content-Encoding: gzip`.
    Gzip,
}

impl Coding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    /// The sidecar file's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }
}

/// The codings the client accepts, best first (q > 0 only). An absent header accepts none
/// of them: "identity" is what a client that says nothing gets.
pub fn preferred(accept_encoding: Option<&[u8]>) -> Vec<Coding> {
    let Some(header) = accept_encoding else {
        return Vec::new();
    };
    let (mut br, mut gzip, mut star) = (None, None, None);
    for item in header.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let name = parts.next().unwrap_or_default().trim_ascii();
        let q = parts
            .find_map(|p| {
                let p = p.trim_ascii();
                let value = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q="))?;
                parse_q(value)
            })
            .unwrap_or(1000);
        if name.eq_ignore_ascii_case(b"br") {
            br = Some(q);
        } else if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
            gzip = Some(q);
        } else if name == b"*" {
            star = Some(q);
        }
    }
    // `*` covers the codings not named (section 12.5.3).
    let br = br.or(star).unwrap_or(0);
    let gzip = gzip.or(star).unwrap_or(0);
    let mut out = Vec::with_capacity(2);
    match (br, gzip) {
        (0, 0) => {}
        (b, g) if b >= g => {
            out.push(Coding::Brotli);
            if g > 0 {
                out.push(Coding::Gzip);
            }
        }
        (b, _) => {
            out.push(Coding::Gzip);
            if b > 0 {
                out.push(Coding::Brotli);
            }
        }
    }
    out
}

/// A qvalue in thousandths: `0`, `0.5`, `1.000`. Invalid values are ignored (taken as 1).
fn parse_q(value: &[u8]) -> Option<u16> {
    let value = value.trim_ascii();
    let (int, frac) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &b""[..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Coding::*;
    use super::*;

    #[test]
    fn negotiation_table() {
        let cases: &[(Option<&str>, &[Coding])] = &[
            (None, &[]),
            (Some(""), &[]),
            (Some("identity"), &[]),
            (Some("gzip"), &[Gzip]),
            (Some("br"), &[Brotli]),
            (Some("gzip, deflate, br"), &[Brotli, Gzip]),
            (Some("br;q=0.5, gzip;q=0.5"), &[Brotli, Gzip]),
            (Some("br;q=0.4, gzip;q=0.5"), &[Gzip, Brotli]),
            (Some("br;q=0, gzip"), &[Gzip]),
            (Some("gzip;q=0"), &[]),
            (Some("*"), &[Brotli, Gzip]),
            (Some("*;q=0.1, gzip;q=0.9"), &[Gzip, Brotli]),
            (Some("*, br;q=0"), &[Gzip]),
            (Some("GZIP;Q=1.0"), &[Gzip]),
            (Some("x-gzip"), &[Gzip]),
            (Some("br;q=2"), &[Brotli]),
        ];
        for (header, want) in cases {
            assert_eq!(
                preferred(header.map(str::as_bytes)).as_slice(),
                *want,
                "{header:?}"
            );
        }
    }
}
