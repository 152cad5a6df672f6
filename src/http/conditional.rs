//! Validators and conditional requests (RFC 9110 sections 8.8 and 13).
//!
//! Each file gets a strong `ETag` built from what identifies this version of it: inode,
//! size and modification time in nanoseconds. Any write changes at least one of them. The
//! client sends the tag back in `If-None-Match` (and we answer 304 if nothing changed), or
//! the `Last-Modified` date in `If-Modified-Since`, or either one in `If-Range` to make a
//! Range request conditional. A client that wants this version and no other sends
//! `If-Match` or `If-Unmodified-Since`, and gets 412 once the file has changed.
//!
//! A file's modification time comes from the disk, and the disk may say anything: tmpfs and
//! btrfs keep times before 1970 and after the year 9999, which an HTTP date cannot express
//! (RFC 9110 section 5.6.7 has four-digit years). [`http_date`] is the only way a file time
//! becomes text here, and it returns `None` for such times instead of panicking. A file
//! dated before 1970, or after now (RFC 9110 section 8.8.2.1 forbids a Last-Modified later
//! than the Date), is served without `Last-Modified`, and dates never validate it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second an HTTP date can name: 9999-12-31 23:59:59 UTC.
const LAST_HTTP_DATE: i64 = 253_402_300_799;

/// The time `secs` seconds after the epoch, if an HTTP date can express it (1970 to 9999).
pub fn representable(secs: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs)
        .ok()
        .filter(|&s| s <= LAST_HTTP_DATE as u64)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Formats a file time (whole seconds since the epoch, negative before 1970) as an HTTP
/// date, or `None` if it is outside 1970 to 9999. Never panics, whatever the disk says.
pub fn http_date(secs: i64) -> Option<String> {
    representable(secs).map(httpdate::fmt_http_date)
}

/// The validators of one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The strong entity tag, quotes included: `"1a2b-400-17f3c2d1e0a"`.
    pub etag: String,
    /// The modification time, truncated to whole seconds as HTTP dates are; `None` when an
    /// HTTP date cannot express it (before 1970 or after 9999): then no date validates.
    pub modified: Option<SystemTime>,
}

impl Validators {
    /// The validators of a file, from its metadata.
    pub fn of(meta: &Metadata) -> Self {
        let nanos = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        // A time before 1970 keeps its sign, so that two such versions get different tags.
        let sign = if nanos < 0 { "-" } else { "" };
        let etag = format!(
            "\"{:x}-{:x}-{sign}{:x}\"",
            meta.ino(),
            meta.size(),
            nanos.unsigned_abs()
        );
        // A time after now by our clock is no date to send: RFC 9110 section 8.8.2.1 forbids
        // a Last-Modified later than the response's Date, and replacing it with now would
        // give a date that changes with every response (or cache entry) for one unchanged
        // file, so that If-Unmodified-Since and If-Range fail on it. Such a file goes
        // without, as one before 1970 does; its ETag still validates it.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mtime = meta.mtime();
        Validators {
            etag,
            modified: representable(mtime).filter(|_| mtime <= now),
        }
    }

    /// The `Last-Modified` value, if the modification time has one.
    pub fn last_modified(&self) -> Option<String> {
        self.modified.map(httpdate::fmt_http_date)
    }
}

/// The outcome of the conditional headers of a GET or HEAD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Send the representation.
    Send,
    /// 304 Not Modified: the client's copy is current.
    NotModified,
    /// 412 Precondition Failed: the client asked for this version only (`If-Match`,
    /// `If-Unmodified-Since`), and the file is another one now.
    PreconditionFailed,
}

/// The conditional headers of a request, as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Preconditions<'b> {
    /// `If-Match`: send only if the file is still one of these versions (strong tags).
    pub if_match: Option<&'b [u8]>,
    /// `If-Unmodified-Since`: send only if the file has not changed since.
    pub if_unmodified_since: Option<&'b [u8]>,
    /// `If-None-Match`: 304 if the file is still one of these versions (weak tags).
    pub if_none_match: Option<&'b [u8]>,
    /// `If-Modified-Since`: 304 if the file has not changed since.
    pub if_modified_since: Option<&'b [u8]>,
}

/// Evaluates the conditional headers of a GET or HEAD in the order of RFC 9110 section
/// 13.2.2, steps 1 to 4:
///
/// 1. `If-Match`: unless one of its tags matches by strong comparison (or it is `*`: the
///    file exists), 412.
/// 2. Without `If-Match`, `If-Unmodified-Since`: if the file changed after that date, 412.
///    Ignored when it is not a date, or the file has none.
/// 3. `If-None-Match`: if one of its tags matches by weak comparison, 304.
/// 4. Without `If-None-Match`, `If-Modified-Since`: if the file has not changed since, 304.
///    Ignored when it is not a date, or a date after `now` (RFC 7232 section 3.3 calls such
///    a date invalid; a client whose clock runs ahead would otherwise keep a stale copy
///    until then).
///
/// Steps 1 and 2 are what make a resumed download safe: `Range` with `If-Unmodified-Since`
/// (or `If-Match`) gets 412 instead of bytes of a different version of the file.
///
/// `now` is asked for only when step 4 has a date to check.
pub fn evaluate(
    v: &Validators,
    p: &Preconditions<'_>,
    now: impl FnOnce() -> SystemTime,
) -> Condition {
    if let Some(list) = p.if_match {
        if !list_matches(list, &v.etag, true) {
            return Condition::PreconditionFailed;
        }
    } else if let (Some(modified), Some(since)) =
        (v.modified, p.if_unmodified_since.and_then(parse_date))
        && modified > since
    {
        return Condition::PreconditionFailed;
    }
    if let Some(list) = p.if_none_match {
        // Weak comparison (section 8.8.3.2): `W/"x"` matches `"x"`.
        return if list_matches(list, &v.etag, false) {
            Condition::NotModified
        } else {
            Condition::Send
        };
    }
    // Without a date of our own there is nothing to compare with: send.
    if let (Some(modified), Some(since)) = (v.modified, p.if_modified_since.and_then(parse_date))
        && modified <= since
        && since <= now()
    {
        return Condition::NotModified;
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
    v.modified.is_some() && parse_date(value) == v.modified
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
            modified: Some(UNIX_EPOCH + Duration::from_secs(784_111_777)),
        }
    }

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const OLDER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const NEWER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    /// When the tests say "now": well after every date they use.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_000_000_000)
    }

    fn none_match(inm: Option<&str>, ims: Option<&str>) -> Condition {
        let p = Preconditions {
            if_none_match: inm.map(str::as_bytes),
            if_modified_since: ims.map(str::as_bytes),
            ..Preconditions::default()
        };
        evaluate(&v(), &p, now)
    }

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
            assert_eq!(
                none_match(*inm, *ims),
                *want,
                "If-None-Match {inm:?}, If-Modified-Since {ims:?}"
            );
        }
    }

    /// A file dated after now has no date to send (RFC 9110 section 8.8.2.1), and the
    /// same validators every time: its ETag validates it; a date never does.
    #[test]
    fn a_file_from_the_future_has_no_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = std::fs::File::create(&path).expect("create");
        let future = SystemTime::now() + Duration::from_secs(10 * 365 * 86_400);
        file.set_modified(future).expect("set mtime");
        let meta = file.metadata().expect("metadata");
        let v = Validators::of(&meta);
        assert_eq!(v.modified, None);
        assert_eq!(v, Validators::of(&meta), "the same validators each time");
        let date = httpdate::fmt_http_date(SystemTime::now());
        for p in [
            Preconditions {
                if_modified_since: Some(date.as_bytes()),
                ..Preconditions::default()
            },
            Preconditions {
                if_unmodified_since: Some(date.as_bytes()),
                ..Preconditions::default()
            },
        ] {
            assert_eq!(evaluate(&v, &p, SystemTime::now), Condition::Send, "{p:?}");
        }
        let tag = Preconditions {
            if_none_match: Some(v.etag.as_bytes()),
            ..Preconditions::default()
        };
        assert_eq!(evaluate(&v, &tag, SystemTime::now), Condition::NotModified);
    }

    /// A date after "now" is not a date the file can have been checked against: ignored.
    #[test]
    fn if_modified_since_in_the_future_is_ignored() {
        let later = httpdate::fmt_http_date(now() + Duration::from_secs(1));
        assert_eq!(none_match(None, Some(&later)), Condition::Send);
        let at_now = httpdate::fmt_http_date(now());
        assert_eq!(none_match(None, Some(&at_now)), Condition::NotModified);
    }

    /// Steps 1 and 2 (If-Match, If-Unmodified-Since), and how they combine with 3 and 4.
    #[test]
    fn precondition_table() {
        use Condition::*;
        // (If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, outcome)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Condition,
        );
        let cases: &[Case<'_>] = &[
            (Some("\"abc-10-5\""), None, None, None, Send),
            (Some("\"x\", \"abc-10-5\""), None, None, None, Send),
            (Some("*"), None, None, None, Send),
            (Some("\"other\""), None, None, None, PreconditionFailed),
            // If-Match compares strongly: a weak tag never matches.
            (Some("W/\"abc-10-5\""), None, None, None, PreconditionFailed),
            (None, Some(DATE), None, None, Send),
            (None, Some(NEWER), None, None, Send),
            (None, Some(OLDER), None, None, PreconditionFailed),
            (None, Some("not a date"), None, None, Send),
            // If-Match present: If-Unmodified-Since is not looked at.
            (Some("\"abc-10-5\""), Some(OLDER), None, None, Send),
            // 412 comes before 304.
            (
                Some("\"other\""),
                None,
                Some("\"abc-10-5\""),
                None,
                PreconditionFailed,
            ),
            (None, Some(OLDER), None, Some(DATE), PreconditionFailed),
            // Preconditions that hold leave the 304 steps to decide.
            (Some("*"), None, Some("\"abc-10-5\""), None, NotModified),
            (None, Some(DATE), None, Some(DATE), NotModified),
            (None, Some(DATE), Some("\"other\""), Some(DATE), Send),
        ];
        for &(im, ius, inm, ims, want) in cases {
            let p = Preconditions {
                if_match: im.map(str::as_bytes),
                if_unmodified_since: ius.map(str::as_bytes),
                if_none_match: inm.map(str::as_bytes),
                if_modified_since: ims.map(str::as_bytes),
            };
            assert_eq!(evaluate(&v(), &p, now), want, "{p:?}");
        }
        // A file without a date of its own: If-Unmodified-Since cannot fail.
        let undated = Validators {
            modified: None,
            ..v()
        };
        let p = Preconditions {
            if_unmodified_since: Some(OLDER.as_bytes()),
            ..Preconditions::default()
        };
        assert_eq!(evaluate(&undated, &p, now), Send);
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

    #[test]
    fn file_times_outside_http_dates_never_panic() {
        assert_eq!(
            http_date(0).as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 GMT")
        );
        assert_eq!(
            http_date(LAST_HTTP_DATE).as_deref(),
            Some("Fri, 31 Dec 9999 23:59:59 GMT")
        );
        for secs in [-1, i64::MIN, LAST_HTTP_DATE + 1, i64::MAX] {
            assert_eq!(http_date(secs), None, "{secs}");
        }
        // No date of our own: If-Modified-Since cannot give 304, a dated If-Range fails.
        let undated = Validators {
            modified: None,
            ..v()
        };
        let since = Preconditions {
            if_modified_since: Some(DATE.as_bytes()),
            ..Preconditions::default()
        };
        assert_eq!(evaluate(&undated, &since, now), Condition::Send);
        assert!(!if_range_allows(&undated, Some(DATE.as_bytes())));
        assert!(if_range_allows(&undated, Some(b"\"abc-10-5\"")));
    }
}
