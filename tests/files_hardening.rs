//! The disk side of hardening, over real sockets: file times no HTTP date can express,
//! symlinks swapped while requests run, deploys by re-pointing a symlink, hostile names in
//! listings, and random trees of odd files.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::*;

/// The outside file's content (see `make_fixture`): no response may ever carry it.
const SECRET: &str = "SECRET OUTSIDE THE ROOT";

/// Sets a file's modification time, `secs` from the epoch (negative: before 1970).
fn set_mtime(path: &Path, secs: i64) {
    let time = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(time))
        .expect("set mtime");
}

fn mtime_of(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).expect("stat").mtime()
}

/// A directory on tmpfs (which keeps times after the year 9999, as btrfs does; ext4 clamps
/// them to 2446), if this machine has a writable one.
fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir_in("/dev/shm").ok()?;
    let probe = dir.path().join("probe");
    fs::write(&probe, "").ok()?;
    set_mtime(&probe, 300_000_000_000);
    (mtime_of(&probe) == 300_000_000_000).then_some(dir)
}

/// Percent-encodes every byte outside RFC 3986's unreserved set.
fn encode(name: &[u8]) -> String {
    name.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The `href` values of a listing page.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn file_times_outside_http_dates_are_served_without_last_modified() {
    let far = tmpfs_dir();
    let server = TestServer::start_with(|c| {
        c.list_directories = true;
        if let Some(far) = &far {
            make_fixture(&far.path().join("root"), &far.path().join("outside"));
            c.root = far.path().join("root");
        }
    });
    let root = match &far {
        Some(far) => far.path().join("root"),
        None => server.root(),
    };
    fs::create_dir(root.join("times")).expect("mkdir");
    // (name, mtime, has an HTTP date)
    let mut cases = vec![
        ("normal.txt", 1_700_000_000, true),
        ("epoch.txt", 0, true),
        ("before-1970.txt", -1, false),
        ("long-ago.txt", -10_000_000_000, false),
    ];
    if far.is_some() {
        // Times after now, whether an HTTP date can express them or not, give no date (RFC
        // 9110 section 8.8.2.1: never a Last-Modified later than the Date).
        cases.push(("last-second-of-9999.txt", 253_402_300_799, false));
        cases.push(("year-10000.txt", 253_402_300_800, false));
        cases.push(("far-future.txt", 300_000_000_000, false));
    } else {
        eprintln!("no tmpfs at /dev/shm: times after 9999 not tried");
    }
    for (name, secs, _) in &cases {
        let path = root.join("times").join(name);
        fs::write(&path, name).expect("write");
        set_mtime(&path, *secs);
        assert_eq!(mtime_of(&path), *secs, "the filesystem kept {name}'s time");
    }
    for (name, _, dated) in &cases {
        let target = format!("/times/{name}");
        // Twice: from disk, then from the cache.
        for round in ["disk", "cache"] {
            let r = server.get(&target);
            assert_eq!(
                (r.status, r.body_text().as_str()),
                (200, *name),
                "{name} {round}"
            );
            assert_eq!(
                r.header("Last-Modified").is_some(),
                *dated,
                "{name} {round}"
            );
            assert!(r.header("ETag").is_some(), "{name} {round}");
        }
        if !dated {
            // No date of our own: a date in the request validates nothing.
            let mut s = server.connect();
            send(
                &mut s,
                &format!(
                    "GET {target} HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Fri, 31 Dec 9999 23:59:59 GMT\r\n\
                     Range: bytes=0-1\r\nIf-Range: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\n"
                ),
            );
            let r = read_response(&mut s, false);
            assert_eq!((r.status, r.body_text().as_str()), (200, *name), "{name}");
        }
    }
    // The listing shows every file, a date only where there is one, and the server lives.
    let r = server.get("/times/");
    assert_eq!(r.status, 200);
    let html = r.body_text();
    for (name, _, _) in &cases {
        assert!(html.contains(name), "{name} missing from {html}");
    }
    assert!(html.contains("Thu, 01 Jan 1970 00:00:00 GMT"), "{html}");
    assert_eq!(server.get("/index.html").body_text(), INDEX);
}

/// Fetches `targets` in turn, `rounds` times in all, over keep-alive connections, while
/// `toggle` runs in a thread; returns (responses carrying the outside file, 200s).
fn race(
    server: &TestServer,
    targets: &[&str],
    rounds: usize,
    toggle: impl Fn() + Send + 'static,
) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                toggle();
            }
        })
    };
    let (mut leaks, mut ok) = (0, 0);
    let mut s = server.connect();
    for i in 0..rounds {
        let target = targets[i % targets.len()];
        send(&mut s, &format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"));
        let r = match try_read_response(&mut s, false) {
            Some(r) => r,
            None => {
                s = server.connect();
                continue;
            }
        };
        assert!(matches!(r.status, 200 | 404), "{target}: {}", r.status);
        if r.body_text().contains(SECRET) {
            leaks += 1;
        } else if r.status == 200 {
            ok += 1;
        }
        if r.header("Connection") == Some("close") {
            s = server.connect();
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    (leaks, ok)
}

/// Re-points the symlink `link` to `to`: removed and created again, so that for a moment
/// there is no link at all, as a careless deploy script does.
fn relink(link: &Path, to: &str) {
    let _ = fs::remove_file(link);
    let _ = symlink(to, link);
}

#[test]
fn a_symlink_swapped_during_requests_never_leads_outside() {
    for cache_bytes in [0, 64 << 20] {
        let server = TestServer::start_with(|c| c.cache_bytes = cache_bytes);
        let root = server.root();
        fs::create_dir(root.join("inside")).expect("mkdir");
        fs::write(root.join("inside/secret.txt"), "inside\n").expect("write");
        symlink("sub/inner.txt", root.join("race")).expect("link");
        symlink("inside", root.join("racedir")).expect("link");
        // The attack that beat canonicalize-check-open: a real directory exchanged
        // atomically with a symlink to the outside, so that the checked path leads
        // elsewhere by the time it is opened.
        fs::create_dir(root.join("swapped")).expect("mkdir");
        fs::write(root.join("swapped/secret.txt"), "inside\n").expect("write");
        symlink("../outside", root.join("swapped.alt")).expect("link");
        let (file_link, dir_link) = (root.join("race"), root.join("racedir"));
        let (real, alt) = (root.join("swapped"), root.join("swapped.alt"));
        let (leaks, ok) = race(
            &server,
            &["/race", "/racedir/secret.txt", "/swapped/secret.txt"],
            3000,
            move || {
                relink(&file_link, "../outside/secret.txt");
                relink(&dir_link, "../outside");
                relink(&file_link, "sub/inner.txt");
                relink(&dir_link, "inside");
                for _ in 0..100 {
                    let flags = rustix::fs::RenameFlags::EXCHANGE;
                    let _ = rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        &real,
                        rustix::fs::CWD,
                        &alt,
                        flags,
                    );
                }
            },
        );
        assert_eq!(
            leaks, 0,
            "cache {cache_bytes}: {leaks} responses carried the outside file"
        );
        assert!(
            ok > 0,
            "cache {cache_bytes}: the inside file was never served"
        );
    }
}

/// Sets up `base/releases/v1` (index.html, old.txt) and `v2` (index.html), and the link
/// `base/current -> releases/v1`.
fn releases(base: &Path) {
    for (v, files) in [
        ("v1", &["index.html", "old.txt"][..]),
        ("v2", &["index.html"]),
    ] {
        let dir = base.join("releases").join(v);
        fs::create_dir_all(&dir).expect("mkdir");
        for f in files {
            fs::write(dir.join(f), format!("{v} {f}\n")).expect("write");
        }
    }
    symlink("releases/v1", base.join("current")).expect("link");
}

/// Re-points `base/current` to v2 atomically (a new link renamed over the old one, as
/// `ln -sfn` plus `mv -T` do).
fn deploy_v2(base: &Path) {
    symlink("releases/v2", base.join("current.new")).expect("link");
    fs::rename(base.join("current.new"), base.join("current")).expect("rename");
}

/// Polls until `/prefix/index.html` is v2 and `/prefix/old.txt` is 404; returns how long
/// that took, or `None` after 3 s.
fn wait_for_v2(server: &TestServer, prefix: &str) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let index = server.get(&format!("{prefix}/index.html"));
        let old = server.get(&format!("{prefix}/old.txt"));
        if index.body_text() == "v2 index.html\n" && old.status == 404 {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_deploy_by_symlink_swap_inside_the_root_is_served_within_a_second() {
    // Without openat2 (the `portable-fallbacks` feature, other systems) every symlink is
    // refused unless --follow-symlinks: a symlinked release is served only with it.
    let modes: &[bool] = if cfg!(feature = "portable-fallbacks") {
        &[true]
    } else {
        &[false, true]
    };
    for &follow_symlinks in modes {
        let server = TestServer::start_with(|c| c.follow_symlinks = follow_symlinks);
        releases(&server.root());
        for _ in 0..3 {
            // Warm the cache: these now come from memory.
            assert_eq!(
                server.get("/current/index.html").body_text(),
                "v1 index.html\n"
            );
            assert_eq!(server.get("/current/old.txt").body_text(), "v1 old.txt\n");
        }
        deploy_v2(&server.root());
        let took = wait_for_v2(&server, "/current");
        assert!(
            took.is_some(),
            "follow {follow_symlinks}: still v1 after 3 s"
        );
        eprintln!("follow {follow_symlinks}: v2 served after {took:?}");
    }
}

#[test]
fn a_deploy_by_re_pointing_the_root_itself_is_served_within_a_second() {
    let site = tempfile::tempdir().expect("tempdir");
    releases(site.path());
    let server = TestServer::start_with(|c| c.root = site.path().join("current"));
    for _ in 0..3 {
        assert_eq!(server.get("/index.html").body_text(), "v1 index.html\n");
        assert_eq!(server.get("/old.txt").body_text(), "v1 old.txt\n");
    }
    deploy_v2(site.path());
    let took = wait_for_v2(&server, "");
    assert!(took.is_some(), "still v1 after 3 s");
    eprintln!("v2 served after {took:?}");
}

#[test]
fn listing_links_are_inert_and_lead_back_to_their_files() {
    let server = TestServer::start_with(|c| c.list_directories = true);
    let dir = server.root().join("names");
    fs::create_dir(&dir).expect("mkdir");
    let names: &[&[u8]] = &[
        b"javascript:alert(1)",
        b"caf\xe9 latin-1.txt",
        b"\xff\xfe",
        b"q?x#y%z&w;",
        b"tab\tnewline\n",
        b"\"quoted' <tag>",
    ];
    for name in names {
        fs::write(dir.join(OsStr::from_bytes(name)), name).expect("write");
    }
    fs::create_dir(dir.join("sub dir:x")).expect("mkdir");
    let r = server.get("/names/");
    assert_eq!(r.status, 200);
    let html = r.body_text();
    assert!(
        html.contains("href=\"./javascript%3Aalert%281%29\""),
        "{html}"
    );
    let links = hrefs(&html);
    assert!(
        !links.iter().any(|h| h.contains(':')),
        "a link with a scheme: {links:?}"
    );
    // Each link, followed as a browser would from /names/, gives that file's bytes.
    for name in names {
        let link = format!("./{}", encode(name));
        assert!(links.contains(&link), "{link} not in {links:?}");
        let r = server.get(&format!("/names/{link}"));
        assert_eq!(r.status, 200, "{link}");
        assert_eq!(r.body, *name, "{link}");
    }
    assert!(links.contains(&"./sub%20dir%3Ax/".to_string()), "{links:?}");
    // A name the server refuses to serve (a backslash is never part of a path) is not
    // listed, rather than listed with a link that cannot work.
    fs::write(dir.join("back\\slash"), "x").expect("write");
    assert!(!server.get("/names/").body_text().contains("slash"));
}

#[test]
fn listings_are_capped_and_say_so() {
    let server = TestServer::start_with(|c| {
        c.list_directories = true;
        c.max_listing_entries = 5;
    });
    let dir = server.root().join("many");
    fs::create_dir(&dir).expect("mkdir");
    for i in 0..12 {
        fs::write(dir.join(format!("f{i:02}")), "x").expect("write");
    }
    let html = server.get("/many/").body_text();
    let rows = hrefs(&html).iter().filter(|h| h.starts_with("./f")).count();
    assert_eq!(rows, 5, "{html}");
    assert!(html.contains("only the first 5 found"), "{html}");
    // Under the cap: everything, and no note.
    let html = server.get("/noindex/").body_text();
    assert!(
        html.contains("./file.txt") && !html.contains("only the first"),
        "{html}"
    );
}

#[test]
fn a_cached_listing_follows_changes_in_its_directory() {
    let server = TestServer::start_with(|c| c.list_directories = true);
    let dir = server.root().join("noindex");
    assert!(!server.get("/noindex/").body_text().contains("new.txt"));
    fs::write(dir.join("new.txt"), "new").expect("write");
    assert!(server.get("/noindex/").body_text().contains("./new.txt"));
    // A size change renames nothing, so only inotify can tell.
    let html = server.get("/noindex/").body_text();
    assert!(html.contains("<td>3</td>"), "{html}");
    fs::write(dir.join("new.txt"), "newer!").expect("write");
    let mut seen = String::new();
    for _ in 0..40 {
        seen = server.get("/noindex/").body_text();
        if seen.contains("<td>6</td>") {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(
        seen.contains("<td>6</td>"),
        "the new size never showed: {seen}"
    );
    fs::remove_file(dir.join("new.txt")).expect("rm");
    assert!(!server.get("/noindex/").body_text().contains("new.txt"));
}

/// A small deterministic generator (xorshift64*), so that a failing tree can be rebuilt.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Builds a random tree of `count` entries under `root/t`: directories, files (some empty)
/// with odd times, FIFOs, and symlinks that stay inside, leave, dangle or loop; names
/// include non-UTF-8 bytes. Returns the entries' paths relative to the root, as bytes.
fn random_tree(rng: &mut Rng, root: &Path, count: usize, far_times: bool) -> Vec<Vec<u8>> {
    let mut dirs: Vec<Vec<u8>> = vec![b"t".to_vec()];
    let mut all = dirs.clone();
    fs::create_dir(root.join("t")).expect("mkdir");
    let name_parts: &[&[u8]] = &[
        b"a",
        b"index.html",
        b"x.txt",
        b"\xff",
        b"caf\xe9",
        b"sp ace",
        b"%41",
        b"?#",
        b"..a",
        b".hid",
        b"j:s",
        b"\xe2\x80\xae",
        b"x.br",
        b"x.txt.gz",
        b"b\\s",
    ];
    let mut times = vec![0, -1, -86_400 * 365 * 100, 1_700_000_000, 253_402_300_799];
    if far_times {
        times.extend([253_402_300_800, 300_000_000_000]);
    }
    for i in 0..count {
        let parent = dirs[rng.below(dirs.len())].clone();
        let mut name = name_parts[rng.below(name_parts.len())].to_vec();
        name.extend(format!("{i}").bytes());
        let mut rel = parent.clone();
        rel.push(b'/');
        rel.extend(&name);
        let path = root.join(OsStr::from_bytes(&rel));
        match rng.below(8) {
            0 | 1 => {
                fs::create_dir(&path).expect("mkdir");
                dirs.push(rel.clone());
            }
            2 => {
                let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("c path");
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    c.as_c_str(),
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o644),
                    0,
                )
                .expect("mkfifo");
            }
            3 | 4 => {
                let to: Vec<u8> = match rng.below(6) {
                    0 => b"../../outside/secret.txt".to_vec(),
                    1 => root
                        .parent()
                        .expect("parent")
                        .join("outside")
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                    2 => b"missing".to_vec(),
                    3 => name.clone(), // a loop
                    _ => {
                        // Somewhere inside: up to the root, then down to an entry.
                        let depth = parent.iter().filter(|&&b| b == b'/').count();
                        let mut to = b"../".repeat(depth + 1);
                        to.extend(&all[rng.below(all.len())]);
                        to
                    }
                };
                symlink(OsStr::from_bytes(&to), &path).expect("symlink");
            }
            _ => {
                let body = if rng.below(3) == 0 {
                    Vec::new()
                } else {
                    rel.clone()
                };
                fs::write(&path, body).expect("write");
                set_mtime(&path, times[rng.below(times.len())]);
            }
        }
        all.push(rel);
    }
    all
}

/// Random trees of odd files, served with listings on: every entry, every listing and every
/// link in it is fetched. The server must answer each with 200, 301, 400 or 404 (each link
/// from a listing with 200 or 301), never with bytes from outside the root, and must still
/// be running at the end.
#[test]
fn random_trees_never_crash_the_server_or_leak() {
    let far = tmpfs_dir();
    for (seed, follow) in (1u64..=8).map(|s| (s, s > 6)) {
        let server = TestServer::start_with(|c| {
            c.list_directories = true;
            c.follow_symlinks = follow;
            if let Some(far) = &far {
                let base = far.path().join(format!("s{seed}"));
                make_fixture(&base.join("root"), &base.join("outside"));
                c.root = base.join("root");
            }
        });
        let root = match &far {
            Some(far) => far.path().join(format!("s{seed}/root")),
            None => server.root(),
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let entries = random_tree(&mut rng, &root, 60, far.is_some());
        let mut statuses = std::collections::BTreeMap::new();
        for rel in &entries {
            let url: Vec<String> = rel.split(|&b| b == b'/').map(encode).collect();
            let url = format!("/{}", url.join("/"));
            for target in [url.clone(), format!("{url}/")] {
                let r = server.get(&target);
                *statuses.entry(r.status).or_insert(0) += 1;
                // 400: a name with a backslash cannot be asked for.
                assert!(
                    matches!(r.status, 200 | 301 | 400 | 404),
                    "{target}: {}",
                    r.status
                );
                if !follow {
                    assert!(!r.body_text().contains(SECRET), "{target} leaked");
                }
                if r.status == 200 && target.ends_with('/') && r.body_text().contains("Index of") {
                    for link in hrefs(&r.body_text()) {
                        let followed = server.get(&format!("{target}{link}"));
                        assert!(
                            matches!(followed.status, 200 | 301),
                            "{target}{link} from a listing: {}",
                            followed.status
                        );
                        if !follow {
                            assert!(
                                !followed.body_text().contains(SECRET),
                                "{target}{link} leaked"
                            );
                        }
                    }
                }
            }
        }
        assert_eq!(
            server.get("/index.html").body_text(),
            INDEX,
            "seed {seed}: server gone"
        );
        eprintln!("seed {seed}, follow {follow}: {statuses:?}");
    }
}

/// One resource, one cache entry: `/f`, `/./f`, `/.//f` and `/%66` are the same file, and
/// only the canonical spelling is cached. Before, each spelling cached its own copy, so a
/// client could fill the cache (and push real entries out) with one file.
#[test]
fn other_spellings_of_a_path_do_not_fill_the_cache() {
    let dir = fixture();
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(dir.path().join("root/f.bin"), &body).expect("write");
    let (mut child, addr, _) = spawn_binary(dir.path(), &["--access-log", "off"]);
    let get = |target: &str| {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        send(&mut s, &format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"));
        read_response(&mut s, false)
    };
    assert_eq!(get("/f.bin").body, body);
    let before = rss_kib(child.id());
    // 300 spellings of 200 KB: 60 MB if each were cached.
    for i in 1..=300 {
        let target = format!("/{}f%2Ebin", "./".repeat(i));
        let r = get(&target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.body.len(), body.len(), "{target}");
    }
    let grown = rss_kib(child.id()).saturating_sub(before);
    sigterm(&child);
    child.wait().expect("wait");
    assert!(
        grown < 20 * 1024,
        "300 spellings of one file grew RSS by {grown} KiB"
    );
}

/// Every spelling of a listed directory gets the same page (one cache entry, rendered once:
/// see `static_files::cache_key`).
#[test]
fn other_spellings_of_a_listed_directory_get_the_same_page() {
    let server = TestServer::start_with(|c| c.list_directories = true);
    let page = server.get("/noindex/");
    assert_eq!(page.status, 200);
    for target in [
        "/noindex/./",
        "/noindex//",
        "/%6Eoindex/",
        "/sub/../noindex/",
    ] {
        let r = server.get(target);
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.body, page.body, "{target}");
    }
}

/// A file rewritten through a hard link in a directory the cache does not watch, with its
/// mtime put back, keeps inode, size and mtime: only its ctime tells. It is seen within
/// the cache's revalidation period all the same.
#[test]
fn a_rewrite_that_restores_the_mtime_is_still_seen() {
    let server = TestServer::start();
    let served = server.root().join("linked.txt");
    fs::write(&served, "old!").expect("write");
    let elsewhere = server.dir.path().join("outside/linked-too.txt");
    fs::hard_link(&served, &elsewhere).expect("hard link");
    assert_eq!(server.get("/linked.txt").body_text(), "old!");
    let mtime = fs::metadata(&served)
        .and_then(|m| m.modified())
        .expect("mtime");
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&elsewhere, "new!").expect("rewrite");
    fs::File::options()
        .write(true)
        .open(&elsewhere)
        .and_then(|f| f.set_modified(mtime))
        .expect("restore mtime");
    let seen = (0..30).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        server.get("/linked.txt").body_text() == "new!"
    });
    assert!(seen, "the old bytes were still served after 3 s");
}

/// A listing page stops at a byte bound as well as at the entry cap: long names would
/// otherwise make a page of tens of megabytes that every client which never reads holds
/// (its own copy, when the cache is off).
#[test]
fn listing_pages_are_bounded_in_bytes() {
    let server = TestServer::start_with(|c| {
        c.list_directories = true;
        c.cache_bytes = 0;
    });
    let dir = server.root().join("long");
    fs::create_dir(&dir).expect("mkdir");
    for i in 0..1000 {
        fs::write(dir.join(format!("{i:04}{}", "\"".repeat(240))), "").expect("write");
    }
    let r = server.get("/long/");
    assert_eq!(r.status, 200);
    let limit = readyserve::files::listing::MAX_PAGE_BYTES;
    assert!(r.body.len() < limit + 8 * 1024, "{} bytes", r.body.len());
    assert!(
        r.body_text().contains("only the first"),
        "not said to be cut"
    );
}
