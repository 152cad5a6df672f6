//! Fuzz the request parser, the body skipper and the path mapper on arbitrary bytes.
//! Run: `cargo +nightly fuzz run parse_request -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use readyserve::http::body::Discard;
use readyserve::http::conditional::{self, Validators};
use readyserve::http::encoding;
use readyserve::http::range::{self, RangeRequest};
use readyserve::http::request::{self, Parsed};
use readyserve::files::static_files::map_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Parsed::Complete(req, n)) = request::parse(data, 16 * 1024, 1024 * 1024) else {
        return;
    };
    assert!(n <= data.len());
    assert!(!req.request_line().is_empty());
    let _ = req.header("host");
    if let Ok(mapped) = map_target(req.target, false) {
        // A mapped path is made of plain names only: never `..`, never a separator.
        for segment in &mapped.segments {
            assert!(segment.as_slice() != b".." && segment.as_slice() != b".");
            assert!(!segment.is_empty());
            assert!(!segment.contains(&b'/') && !segment.contains(&0));
            assert!(segment[0] != b'.');
        }
        assert!(!mapped.url_path(true).starts_with("//"));
    }
    // The header-value parsers see what a client sends, so they get arbitrary bytes too.
    let len = data.len() as u64;
    for value in [req.range, req.if_range, req.if_none_match, req.if_match, req.accept_encoding].into_iter().flatten() {
        if let RangeRequest::Partial { start, end } = range::evaluate(value, len) {
            assert!(start <= end && end < len);
        }
        let codings = encoding::preferred(Some(value));
        assert!(codings.len() <= 2);
    }
    let v = Validators { etag: "\"a-1-2\"".into(), modified: Some(std::time::UNIX_EPOCH) };
    let _ = conditional::evaluate(&v, &req.preconditions(), std::time::SystemTime::now);
    let _ = conditional::if_range_allows(&v, req.if_range);
    let mut discard = Discard::new(req.body);
    if let Ok(used) = discard.advance(&data[n..], 1024 * 1024, 16 * 1024) {
        assert!(used <= data.len() - n);
    }
});
