//! The `Range` header: which bytes of a file the client wants (RFC 9110 section 14).
//!
//! Only single ranges are honoured: `bytes=a-b`, `bytes=a-` and `bytes=-n`. A request for
//! several ranges gets the whole file with 200, which RFC 9110 allows (a server may ignore
//! Range), and which avoids `multipart/byteranges` and its well-known abuse: many
//! overlapping ranges that multiply the bytes sent.

/// What a `Range` header asks of a representation of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range: send the whole representation with 200. Covers a missing header,
    /// invalid syntax, another unit than bytes, and multiple ranges.
    Full,
    /// Send bytes `start..=end` with 206.
    Partial {
        /// First byte, inclusive.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// No byte of the representation is in the range: 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates a `Range` header value against a representation of `len` bytes.
pub fn evaluate(header: &[u8], len: u64) -> RangeRequest {
    let Some(spec) = strip_unit(header) else {
        return RangeRequest::Full;
    };
    if spec.contains(&b',') {
        return RangeRequest::Full; // several ranges: the whole file instead
    }
    let Some(dash) = spec.iter().position(|&b| b == b'-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (spec[..dash].trim_ascii(), spec[dash + 1..].trim_ascii());
    match (first.is_empty(), last.is_empty()) {
        // `-n`: the last n bytes.
        (true, false) => match parse_number(last) {
            Number::Invalid => RangeRequest::Full,
            Number::Value(0) => RangeRequest::Unsatisfiable,
            _ if len == 0 => RangeRequest::Full,
            Number::Value(n) => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            // A suffix longer than any file: the whole file.
            Number::Overflow => RangeRequest::Partial {
                start: 0,
                end: len - 1,
            },
        },
        // `a-` or `a-b`.
        (false, _) => {
            let start = match parse_number(first) {
                Number::Invalid => return RangeRequest::Full,
                Number::Overflow => return RangeRequest::Unsatisfiable,
                Number::Value(start) => start,
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match parse_number(last) {
                    Number::Invalid => return RangeRequest::Full,
                    Number::Overflow => u64::MAX,
                    Number::Value(end) => end,
                }
            };
            if end < start {
                return RangeRequest::Full; // `bytes=5-2` is invalid: ignore it
            }
            if start >= len {
                return RangeRequest::Unsatisfiable;
            }
            RangeRequest::Partial {
                start,
                end: end.min(len - 1),
            }
        }
        (true, true) => RangeRequest::Full,
    }
}

fn strip_unit(header: &[u8]) -> Option<&[u8]> {
    let header = header.trim_ascii();
    let (unit, spec) = header.split_at_checked(6)?;
    unit.eq_ignore_ascii_case(b"bytes=").then_some(spec)
}

enum Number {
    Value(u64),
    Overflow,
    Invalid,
}

fn parse_number(digits: &[u8]) -> Number {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Number::Invalid;
    }
    let mut n: u64 = 0;
    for &d in digits {
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
        {
            Some(next) => n = next,
            None => return Number::Overflow,
        }
    }
    Number::Value(n)
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;

    #[test]
    fn range_table() {
        let cases: &[(&str, u64, RangeRequest)] = &[
            ("bytes=0-0", 10, Partial { start: 0, end: 0 }),
            ("bytes=0-9", 10, Partial { start: 0, end: 9 }),
            ("bytes=9-9", 10, Partial { start: 9, end: 9 }),
            ("bytes=2-", 10, Partial { start: 2, end: 9 }),
            ("bytes=2-100", 10, Partial { start: 2, end: 9 }),
            ("bytes=-3", 10, Partial { start: 7, end: 9 }),
            ("bytes=-100", 10, Partial { start: 0, end: 9 }),
            ("BYTES=1-2", 10, Partial { start: 1, end: 2 }),
            ("bytes= 1 - 2 ", 10, Partial { start: 1, end: 2 }),
            ("bytes=10-", 10, Unsatisfiable),
            ("bytes=10-20", 10, Unsatisfiable),
            ("bytes=-0", 10, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=-5", 0, Full),
            ("bytes=5-2", 10, Full),
            ("bytes=0-1,3-4", 10, Full),
            ("bytes=", 10, Full),
            ("bytes=-", 10, Full),
            ("bytes=a-b", 10, Full),
            ("bytes=+1-2", 10, Full),
            ("items=0-1", 10, Full),
            ("", 10, Full),
            ("bytes=99999999999999999999999-", 10, Unsatisfiable),
            (
                "bytes=0-99999999999999999999999",
                10,
                Partial { start: 0, end: 9 },
            ),
            (
                "bytes=-99999999999999999999999",
                10,
                Partial { start: 0, end: 9 },
            ),
        ];
        for (header, len, want) in cases {
            assert_eq!(
                evaluate(header.as_bytes(), *len),
                *want,
                "{header} of {len}"
            );
        }
    }
}
