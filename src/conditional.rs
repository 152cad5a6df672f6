//! Validators and conditional requests (RFC 9110 sections 8.8 and 13).
//!
//! Each file gets a strong `ETag` built from what identifies this version of it: inode,
//! size and modification time in nanoseconds. Any write changes at least one of them. The
//! client sends the tag back in `If-None-Match` (and we answer 304 if nothing changed), or
//! the `Last-Modified` date in `If-Modified-Since`, or either one in `If-Range` to make a
//! Range request conditional.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity tag, quotes included: `"1a2b-400-17f3c2d1e0a"`.
    pub etag: String,
    /// The modification time, truncated to whole seconds as HTTP dates are.
    pub modified: SystemTime,
}

impl Validators {
    /// The validators of a file, from its metadata.
    pub fn of(meta: &Metadata) -> Self {
        let nanos = (meta.mtime() as i128) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let etag = format!("\"{:x}-{:x}-{:x}\"", meta.ino(), meta.size(), nanos.max(0));
        let secs = u64::try_from(meta.mtime()).unwrap_or(0);
        Validators {
            etag,
            modified: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }

    /// The `Last-Modified` value.
    pub fn last_modified(&self) -> String {
        httpdate::fmt_http_date(self.modified)
    }
}

/// The outcome of the conditional headers of a GET or HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Send the representation.
    Send,
    /// 304 Not Modified: the client's copy is current.
    NotModified,
}

/// Evaluates `If-None-Match` and `If-Modified-Since` (RFC 9110 section 13.2.2, steps 3-4).
/// If-None-Match wins: when it is present, If-Modified-Since is not looked at.
pub fn evaluate(
    v: &Validators,
    if_none_match: Option<&[u8]>,
    if_modified_since: Option<&[u8]>,
) -> Condition {
    if let Some(list) = if_none_match {
        // Weak comparison (section 8.8.3.2): `W/"x"` matches `"x"`.
        return if list_matches(list, &v.etag, false) {
            Condition::NotModified
        } else {
            Condition::Send
        };
    }
    if let Some(since) = if_modified_since.and_then(parse_date) {
        if v.modified <= since {
            return Condition::NotModified;
        }
    }
    Condition::Send
}

/// Whether a Range may be honoured under `If-Range` (section 13.1.5): only if the validator
/// it carries still matches, by strong comparison. A date must equal Last-Modified exactly.
pub fn if_range_allows(v: &Validators, if_range: Option<&[u8]>) -> bool {
    let Some(value) = if_range.map(<[u8]>::trim_ascii) else {
        return true;
    };
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return list_matches(value, &v.etag, true) && !value.starts_with(b"W/");
    }
    parse_date(value) == Some(v.modified)
}

/// Whether `etag` is in the comma-separated list (or the list is `*`).
fn list_matches(list: &[u8], etag: &str, strong: bool) -> bool {
    let list = list.trim_ascii();
    if list == b"*" {
        return true;
    }
    list.split(|&b| b == b',').any(|item| {
        let item = item.trim_ascii();
        let (weak, tag) = match item.strip_prefix(b"W/") {
            Some(tag) => (true, tag),
            None => (false, item),
        };
        tag == etag.as_bytes() && !(strong && weak)
    })
}

fn parse_date(value: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(value).ok()?;
    httpdate::parse_http_date(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Validators {
        Validators {
            etag: "\"abc-10-5\"".to_string(),
            modified: UNIX_EPOCH + Duration::from_secs(784_111_777),
        }
    }

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const OLDER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const NEWER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    #[test]
    fn conditional_table() {
        use Condition::*;
        let cases: &[(Option<&str>, Option<&str>, Condition)] = &[
            (None, None, Send),
            (Some("\"abc-10-5\""), None, NotModified),
            (Some("W/\"abc-10-5\""), None, NotModified),
            (Some("\"other\""), None, Send),
            (Some("\"x\", \"abc-10-5\""), None, NotModified),
            (Some("\"x\",W/\"y\""), None, Send),
            (Some("*"), None, NotModified),
            (Some("abc-10-5"), None, Send),
            (None, Some(DATE), NotModified),
            (None, Some(NEWER), NotModified),
            (None, Some(OLDER), Send),
            (None, Some("not a date"), Send),
            // If-None-Match wins over If-Modified-Since, both ways.
            (Some("\"other\""), Some(NEWER), Send),
            (Some("\"abc-10-5\""), Some(OLDER), NotModified),
        ];
        for (inm, ims, want) in cases {
            let got = evaluate(&v(), inm.map(str::as_bytes), ims.map(str::as_bytes));
            assert_eq!(
                got, *want,
                "If-None-Match {inm:?}, If-Modified-Since {ims:?}"
            );
        }
    }

    #[test]
    fn if_range_table() {
        let cases: &[(Option<&str>, bool)] = &[
            (None, true),
            (Some("\"abc-10-5\""), true),
            (Some("W/\"abc-10-5\""), false),
            (Some("\"other\""), false),
            (Some(DATE), true),
            (Some(OLDER), false),
            (Some(NEWER), false),
            (Some("garbage"), false),
        ];
        for (if_range, want) in cases {
            assert_eq!(
                if_range_allows(&v(), if_range.map(str::as_bytes)),
                *want,
                "{if_range:?}"
            );
        }
    }
}
