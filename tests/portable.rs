//! The `portable-fallbacks` feature really switches readyserve to the paths that systems
//! other than Linux take: no inotify watcher, no sendfile(2), no openat2(2). Run both ways
//! (`cargo test`, and `cargo test --features portable-fallbacks` in CI), this test checks
//! each path by what can be seen from outside, so that the rest of the suite, run with the
//! feature, is known to test the fallbacks and not the Linux paths again.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;
use readyserve::files::cache::FileCache;

#[test]
fn the_feature_switches_inotify_sendfile_and_openat2() {
    let fallbacks = cfg!(feature = "portable-fallbacks");

    // inotify: a cache has a descriptor to register in the Poll, or none.
    assert_eq!(
        FileCache::new(1 << 20).watch_fd().is_none(),
        fallbacks,
        "inotify watcher"
    );

    let dir = fixture();
    let (child, addr, stderr) = spawn_binary(dir.path(), &["--trace", "--access-log", "off"]);
    // sendfile or copy: either way the whole file arrives, byte for byte.
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    send(
        &mut s,
        "GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    assert!(r.body == big_content(), "the download was cut or corrupted");
    drop(s);
    // openat2 follows a symlink that stays inside the root; the walk refuses it.
    let inside = get_at(&addr, "/link-inside").status;
    assert_eq!(inside, if fallbacks { 404 } else { 200 }, "/link-inside");

    sigterm(&child);
    let mut child = child;
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let log = stderr.join().expect("stderr");
    // `--trace` names each sendfile call; the copy path writes the body with writev.
    let sendfile_calls = log
        .lines()
        .filter(|l| l.contains(" sendfile ") && l.ends_with(" bytes"))
        .count();
    if fallbacks {
        assert_eq!(sendfile_calls, 0, "sendfile was used:\n{log}");
    } else {
        assert!(sendfile_calls > 0, "sendfile was not used:\n{log}");
    }
    // And the server says which ones it runs without.
    assert_eq!(log.contains("no inotify in this build"), fallbacks, "{log}");
    assert_eq!(log.contains("no openat2"), fallbacks, "{log}");
}
