//! Running behind a proxy: Unix-socket listener, trusted X-Forwarded-For, the access log
//! (formats, SIGHUP reopen), metrics, SO_REUSEPORT.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use readyserve::config::{AccessLogFormat, AccessLogTarget, ListenAddr, RealIpHeader};
use readyserve::{Config, Server};

fn base_config(dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        root: dir.join("root"),
        access_log: AccessLogTarget::Off,
        ..Config::default()
    }
}

/// A server in a thread; returns its handle and join handle.
fn spawn(
    config: Config,
) -> (
    Option<std::net::SocketAddr>,
    Option<std::net::SocketAddr>,
    readyserve::ServerHandle,
    std::thread::JoinHandle<std::io::Result<()>>,
) {
    let server = Server::bind(config).expect("bind");
    let (addr, metrics) = (server.local_addr(), server.metrics_addr());
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    (addr, metrics, handle, thread)
}

fn unix_get(path: &Path, request: &str) -> String {
    let mut s = UnixStream::connect(path).expect("connect unix socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

/// A socket file's permission bits.
fn socket_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777
}

/// `GET /index.html` over the Unix socket at `path`, with `Connection: close`.
fn unix_get_index(path: &Path) -> String {
    unix_get(
        path,
        "GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
}

#[test]
fn unix_socket_serving_mode_stale_file_and_cleanup() {
    let dir = fixture();
    let sock = dir.path().join("rs.sock");
    // A stale socket file, left by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("stale"));
    assert!(sock.exists());
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(sock.clone());
    config.unix_mode = 0o660;
    let (_, _, handle, thread) = spawn(config);
    assert_eq!(socket_mode(&sock), 0o660);
    let response = unix_get_index(&sock);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with(INDEX));
    // A second server may not steal a socket that is in use.
    let mut again = base_config(dir.path());
    again.listen = ListenAddr::Unix(sock.clone());
    assert!(Server::bind(again).is_err(), "bound over a live socket");
    handle.stop();
    thread.join().expect("thread").expect("run");
    assert!(
        !sock.exists(),
        "socket file left behind after a clean shutdown"
    );
}

/// The socket is bound in a private directory, given its mode, then linked into place: no
/// moment with the umask's mode at the real path, and nothing left behind.
#[test]
fn unix_socket_leaves_no_staging_directory() {
    let dir = fixture();
    let sock = dir.path().join("staged.sock");
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(sock.clone());
    config.unix_mode = 0o600;
    let (_, _, handle, thread) = spawn(config);
    assert_eq!(socket_mode(&sock), 0o600);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".readyserve-")),
        "{names:?}"
    );
    handle.stop();
    thread.join().expect("thread").expect("run");
}

/// A live listener whose queue is full is in use: the connect that tells would wait for
/// it forever (the start-up hung), and the file is not taken for stale.
#[test]
fn unix_socket_with_a_full_queue_is_in_use() {
    use socket2::{Domain, SockAddr, Socket, Type};
    let dir = fixture();
    let sock = dir.path().join("busy.sock");
    let live = std::os::unix::net::UnixListener::bind(&sock).expect("live");
    let inode =
        |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("meta"));
    let before = inode(&sock);
    let mut queued = Vec::new();
    loop {
        let s = Socket::new(Domain::UNIX, Type::STREAM, None).expect("socket");
        s.set_nonblocking(true).expect("nonblocking");
        match s.connect(&SockAddr::unix(&sock).expect("addr")) {
            Ok(()) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(queued.len() < 100_000, "the queue never filled");
    }
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(sock.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(match Server::bind(config) {
            Err(readyserve::server::StartError::Bind(_, e)) => Some(e.kind()),
            _ => None,
        });
    });
    let refused = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("binding waited on the busy listener");
    assert_eq!(refused, Some(std::io::ErrorKind::AddrInUse));
    assert_eq!(inode(&sock), before, "the live socket's file was replaced");
    drop(live);
}

/// A server removes its socket file when it stops only if the file is still the one it
/// made: here a second instance has made its own there since.
#[test]
fn unix_socket_file_of_another_instance_is_left_alone() {
    let dir = fixture();
    let sock = dir.path().join("shared.sock");
    let config = |sock: &Path| {
        let mut c = base_config(dir.path());
        c.listen = ListenAddr::Unix(sock.to_path_buf());
        c
    };
    let (_, _, first, first_thread) = spawn(config(&sock));
    std::fs::remove_file(&sock).expect("remove");
    let (_, _, second, second_thread) = spawn(config(&sock));
    first.stop();
    first_thread.join().expect("thread").expect("run");
    assert!(
        sock.exists(),
        "the first server removed the second's socket"
    );
    let response = unix_get_index(&sock);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    second.stop();
    second_thread.join().expect("thread").expect("run");
    assert!(
        !sock.exists(),
        "the second server left its own socket behind"
    );
}

/// A path too long for a socket address is refused at start-up: bound through a short
/// private name and linked into place, it used to start on a socket no client could reach.
#[test]
fn unix_socket_path_too_long_is_refused() {
    let dir = fixture();
    let long = dir.path().join("y".repeat(120));
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(long.clone());
    match Server::bind(config) {
        Err(readyserve::server::StartError::Bind(_, e)) => {
            assert!(e.to_string().contains("too long"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound a socket at a path no client can connect to"),
    }
    assert!(!long.exists());
}

/// Another instance in the middle of its bind holds a lock on the socket's directory: a
/// start-up waits for it, then finds that instance's live socket and refuses, instead of
/// having taken the path for free (or the other's socket for stale) meanwhile.
#[test]
fn unix_socket_bind_waits_for_another_instance_binding_in_the_directory() {
    let dir = fixture();
    let sock = dir.path().join("raced.sock");
    let lock = std::fs::File::open(dir.path()).expect("open the directory");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(sock.clone());
    let starting = std::thread::spawn(move || Server::bind(config).map(|_| ()));
    std::thread::sleep(Duration::from_millis(300));
    // The other instance's bind completes, then its lock goes.
    let live = std::os::unix::net::UnixListener::bind(&sock).expect("the other's socket");
    drop(lock);
    match starting.join().expect("thread") {
        Err(readyserve::server::StartError::Bind(_, e)) => {
            assert!(
                e.to_string().contains("another process is listening"),
                "{e}"
            )
        }
        Err(e) => panic!("{e}"),
        Ok(()) => panic!("bound while another instance was binding the same path"),
    }
    assert!(
        UnixStream::connect(&sock).is_ok(),
        "the other's socket is gone"
    );
    drop(live);
}

/// A lock on the directory that is never let go (an instance stopped mid-bind) ends the
/// wait with a clear error after two seconds, not with a race or a hang.
#[test]
fn unix_socket_bind_gives_up_on_a_lock_held_too_long() {
    let dir = fixture();
    let lock = std::fs::File::open(dir.path()).expect("open the directory");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(dir.path().join("stuck.sock"));
    match Server::bind(config) {
        Err(readyserve::server::StartError::Bind(_, e)) => {
            assert!(e.to_string().contains("held a lock"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound while the directory was locked"),
    }
    assert!(!dir.path().join("stuck.sock").exists());
    drop(lock);
}

/// A path that fits a socket address while the private name beside it does not: the
/// socket is bound in place instead (with a warning), given its mode, and serves.
#[test]
fn unix_socket_path_near_the_limit_binds_in_place() {
    let dir = fixture();
    // A deep directory and a short name: the private name adds about 30 bytes to the
    // directory, more than the name does.
    let base = dir.path().as_os_str().len() + 1;
    assert!(
        base < 80,
        "the temporary directory's path is too long for this test"
    );
    let deep = dir.path().join("d".repeat(98 - base));
    std::fs::create_dir(&deep).expect("mkdir");
    let near = deep.join("s.sock");
    assert_eq!(near.as_os_str().len(), 105);
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(near.clone());
    config.unix_mode = 0o600;
    let (_, _, handle, thread) = spawn(config);
    assert_eq!(socket_mode(&near), 0o600);
    let response = unix_get_index(&near);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    handle.stop();
    thread.join().expect("thread").expect("run");
    assert!(!near.exists(), "socket file left behind");
}

#[test]
fn unix_listen_refuses_to_delete_a_regular_file() {
    let dir = fixture();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "precious").expect("write");
    let mut config = base_config(dir.path());
    config.listen = ListenAddr::Unix(path.clone());
    assert!(Server::bind(config).is_err());
    assert_eq!(
        std::fs::read_to_string(&path).expect("still there"),
        "precious"
    );
}

/// Sends one request with `headers` through a server with `--trust-proxy trusted` and
/// `--real-ip-header header`, and returns the client address its access log recorded.
fn logged_client(trusted: &str, header: RealIpHeader, headers: &str) -> String {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let mut config = base_config(dir.path());
    config.access_log = AccessLogTarget::File(log.clone());
    config.real_ip_header = header;
    config.trust_proxy = if trusted.is_empty() {
        Vec::new()
    } else {
        trusted
            .split(',')
            .map(|t| t.parse().expect("cidr"))
            .collect()
    };
    let (addr, _, handle, thread) = spawn(config);
    let mut s = std::net::TcpStream::connect(addr.expect("tcp")).expect("connect");
    send(
        &mut s,
        &format!("GET / HTTP/1.1\r\nHost: t\r\n{headers}\r\n"),
    );
    read_response(&mut s, false);
    handle.stop();
    drop(s);
    thread.join().expect("thread").expect("run");
    let text = std::fs::read_to_string(&log).expect("log");
    text.split(' ').next().unwrap_or_default().to_string()
}

/// The wiring, end to end: the logic itself is `proxy.rs`'s unit table.
#[test]
fn real_ip_header_is_believed_only_from_trusted_peers() {
    use RealIpHeader::*;
    let cases: &[(&str, RealIpHeader, &str, &str)] = &[
        // No trusted proxies: headers are ignored.
        (
            "",
            XForwardedFor,
            "X-Forwarded-For: 6.6.6.6\r\n",
            "127.0.0.1",
        ),
        // The peer (127.0.0.1) is not in the trusted range: a spoof, ignored.
        (
            "10.0.0.0/8",
            XForwardedFor,
            "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 7.7.7.7\r\n",
            "127.0.0.1",
        ),
        // Trusted peer: the right-most untrusted entry is the client; the rest is claims.
        (
            "127.0.0.1",
            XForwardedFor,
            "X-Forwarded-For: 6.6.6.6, 1.2.3.4\r\n",
            "1.2.3.4",
        ),
        // Only the configured header is believed: behind a front that sets X-Real-IP, a
        // client's own X-Forwarded-For is nothing (it used to win).
        (
            "127.0.0.1",
            XRealIp,
            "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 5.5.5.5\r\n",
            "5.5.5.5",
        ),
        (
            "127.0.0.1",
            XRealIp,
            "X-Forwarded-For: 6.6.6.6\r\n",
            "127.0.0.1",
        ),
        (
            "127.0.0.1",
            XForwardedFor,
            "X-Real-IP: 5.5.5.5\r\n",
            "127.0.0.1",
        ),
        (
            "127.0.0.1",
            Forwarded,
            "X-Forwarded-For: 6.6.6.6\r\nForwarded: for=\"[2001:db8::1]:80\";proto=http\r\n",
            "2001:db8::1",
        ),
        ("127.0.0.1", XForwardedFor, "", "127.0.0.1"),
    ];
    for (trusted, header, headers, want) in cases {
        assert_eq!(
            logged_client(trusted, *header, headers),
            *want,
            "{trusted:?} {header:?} {headers:?}"
        );
    }
}

#[test]
fn unix_peer_logs_as_unix_or_trusted_forwarded_address() {
    for (trusted, want) in [(false, "unix:"), (true, "8.8.4.4")] {
        let dir = fixture();
        let log = dir.path().join("access.log");
        let sock = dir.path().join("s.sock");
        let mut config = base_config(dir.path());
        config.listen = ListenAddr::Unix(sock.clone());
        config.access_log = AccessLogTarget::File(log.clone());
        if trusted {
            config.trust_proxy = vec!["unix".parse().expect("unix")];
        }
        let (_, _, handle, thread) = spawn(config);
        unix_get(
            &sock,
            "GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 8.8.4.4\r\nConnection: close\r\n\r\n",
        );
        handle.stop();
        thread.join().expect("thread").expect("run");
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.starts_with(&format!("{want} - - [")), "{text}");
    }
}

#[test]
fn json_access_log_lines() {
    let dir = fixture();
    let log = dir.path().join("access.json");
    let mut config = base_config(dir.path());
    config.access_log = AccessLogTarget::File(log.clone());
    config.access_log_format = AccessLogFormat::Json;
    let (addr, _, handle, thread) = spawn(config);
    let mut s = std::net::TcpStream::connect(addr.expect("tcp")).expect("connect");
    send(
        &mut s,
        "GET /index.html HTTP/1.1\r\nHost: t\r\nUser-Agent: j\"son\r\n\r\n",
    );
    read_response(&mut s, false);
    handle.stop();
    drop(s);
    thread.join().expect("thread").expect("run");
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text.lines().next().expect("a line");
    for field in [
        "{\"remote_addr\":\"127.0.0.1\",\"time_local\":\"",
        "\"request\":\"GET /index.html HTTP/1.1\"",
        "\"status\":200",
        &format!("\"body_bytes_sent\":{}", INDEX.len()),
        "\"http_referer\":\"-\"",
        "\"http_user_agent\":\"j\\\"son\"",
        "\"request_time_us\":",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
    assert!(line.ends_with('}'));
}

#[test]
fn sighup_reopens_the_access_log_and_sigterm_flushes_it() {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let (mut child, addr, _stderr) =
        spawn_binary(dir.path(), &["--access-log", &log.to_string_lossy()]);
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        send(
            &mut s,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
        read_response(&mut s, false);
    };
    get("/before-rotation");
    std::thread::sleep(Duration::from_millis(200));
    std::fs::rename(&log, &rotated).expect("rotate");
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    std::thread::sleep(Duration::from_millis(300));
    get("/after-rotation");
    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let old = std::fs::read_to_string(&rotated).expect("rotated log");
    let new = std::fs::read_to_string(&log).expect("new log");
    assert!(
        old.contains("/before-rotation") && !old.contains("/after-rotation"),
        "{old}"
    );
    assert!(
        new.contains("/after-rotation") && !new.contains("/before-rotation"),
        "{new}"
    );
}

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
    send(&mut s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    r.body_text()
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} not in\n{text}"))
}

#[test]
fn metrics_counters_move_after_requests() {
    let dir = fixture();
    let mut config = base_config(dir.path());
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.header_timeout = 1;
    let (addr, metrics, handle, thread) = spawn(config);
    let (addr, metrics) = (addr.expect("tcp"), metrics.expect("metrics listener"));
    let before = scrape(metrics);
    let ok = "readyserve_requests_total{method=\"GET\",class=\"2xx\"}";
    let missing = "readyserve_requests_total{method=\"GET\",class=\"4xx\"}";
    let rejected = "readyserve_rejected_requests_total{reason=\"not_implemented\"}";
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    for _ in 0..3 {
        send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
        read_response(&mut s, false);
    }
    send(&mut s, "GET /nope HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&mut s, false);
    let mut bad = std::net::TcpStream::connect(addr).expect("connect");
    send(&mut bad, "BREW / HTTP/1.1\r\nHost: t\r\n\r\n");
    read_response(&mut bad, false);
    // A silent connection times out.
    let mut silent = std::net::TcpStream::connect(addr).expect("connect");
    assert!(is_closed(&mut silent));
    let after = scrape(metrics);
    assert_eq!(value(&after, ok) - value(&before, ok), 3);
    assert_eq!(value(&after, missing) - value(&before, missing), 1);
    assert_eq!(value(&after, rejected) - value(&before, rejected), 1);
    assert!(value(&after, "readyserve_accepted_connections_total") >= 3);
    assert!(value(&after, "readyserve_response_body_bytes_total") >= 3 * INDEX.len() as u64);
    assert!(value(&after, "readyserve_timeouts_total{kind=\"header\"}") >= 1);
    assert!(value(&after, "readyserve_request_duration_seconds_count") >= 4);
    assert!(
        value(&after, "readyserve_loop_iterations_total")
            > value(&before, "readyserve_loop_iterations_total")
    );
    assert!(value(&after, "readyserve_open_connections") >= 1);
    // Only /metrics is served there.
    let mut s2 = std::net::TcpStream::connect(metrics).expect("connect");
    send(&mut s2, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s2, false).status, 404);
    handle.stop();
    drop((s, s2, bad));
    thread.join().expect("thread").expect("run");
}

#[test]
fn two_reuse_port_processes_share_one_port() {
    let dir = fixture();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let start = || {
        spawn_server(
            Command::new(BIN)
                .args([
                    "--listen",
                    &listen,
                    "--reuse-port",
                    "--access-log",
                    "off",
                    "--root",
                ])
                .arg(dir.path().join("root"))
                .stdout(Stdio::null()),
        )
    };
    let (mut a, addr_a, _ea) = start();
    let (mut b, addr_b, _eb) = start();
    assert_eq!(addr_a, addr_b);
    for _ in 0..20 {
        let mut s = std::net::TcpStream::connect(&addr_a).expect("connect");
        send(
            &mut s,
            "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(read_response(&mut s, false).status, 200);
    }
    // Without --reuse-port, a third cannot bind.
    let third = Command::new(BIN)
        .args(["--listen", &listen, "--access-log", "off", "--root"])
        .arg(dir.path().join("root"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert_eq!(third.code(), Some(1));
    sigterm(&a);
    sigterm(&b);
    assert_eq!(a.wait().expect("wait").code(), Some(0));
    assert_eq!(b.wait().expect("wait").code(), Some(0));
}

#[test]
fn a_failing_access_log_is_reported_once_and_serving_goes_on() {
    let dir = fixture();
    // /dev/full accepts the open and fails every write with ENOSPC: a full disk.
    let (mut child, addr, stderr) = spawn_binary(dir.path(), &["--access-log", "/dev/full"]);
    for _ in 0..50 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        send(
            &mut s,
            "GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    }
    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let log = stderr.join().expect("stderr");
    assert_eq!(log.matches("access log write failed").count(), 1, "{log}");
}

/// Metrics connections neither use up the site's `--max-connections` nor pile up without
/// bound: the metrics listener has a small cap of its own. At the cap, the connection
/// that has waited longest for nothing (idle after a scrape, or silent since its connect)
/// makes room for a new one, or failing that the one whose request has been coming in
/// longest, so neither idle connections nor a slowloris can lock health checks out.
#[test]
fn metrics_connections_have_their_own_cap() {
    let dir = fixture();
    let mut config = base_config(dir.path());
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    config.max_connections = 2;
    // Longer than any read below waits, so no connection times out during the test.
    config.header_timeout = 60;
    config.keep_alive_timeout = 60;
    let (addr, metrics, handle, thread) = spawn(config);
    let (addr, metrics) = (addr.expect("tcp"), metrics.expect("metrics listener"));
    let cap = readyserve::server::MAX_METRICS_CONNECTIONS;
    let connect = || {
        let s = std::net::TcpStream::connect(metrics).expect("connect metrics");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    };
    let scrape_on = |s: &mut std::net::TcpStream| {
        send(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        try_read_response(s, false).map(|r| r.status)
    };

    // A slowloris: every connection has half a request in, sent in turn. A scraper still
    // gets in, and the slot it takes is the one whose request has been coming in longest.
    let mut slow: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..cap {
        let mut s = connect();
        send(&mut s, "GET /healthz HTTP/1.1\r\n");
        slow.push(s);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut scraper = connect();
    assert_eq!(scrape_on(&mut scraper), Some(200), "a slowloris locks out");
    assert!(is_closed(&mut slow[0]), "the oldest half request was kept");
    for s in slow[1..].iter_mut() {
        assert!(is_open(s), "a newer half request was closed first");
    }
    drop((slow, scraper));

    // Idle: every connection has been answered and waits. New ones get in, each closing
    // one of them, and the count stays at the cap.
    // (The busy ones just dropped are freed when the server reads their close: until then a
    // new connection may find the cap busy and be closed, so each is tried until it is in.)
    let mut idle: Vec<std::net::TcpStream> = (0..cap)
        .map(|i| {
            (0..100)
                .find_map(|_| {
                    let mut s = connect();
                    let answered = scrape_on(&mut s) == Some(200);
                    if !answered {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    answered.then_some(s)
                })
                .unwrap_or_else(|| panic!("idle connection {i} never got in"))
        })
        .collect();
    for round in 0..3 {
        let mut s = connect();
        assert_eq!(scrape_on(&mut s), Some(200), "round {round}: locked out");
        idle.push(s); // idle in its turn, the newest
    }
    // The server closed them before it answered the new ones: their FIN is here already.
    let mut closed = Vec::new();
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        if matches!(s.read(&mut byte), Ok(0)) {
            closed.push(i);
        }
    }
    // One for each new one, the longest idle first; the rest are open.
    assert_eq!(closed, [0, 1, 2]);

    // The site still has both of its connections.
    let mut site: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
        .collect();
    for s in site.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        send(s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = try_read_response(s, false).expect("the site is locked out");
        assert_eq!(r.status, 200);
    }
    let mut s = connect();
    send(&mut s, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let text = try_read_response(&mut s, false).expect("a scrape");
    assert_eq!(text.status, 200);
    assert_eq!(value(&text.body_text(), "readyserve_open_connections"), 2);
    handle.stop();
    drop((idle, site, s));
    thread.join().expect("thread").expect("run");
}

/// Live views (`/loop/events`) have no deadline, so they have a cap of their own, below
/// the metrics listener's: past it a new one is 503, and health checks and scrapes still
/// get in however many watchers stay. (Before the cap, 16 watchers shut out `/healthz`.)
#[test]
fn live_views_cannot_crowd_out_health_checks() {
    let dir = fixture();
    let mut config = base_config(dir.path());
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let (_, metrics, handle, thread) = spawn(config);
    let metrics = metrics.expect("metrics listener");
    let watch = || {
        let mut s = std::net::TcpStream::connect(metrics).expect("connect metrics");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        send(&mut s, "GET /loop/events HTTP/1.1\r\nHost: t\r\n\r\n");
        s
    };
    let mut watchers = Vec::new();
    for _ in 0..readyserve::ops::live::MAX_WATCHERS {
        let mut s = watch();
        assert_eq!(read_response(&mut s, true).status, 200);
        watchers.push(s);
    }
    let mut one_more = watch();
    let r = read_response(&mut one_more, false);
    assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")));
    for _ in 0..readyserve::server::MAX_METRICS_CONNECTIONS {
        let mut s = std::net::TcpStream::connect(metrics).expect("connect metrics");
        send(
            &mut s,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(read_response(&mut s, false).status, 200);
    }
    // The watchers' streams are still going: snapshots keep coming.
    for s in watchers.iter_mut() {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("data: {") {
            let n = s.read(&mut buf).expect("a live view went quiet");
            assert!(n > 0, "a live view was closed");
            seen.extend_from_slice(&buf[..n]);
        }
    }
    handle.stop();
    drop(watchers);
    thread.join().expect("thread").expect("run");
}

/// The metrics listener decides keep-alive as the site does: a request that says
/// `Expect: 100-continue` is answered before its body, so the connection closes after the
/// answer (the body's bytes could not be told from a next request).
#[test]
fn metrics_honour_expect_continue_like_the_site() {
    let dir = fixture();
    let mut config = base_config(dir.path());
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let (_, metrics, handle, thread) = spawn(config);
    let mut s = std::net::TcpStream::connect(metrics.expect("metrics")).expect("connect");
    let expect = "GET /metrics HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n";
    send(&mut s, &format!("{expect}Content-Length: 5\r\n\r\n"));
    let r = read_response(&mut s, false);
    assert_eq!((r.status, r.header("Connection")), (200, Some("close")));
    assert!(is_closed(&mut s), "open after an answer that said close");
    handle.stop();
    thread.join().expect("join").expect("run");
}

/// The access log is the site's: a rejected request is logged with the body bytes its error
/// page really had, and scrapes of the metrics listener are not logged at all.
#[test]
fn access_log_has_error_bytes_and_no_scrapes() {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let mut config = base_config(dir.path());
    config.access_log = AccessLogTarget::File(log.clone());
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let (addr, metrics, handle, thread) = spawn(config);
    let (addr, metrics) = (addr.expect("tcp"), metrics.expect("metrics listener"));
    scrape(metrics);
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    send(&mut s, "GET  / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 400);
    // A head that parses but is refused (413) keeps its Referer and User-Agent in the log.
    let mut big = std::net::TcpStream::connect(addr).expect("connect");
    send(
        &mut big,
        "PUT /x HTTP/1.1\r\nHost: t\r\nUser-Agent: ua/1\r\nReferer: http://r/\r\n\
         Content-Length: 99999999999\r\n\r\n",
    );
    assert_eq!(read_response(&mut big, false).status, 413);
    handle.stop();
    drop((s, big));
    thread.join().expect("thread").expect("run");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains("/metrics"), "a scrape was logged:\n{text}");
    let line = text.lines().next().expect("the 400 is logged");
    let want = format!("\"GET  / HTTP/1.1\" 400 {} ", r.body.len());
    assert!(line.contains(&want), "{line}");
    assert!(line.contains("\"-\" \"-\""), "{line}");
    let line = text.lines().nth(1).expect("the 413 is logged");
    assert!(
        line.contains("\"PUT /x HTTP/1.1\" 413 ") && line.contains("\"http://r/\" \"ua/1\""),
        "{line}"
    );
}

/// A request that times out is answered 408 and logged like any other answer, with what
/// arrived of its request line.
#[test]
fn a_header_timeout_gets_an_access_log_line() {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let mut config = base_config(dir.path());
    config.access_log = AccessLogTarget::File(log.clone());
    config.header_timeout = 1;
    let (addr, _, handle, thread) = spawn(config);
    let mut s = std::net::TcpStream::connect(addr.expect("tcp")).expect("connect");
    send(&mut s, "GET /slow HTTP/1.1\r\nHost: t\r\n");
    let r = read_response(&mut s, false);
    assert_eq!(r.status, 408);
    handle.stop();
    drop(s);
    thread.join().expect("thread").expect("run");
    let text = std::fs::read_to_string(&log).expect("log");
    let want = format!("\"GET /slow HTTP/1.1\" 408 {} ", r.body.len());
    assert!(text.contains(&want), "{text}");
    // Its time is the time the client took: at least the header timeout, not 0.
    let line = text.lines().find(|l| l.contains(&want)).expect("the line");
    let micros: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|m| m.parse().ok())
        .expect("µs");
    assert!(micros >= 900_000, "{line}");
}

/// The access log tells what really went out, when it went out: a download abandoned after
/// 1 MiB is logged with the bytes sent, not the file's size, and a slow reader's line has
/// its real duration (the time until the last byte was sent, not until it was queued).
#[test]
fn access_log_counts_bytes_and_time_as_sent() {
    const SIZE: u64 = 32 * 1024 * 1024;
    const PAUSE: Duration = Duration::from_millis(600);
    let dir = fixture();
    let log = dir.path().join("access.log");
    // Sparse: 32 MiB of zeros that cost no disk.
    let big = std::fs::File::create(dir.path().join("root/big.bin")).expect("create");
    big.set_len(SIZE).expect("set_len");
    let mut config = base_config(dir.path());
    config.access_log = AccessLogTarget::File(log.clone());
    let (addr, _, handle, thread) = spawn(config);
    let addr = addr.expect("tcp");
    // A small receive buffer (which also turns off its autotuning), so that the kernel
    // cannot take the whole file off the server's hands while the client does not read.
    let connect = || {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_recv_buffer_size(64 * 1024).expect("rcvbuf");
        socket.connect(&addr.into()).expect("connect");
        let mut s: std::net::TcpStream = socket.into();
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        s
    };
    let mut abandoned = connect();
    let mut got = vec![0; 1024 * 1024];
    abandoned.read_exact(&mut got).expect("the first MiB");
    drop(abandoned);

    let mut slow = connect();
    std::thread::sleep(PAUSE);
    let r = read_response(&mut slow, false);
    assert_eq!(r.body.len() as u64, SIZE);

    handle.stop();
    thread.join().expect("thread").expect("run");
    let text = std::fs::read_to_string(&log).expect("log");
    let fields = |line: &str| -> (u64, u64) {
        let mut it = line.rsplit(' ');
        let micros = it.next().and_then(|f| f.parse().ok()).expect("micros");
        // ... "GET /big.bin HTTP/1.1" 200 BYTES "-" "-" MICROS
        let bytes = line
            .split("\" 200 ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|b| b.parse().ok())
            .expect("bytes");
        (bytes, micros)
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    // The abandoned download ended first: its line comes first.
    let (bytes, _) = fields(lines[0]);
    assert!(
        (1024 * 1024 - 512..SIZE / 2).contains(&bytes),
        "abandoned after 1 MiB, logged with {bytes} bytes:\n{text}"
    );
    let (bytes, micros) = fields(lines[1]);
    assert_eq!(bytes, SIZE, "{text}");
    assert!(
        micros >= PAUSE.as_micros() as u64,
        "the slow reader took at least {PAUSE:?}, logged {micros} µs:\n{text}"
    );
}
