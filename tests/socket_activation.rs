//! Inherited listening sockets: `--listen systemd` (socket activation, sd_listen_fds(3)) and
//! `--listen fd:N`, run on the real binary without systemd.
//!
//! How a test hands a socket over: std's `Command` can place a descriptor in a child only
//! as stdin, stdout or stderr, so the socket goes in as stdin and a `sh -c` in between moves
//! it: `exec "$0" "$@" 3<&0 0</dev/null` puts it on descriptor 3 (without close-on-exec, as
//! systemd does) and gives the server /dev/null as stdin. The same shell sets `LISTEN_PID`,
//! which must be the PID of the process that reads it, and so cannot be set from here before
//! the fork: `exec` keeps the shell's PID, so `LISTEN_PID=$$` on the exec line is the
//! server's own. No unsafe `pre_exec` is needed. The test against the real
//! `systemd-socket-activate` is in `tests/external.rs`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The command that starts the binary with `socket` on descriptor `fd`, the environment
/// `vars` set in the shell (as `NAME=value` words; `LISTEN_PID=$$` is the server's PID) and
/// `args` after the fixture's root.
fn with_socket(
    socket: impl Into<OwnedFd>,
    fd: u32,
    vars: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> Command {
    let redirect = format!("{fd}<&0");
    through_shell(Stdio::from(socket.into()), &redirect, vars, dir, args)
}

/// The binary started by `sh -c` with `stdin`, the shell redirections `redirect` and the
/// variables `vars` on its exec line; its own stdin is /dev/null.
fn through_shell(
    stdin: Stdio,
    redirect: &str,
    vars: &str,
    dir: &std::path::Path,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{vars} exec \"$0\" \"$@\" {redirect} 0</dev/null"))
        .arg(BIN)
        .args(["--access-log", "off", "--root"])
        .arg(dir.join("root"))
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null());
    cmd
}

/// What systemd does for a socket unit with one `ListenStream=`.
const SYSTEMD: &str = "LISTEN_PID=$$ LISTEN_FDS=1";

/// The open-file flags of `pid`'s descriptor `fd`, from /proc (octal there).
fn fd_flags(pid: u32, fd: u32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).expect("fdinfo");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("flags line");
    u32::from_str_radix(flags.trim(), 8).expect("octal flags")
}

/// `--listen systemd` serves on the TCP socket it is given: the start-up line names the
/// socket's address, a GET gets the file, the descriptor is made close-on-exec and
/// non-blocking, and SIGTERM still ends the server cleanly.
#[test]
fn systemd_passes_a_tcp_socket_and_it_serves() {
    let dir = fixture();
    let socket = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr").to_string();
    let (mut child, shown, stderr) = spawn_server(&mut with_socket(
        socket,
        3,
        SYSTEMD,
        dir.path(),
        &["--listen", "systemd"],
    ));
    assert_eq!(shown, addr, "the start-up line names the inherited socket");
    let r = get_at(&addr, "/index.html");
    assert_eq!((r.status, r.body_text()), (200, INDEX.to_string()));

    let flags = fd_flags(child.id(), 3);
    assert_ne!(
        flags & libc::O_CLOEXEC as u32,
        0,
        "close-on-exec: {flags:o}"
    );
    assert_ne!(
        flags & libc::O_NONBLOCK as u32,
        0,
        "non-blocking: {flags:o}"
    );

    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let log = stderr.join().expect("stderr");
    assert!(log.contains("from systemd"), "{log}");
}

/// `--listen fd:N` takes descriptor N, here an IPv6 socket on descriptor 5 (IPv4 where the
/// machine has no IPv6 loopback), and needs none of systemd's variables.
#[test]
fn fd_n_takes_an_inherited_socket() {
    let dir = fixture();
    let socket = TcpListener::bind("[::1]:0").or_else(|e| {
        eprintln!("no IPv6 loopback ({e}): testing fd:N over IPv4");
        TcpListener::bind("127.0.0.1:0")
    });
    let socket = socket.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let (mut child, shown, _) = spawn_server(&mut with_socket(
        socket,
        5,
        "",
        dir.path(),
        &["--listen", "fd:5"],
    ));
    assert_eq!(shown.parse::<SocketAddr>().ok(), Some(addr));
    let r = get_at(&addr.to_string(), "/index.html");
    assert_eq!((r.status, r.body_text()), (200, INDEX.to_string()));
    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

/// A Unix socket from systemd serves too, and its file is left where it is on shutdown:
/// readyserve did not make it (systemd removes its own when the socket unit stops).
#[test]
fn systemd_passes_a_unix_socket_and_its_file_is_left_alone() {
    let dir = fixture();
    let path = dir.path().join("activated.sock");
    let socket = UnixListener::bind(&path).expect("bind unix");
    let (mut child, shown, _) = spawn_server(&mut with_socket(
        socket,
        3,
        SYSTEMD,
        dir.path(),
        &["--listen", "systemd"],
    ));
    assert_eq!(shown, format!("unix:{}", path.display()));

    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut got = String::new();
    s.read_to_string(&mut got).expect("read");
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    assert!(got.ends_with(INDEX), "{got}");

    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    assert!(path.exists(), "the inherited socket's file was removed");
}

/// Every way the handed-over descriptor or the variables can be wrong ends the start with
/// status 1 and one error line that says what was found, not a panic.
#[test]
fn a_wrong_descriptor_or_environment_is_a_clear_start_up_error() {
    let dir = fixture();
    let listening = || TcpListener::bind("127.0.0.1:0").expect("bind");
    let file = || std::fs::File::open(dir.path().join("root/index.html")).expect("open");
    // A connection, not a listening socket: what a socket unit with Accept=yes passes.
    let peer = listening();
    let connection = TcpStream::connect(peer.local_addr().expect("addr")).expect("connect");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");

    let cases: Vec<(Command, &str)> = vec![
        (
            with_socket(
                listening(),
                3,
                "LISTEN_PID=1 LISTEN_FDS=1",
                dir.path(),
                &["--listen", "systemd"],
            ),
            "LISTEN_PID=1, but this process is",
        ),
        (
            with_socket(
                listening(),
                3,
                "LISTEN_FDS=1",
                dir.path(),
                &["--listen", "systemd"],
            ),
            "LISTEN_PID is not set",
        ),
        (
            with_socket(
                listening(),
                3,
                "LISTEN_PID=$$",
                dir.path(),
                &["--listen", "systemd"],
            ),
            "LISTEN_FDS is not set",
        ),
        (
            with_socket(
                listening(),
                3,
                "LISTEN_PID=$$ LISTEN_FDS=2",
                dir.path(),
                &["--listen", "systemd"],
            ),
            "LISTEN_FDS=2, and readyserve takes exactly one socket",
        ),
        (
            with_socket(
                listening(),
                3,
                "LISTEN_PID=$$ LISTEN_FDS=one",
                dir.path(),
                &["--listen", "systemd"],
            ),
            "LISTEN_FDS=\"one\" is not a number",
        ),
        (
            // Closed by the shell, whatever the test harness may have left open there.
            through_shell(Stdio::null(), "7<&-", "", dir.path(), &["--listen", "fd:7"]),
            "descriptor 7 is not open",
        ),
        (
            with_socket(file(), 3, SYSTEMD, dir.path(), &["--listen", "systemd"]),
            "descriptor 3 is a regular file, not a socket",
        ),
        (
            with_socket(connection, 3, SYSTEMD, dir.path(), &["--listen", "systemd"]),
            "descriptor 3 is a socket that is not listening",
        ),
        (
            with_socket(udp, 4, "", dir.path(), &["--listen", "fd:4"]),
            "descriptor 4 is not a stream socket",
        ),
    ];
    for (mut cmd, want) in cases {
        let (code, err) = run_to_exit(&mut cmd);
        assert_eq!(code, Some(1), "{want}: {err}");
        assert!(err.contains(want), "wanted {want:?} in:\n{err}");
        assert!(err.contains("cannot listen on "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
