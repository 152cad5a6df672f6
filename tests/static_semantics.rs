//! RFC 9110 file semantics over real sockets: validators and 304, ranges, MIME types,
//! precompressed sidecars, directory listings, dotfiles, symlinks, Cache-Control.

mod common;

use std::fs;

use common::*;

/// Sends a GET (or HEAD) with extra header lines and reads the response.
fn request(server: &TestServer, method: &str, target: &str, headers: &str) -> Response {
    let mut s = server.connect();
    send(
        &mut s,
        &format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{headers}\r\n"),
    );
    read_response(&mut s, method == "HEAD")
}

/// index.html's `ETag` and `Last-Modified`.
fn validators(server: &TestServer) -> (String, String) {
    let r = server.get("/index.html");
    let etag = r.header("ETag").expect("ETag").to_string();
    let lm = r.header("Last-Modified").expect("Last-Modified");
    (etag, lm.to_string())
}

#[test]
fn validators_and_conditional_table() {
    let server = TestServer::start();
    let (etag, lm) = validators(&server);
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    let older = "Mon, 01 Jan 2001 00:00:00 GMT";
    let newer = "Fri, 01 Jan 2100 00:00:00 GMT";
    let recent = httpdate::fmt_http_date(std::time::SystemTime::now());
    let weak = format!("W/{etag}");
    let list = format!("\"nope\", {etag}");
    let cases: Vec<(String, u16)> = vec![
        (format!("If-None-Match: {etag}\r\n"), 304),
        (format!("If-None-Match: {weak}\r\n"), 304),
        (format!("If-None-Match: {list}\r\n"), 304),
        ("If-None-Match: *\r\n".to_string(), 304),
        ("If-None-Match: \"nope\"\r\n".to_string(), 200),
        (format!("If-Modified-Since: {lm}\r\n"), 304),
        (format!("If-Modified-Since: {recent}\r\n"), 304),
        // A date after the server's clock is not a valid one (RFC 7232 section 3.3).
        (format!("If-Modified-Since: {newer}\r\n"), 200),
        (format!("If-Modified-Since: {older}\r\n"), 200),
        ("If-Modified-Since: yesterday\r\n".to_string(), 200),
        // If-None-Match wins over If-Modified-Since.
        (
            format!("If-None-Match: \"nope\"\r\nIf-Modified-Since: {newer}\r\n"),
            200,
        ),
        (
            format!("If-None-Match: {etag}\r\nIf-Modified-Since: {older}\r\n"),
            304,
        ),
    ];
    for (headers, want) in cases {
        let r = request(&server, "GET", "/index.html", &headers);
        assert_eq!(r.status, want, "{headers:?}");
        if want == 304 {
            assert_eq!(r.header("ETag"), Some(etag.as_str()));
            assert_eq!(r.header("Last-Modified"), Some(lm.as_str()));
            assert!(r.header("Date").is_some());
            assert!(r.body.is_empty());
        } else {
            assert_eq!(r.body_text(), INDEX);
        }
    }
}

/// If-Match and If-Unmodified-Since (RFC 9110 sections 13.1.1, 13.1.4): a client that
/// wants this version only gets 412 once the file is another one. That is what keeps a
/// resumed download (Range with one of them) from joining bytes of two versions.
#[test]
fn preconditions_table_and_a_resumed_download() {
    let server = TestServer::start();
    let (etag, lm) = validators(&server);
    let older = "Mon, 01 Jan 2001 00:00:00 GMT";
    let cases: Vec<(&str, String, u16)> = vec![
        ("GET", format!("If-Match: {etag}\r\n"), 200),
        ("GET", format!("If-Match: \"nope\", {etag}\r\n"), 200),
        ("GET", "If-Match: *\r\n".to_string(), 200),
        ("GET", "If-Match: \"nope\"\r\n".to_string(), 412),
        // Strong comparison: a weak tag never matches.
        ("GET", format!("If-Match: W/{etag}\r\n"), 412),
        ("GET", format!("If-Unmodified-Since: {lm}\r\n"), 200),
        ("GET", format!("If-Unmodified-Since: {older}\r\n"), 412),
        ("GET", "If-Unmodified-Since: yesterday\r\n".to_string(), 200),
        ("HEAD", "If-Match: \"nope\"\r\n".to_string(), 412),
        // Resuming: the same version gets its bytes, another gets 412, never a mix.
        (
            "GET",
            format!("Range: bytes=2-5\r\nIf-Unmodified-Since: {lm}\r\n"),
            206,
        ),
        (
            "GET",
            format!("Range: bytes=2-5\r\nIf-Unmodified-Since: {older}\r\n"),
            412,
        ),
        (
            "GET",
            format!("Range: bytes=2-5\r\nIf-Match: {etag}\r\n"),
            206,
        ),
        (
            "GET",
            "Range: bytes=2-5\r\nIf-Match: \"nope\"\r\n".to_string(),
            412,
        ),
        // 412 comes before 304.
        (
            "GET",
            format!("If-Match: \"nope\"\r\nIf-None-Match: {etag}\r\n"),
            412,
        ),
    ];
    for (method, headers, want) in cases {
        let r = request(&server, method, "/index.html", &headers);
        assert_eq!(r.status, want, "{method} {headers:?}");
        match want {
            412 if method == "HEAD" => assert!(r.body.is_empty()),
            412 => assert!(r.body_text().contains("412"), "{}", r.body_text()),
            206 => assert_eq!(r.body_text(), &INDEX[2..6]),
            _ => assert_eq!(r.body_text(), INDEX),
        }
    }
    // A 412 is an ordinary answer: the connection goes on.
    let mut s = server.connect();
    send(
        &mut s,
        "GET /index.html HTTP/1.1\r\nHost: t\r\nIf-Match: \"nope\"\r\n\r\n",
    );
    assert_eq!(read_response(&mut s, false).status, 412);
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).status, 200);
}

#[test]
fn etag_changes_when_the_file_changes() {
    let server = TestServer::start();
    let before = server.get("/style.css").header("ETag").map(str::to_string);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(server.root().join("style.css"), "body { color: blue }\n").expect("write");
    if cfg!(feature = "portable-fallbacks") {
        // No inotify: the cached copy is checked again after half a second.
        std::thread::sleep(std::time::Duration::from_millis(600));
    }
    let r = server.get("/style.css");
    assert_ne!(r.header("ETag").map(str::to_string), before);
    assert_eq!(r.body_text(), "body { color: blue }\n");
}

#[test]
fn range_table() {
    let server = TestServer::start();
    fs::write(server.root().join("ten.txt"), "0123456789").expect("write");
    // (Range, status, body, Content-Range)
    let cases: &[(&str, u16, &str, Option<&str>)] = &[
        ("bytes=0-0", 206, "0", Some("bytes 0-0/10")),
        ("bytes=0-3", 206, "0123", Some("bytes 0-3/10")),
        ("bytes=9-9", 206, "9", Some("bytes 9-9/10")),
        ("bytes=7-", 206, "789", Some("bytes 7-9/10")),
        ("bytes=-3", 206, "789", Some("bytes 7-9/10")),
        ("bytes=5-100", 206, "56789", Some("bytes 5-9/10")),
        ("bytes=-100", 206, "0123456789", Some("bytes 0-9/10")),
        ("bytes=10-", 416, "", Some("bytes */10")),
        ("bytes=10-20", 416, "", Some("bytes */10")),
        (
            "bytes=99999999999999999999999-",
            416,
            "",
            Some("bytes */10"),
        ),
        ("bytes=5-2", 200, "0123456789", None),
        ("bytes=0-1,4-5", 200, "0123456789", None),
        ("bytes=x-y", 200, "0123456789", None),
        ("lines=1-2", 200, "0123456789", None),
    ];
    for (range, status, body, content_range) in cases {
        let r = request(&server, "GET", "/ten.txt", &format!("Range: {range}\r\n"));
        assert_eq!(r.status, *status, "{range}");
        assert_eq!(r.header("Content-Range"), *content_range, "{range}");
        if *status != 416 {
            assert_eq!(r.body_text(), *body, "{range}");
        }
        if *status == 200 {
            assert_eq!(r.header("Accept-Ranges"), Some("bytes"), "{range}");
        }
    }
    // An empty file has no byte to send.
    let r = request(&server, "GET", "/empty.txt", "Range: bytes=0-0\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */0"));
}

#[test]
fn range_on_a_large_streamed_file_and_head() {
    let server = TestServer::start();
    let start = 3 * 1024 * 1024 + 17;
    let end = start + 2 * 1024 * 1024;
    let r = request(
        &server,
        "GET",
        "/big.bin",
        &format!("Range: bytes={start}-{end}\r\n"),
    );
    assert_eq!(r.status, 206);
    assert!(
        r.body == big_content()[start..=end],
        "wrong bytes for a large range"
    );
    let head = request(
        &server,
        "HEAD",
        "/big.bin",
        &format!("Range: bytes={start}-{end}\r\n"),
    );
    assert_eq!(head.status, 206);
    assert_eq!(
        head.header("Content-Length"),
        Some((end - start + 1).to_string().as_str())
    );
    assert_eq!(head.header("Content-Range"), r.header("Content-Range"));
}

#[test]
fn if_range_decides_whether_range_applies() {
    let server = TestServer::start();
    fs::write(server.root().join("ten.txt"), "0123456789").expect("write");
    let full = server.get("/ten.txt");
    let etag = full.header("ETag").expect("etag");
    let lm = full.header("Last-Modified").expect("lm");
    let cases: Vec<(String, u16)> = vec![
        (format!("If-Range: {etag}\r\n"), 206),
        (format!("If-Range: {lm}\r\n"), 206),
        ("If-Range: \"stale\"\r\n".to_string(), 200),
        (format!("If-Range: W/{etag}\r\n"), 200),
        (
            "If-Range: Mon, 01 Jan 2001 00:00:00 GMT\r\n".to_string(),
            200,
        ),
    ];
    for (if_range, want) in cases {
        let r = request(
            &server,
            "GET",
            "/ten.txt",
            &format!("Range: bytes=0-1\r\n{if_range}"),
        );
        assert_eq!(r.status, want, "{if_range:?}");
    }
}

#[test]
fn mime_table_and_nosniff() {
    let server = TestServer::start();
    let files = [
        ("a.html", "text/html; charset=utf-8"),
        ("a.css", "text/css; charset=utf-8"),
        ("a.js", "text/javascript; charset=utf-8"),
        ("a.mjs", "text/javascript; charset=utf-8"),
        ("a.json", "application/json; charset=utf-8"),
        ("a.txt", "text/plain; charset=utf-8"),
        ("a.svg", "image/svg+xml; charset=utf-8"),
        ("a.xml", "text/xml; charset=utf-8"),
        ("a.wasm", "application/wasm"),
        ("a.png", "image/png"),
        ("a.weird-ext", "application/octet-stream"),
        ("noext", "application/octet-stream"),
    ];
    for (name, want) in files {
        fs::write(server.root().join(name), "x").expect("write");
        let r = server.get(&format!("/{name}"));
        assert_eq!(r.header("Content-Type"), Some(want), "{name}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{name}"
        );
    }
}

fn with_sidecars(server: &TestServer) {
    let root = server.root();
    fs::write(root.join("app.js"), "plain").expect("write");
    fs::write(root.join("app.js.br"), "BROTLI").expect("write");
    fs::write(root.join("app.js.gz"), "GZIPPED").expect("write");
    fs::write(root.join("only.css"), "plain css").expect("write");
    fs::write(root.join("only.css.gz"), "GZ CSS").expect("write");
}

#[test]
fn sidecar_negotiation_table() {
    let server = TestServer::start();
    with_sidecars(&server);
    // (path, Accept-Encoding, body, Content-Encoding)
    let cases: &[(&str, Option<&str>, &str, Option<&str>)] = &[
        ("/app.js", None, "plain", None),
        ("/app.js", Some("gzip, deflate, br"), "BROTLI", Some("br")),
        ("/app.js", Some("br;q=1, gzip;q=1"), "BROTLI", Some("br")),
        (
            "/app.js",
            Some("br;q=0.5, gzip;q=0.9"),
            "GZIPPED",
            Some("gzip"),
        ),
        ("/app.js", Some("gzip"), "GZIPPED", Some("gzip")),
        ("/app.js", Some("br;q=0, gzip;q=0"), "plain", None),
        ("/app.js", Some("identity"), "plain", None),
        ("/only.css", Some("br"), "plain css", None),
        ("/only.css", Some("br, gzip"), "GZ CSS", Some("gzip")),
        ("/index.html", Some("br, gzip"), INDEX, None),
    ];
    for (path, ae, body, ce) in cases {
        let headers = ae
            .map(|v| format!("Accept-Encoding: {v}\r\n"))
            .unwrap_or_default();
        let r = request(&server, "GET", path, &headers);
        assert_eq!(r.status, 200, "{path} {ae:?}");
        assert_eq!(r.body_text(), *body, "{path} {ae:?}");
        assert_eq!(r.header("Content-Encoding"), *ce, "{path} {ae:?}");
        let vary = if *path == "/index.html" {
            None
        } else {
            Some("Accept-Encoding")
        };
        assert_eq!(r.header("Vary"), vary, "{path} {ae:?}: Vary");
        // The type is the original file's, never application/gzip.
        if path.ends_with(".js") {
            assert_eq!(
                r.header("Content-Type"),
                Some("text/javascript; charset=utf-8")
            );
        }
    }
    // Each variant has its own ETag.
    let plain = request(&server, "GET", "/app.js", "");
    let br = request(&server, "GET", "/app.js", "Accept-Encoding: br\r\n");
    assert_ne!(plain.header("ETag"), br.header("ETag"));
    // Ranges apply to the encoded bytes.
    let r = request(
        &server,
        "GET",
        "/app.js",
        "Accept-Encoding: br\r\nRange: bytes=0-1\r\n",
    );
    assert_eq!((r.status, r.body_text().as_str()), (206, "BR"));
    // The sidecar asked for by name is a plain file.
    let r = server.get("/app.js.gz");
    assert_eq!(r.body_text(), "GZIPPED");
    assert_eq!(r.header("Content-Type"), Some("application/gzip"));
    assert_eq!(r.header("Content-Encoding"), None);
}

fn listing_dir(server: &TestServer) {
    let dir = server.root().join("files");
    fs::create_dir_all(dir.join("sub dir")).expect("mkdir");
    fs::write(dir.join("<b>&\"x y.txt"), "tricky").expect("write");
    fs::write(dir.join("b.txt"), "bb").expect("write");
    fs::write(dir.join("a.txt"), "a").expect("write");
    fs::write(dir.join(".secret"), "hidden").expect("write");
}

#[test]
fn listing_is_off_by_default() {
    let server = TestServer::start();
    listing_dir(&server);
    assert_eq!(server.get("/files/").status, 404);
}

#[test]
fn listing_escapes_names_hides_dotfiles_and_sorts() {
    let server = TestServer::start_with(|c| c.list_directories = true);
    listing_dir(&server);
    let r = server.get("/files/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    let html = r.body_text();
    assert!(html.contains("<a href=\"../\">../</a>"), "{html}");
    assert!(!html.contains("<b>&"), "unescaped name in {html}");
    assert!(html.contains("&lt;b&gt;&amp;&quot;x y.txt"), "{html}");
    // Links: `./`, then every byte outside RFC 3986's unreserved set percent-encoded.
    assert!(html.contains("href=\"./%3Cb%3E%26%22x%20y.txt\""), "{html}");
    assert!(html.contains("href=\"./sub%20dir/\""), "{html}");
    assert!(!html.contains("secret"), "dotfile listed: {html}");
    let a = html.find(">a.txt<").expect("a.txt");
    let b = html.find(">b.txt<").expect("b.txt");
    assert!(a < b, "not sorted");
    assert!(html.contains("<td>2</td>"), "size of b.txt: {html}");
    // The link works.
    let r = server.get("/files/./%3Cb%3E%26%22x%20y.txt");
    assert_eq!(r.body_text(), "tricky");
    // A directory with an index is not listed.
    assert_eq!(server.get("/sub/").body_text(), "sub index\n");
}

#[test]
fn dotfiles_symlinks_and_their_flags() {
    let server = TestServer::start();
    assert_eq!(server.get("/.hidden").status, 404);
    fs::create_dir_all(server.root().join(".git")).expect("mkdir");
    fs::write(server.root().join(".git/config"), "[core]").expect("write");
    assert_eq!(server.get("/.git/config").status, 404);
    assert_eq!(server.get("/link-outside").status, 404);
    // Served through openat2; refused by the walk that replaces it elsewhere.
    let inside = server.get("/link-inside");
    if cfg!(feature = "portable-fallbacks") {
        assert_eq!(inside.status, 404);
    } else {
        assert_eq!(inside.body_text(), INDEX);
    }

    let open = TestServer::start_with(|c| {
        c.serve_dotfiles = true;
        c.follow_symlinks = true;
    });
    assert_eq!(open.get("/.hidden").body_text(), "hidden\n");
    assert_eq!(
        open.get("/link-outside").body_text(),
        "SECRET OUTSIDE THE ROOT\n"
    );
    // `..` is still never allowed, whatever the flags.
    assert_eq!(open.get("/../outside/secret.txt").status, 400);
}

#[test]
fn cache_control_on_200_206_and_304_only() {
    let server = TestServer::start_with(|c| c.cache_control = Some("max-age=60".into()));
    let r = server.get("/index.html");
    assert_eq!(r.header("Cache-Control"), Some("max-age=60"));
    let etag = r.header("ETag").expect("etag").to_string();
    let r = request(
        &server,
        "GET",
        "/index.html",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(
        (r.status, r.header("Cache-Control")),
        (304, Some("max-age=60"))
    );
    let r = request(&server, "GET", "/index.html", "Range: bytes=0-1\r\n");
    assert_eq!(
        (r.status, r.header("Cache-Control")),
        (206, Some("max-age=60"))
    );
    assert_eq!(server.get("/missing").header("Cache-Control"), None);
    assert_eq!(
        TestServer::start()
            .get("/index.html")
            .header("Cache-Control"),
        None
    );
}

/// A cached file's responses copy header lines written once, when it was cached; they
/// must be the very lines a file read from disk gets. Every kind of answer, with and
/// without the cache, byte for byte apart from the Date line.
#[test]
fn cached_and_uncached_files_answer_with_the_same_heads() {
    let tweak = |c: &mut readyserve::Config| c.cache_control = Some("max-age=60".into());
    let cached = TestServer::start_with(tweak);
    // The same files (the ETag names the inode), with no cache.
    let uncached = TestServer::start_with(|c| {
        tweak(c);
        c.cache_bytes = 0;
        c.root = cached.root();
    });
    let etag = cached
        .get("/index.html")
        .header("ETag")
        .expect("etag")
        .to_string();
    let if_none_match = format!("If-None-Match: {etag}\r\n");
    let cases = [
        ("GET", ""),
        ("HEAD", ""),
        ("GET", "Range: bytes=2-5\r\n"),
        ("GET", if_none_match.as_str()),
        ("GET", "Range: bytes=900-\r\n"),
    ];
    let without_date = |r: &Response| -> Vec<String> {
        let lines = r.head.split("\r\n").filter(|l| !l.starts_with("Date: "));
        lines.map(str::to_string).collect()
    };
    for (method, headers) in cases {
        // Twice on the cached server: the first answer fills the cache, the second is
        // answered from it.
        let want = request(&uncached, method, "/index.html", headers);
        for _ in 0..2 {
            let got = request(&cached, method, "/index.html", headers);
            assert_eq!(
                without_date(&got),
                without_date(&want),
                "{method} {headers:?}"
            );
            assert_eq!(got.body, want.body, "{method} {headers:?}");
        }
    }
}

#[test]
fn file_that_shrinks_while_sent_closes_the_connection_and_server_goes_on() {
    let server = TestServer::start();
    // 64 MiB (sparse): more than any socket buffers can hold, so the server is still
    // sending when the file shrinks.
    const HUGE: u64 = 64 * 1024 * 1024;
    let path = server.root().join("huge.bin");
    fs::File::create(&path)
        .and_then(|f| f.set_len(HUGE))
        .expect("create");
    let mut s = server.connect();
    send(&mut s, "GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut first = [0u8; 4096];
    std::io::Read::read_exact(&mut s, &mut first).expect("started");
    // Truncate the file under the server's feet (same inode, so the open fd sees it).
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1000))
        .expect("truncate");
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    let got = (first.len() + rest.len()) as u64;
    assert!(got < HUGE, "the whole file arrived anyway");
    assert_eq!(server.get("/index.html").body_text(), INDEX);
}

#[test]
#[cfg_attr(
    feature = "portable-fallbacks",
    ignore = "inotify's promise; without it a change shows within a second (etag_changes_when_the_file_changes)"
)]
fn cached_file_is_never_served_stale() {
    let server = TestServer::start();
    let path = server.root().join("live.txt");
    let mut s = server.connect();
    for i in 0..30 {
        let content = format!("version {i}\n");
        // Same length every time for i < 10, so only the content and mtime change.
        fs::write(&path, &content).expect("write");
        send(&mut s, "GET /live.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            read_response(&mut s, false).body_text(),
            content,
            "round {i}"
        );
        // Served twice, the second time from the cache.
        send(&mut s, "GET /live.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            read_response(&mut s, false).body_text(),
            content,
            "round {i}, cached"
        );
    }
    // Replaced by rename, as editors and deploy tools do.
    let tmp = server.root().join("live.tmp");
    fs::write(&tmp, "renamed in\n").expect("write");
    fs::rename(&tmp, &path).expect("rename");
    send(&mut s, "GET /live.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), "renamed in\n");
    fs::remove_file(&path).expect("remove");
    send(&mut s, "GET /live.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).status, 404);
}
