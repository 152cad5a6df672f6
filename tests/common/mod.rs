//! Shared test support: a server on 127.0.0.1 port 0 over a fixture document root, and a
//! raw-socket client that reads responses byte-exact.
#![allow(dead_code)] // each test file uses its own part of this module

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use readyserve::config::AccessLogTarget;
use readyserve::{Config, Server, ServerHandle};

/// The exact bytes of the fixture's index.html.
pub const INDEX: &str = "<!DOCTYPE html>\n<title>fixture</title>\n<p>hello from the fixture</p>\n";

/// Size of the fixture's large file.
pub const BIG_LEN: usize = 8 * 1024 * 1024;

/// The large file's content: a pattern in which every offset is distinguishable.
pub fn big_content() -> Vec<u8> {
    (0..BIG_LEN as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A running server with its own temporary document root.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The temporary directory; the document root is `dir/root`, and `dir/outside` is a
    /// directory next to it that must never be reachable.
    pub dir: tempfile::TempDir,
    handle: ServerHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    /// A server over the standard fixture with default settings.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// A server over the standard fixture; `tweak` adjusts the configuration.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_full(tweak, |_| {})
    }

    /// A server over the standard fixture; `tweak` adjusts the configuration and `setup`
    /// the bound server (to install a handler, say).
    pub fn start_full(
        tweak: impl FnOnce(&mut Config),
        setup: impl FnOnce(&mut Server),
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        make_fixture(&root, &dir.path().join("outside"));
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            root,
            access_log: AccessLogTarget::Off,
            ..Config::default()
        };
        tweak(&mut config);
        let mut server = Server::bind(config).expect("bind");
        setup(&mut server);
        let addr = server.local_addr().expect("a TCP listener");
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            dir,
            handle,
            thread: Some(thread),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A new raw connection, with a read timeout so that a hung server fails the test.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// One GET on a fresh connection.
    pub fn get(&self, target: &str) -> Response {
        let mut s = self.connect();
        send(
            &mut s,
            &format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n"),
        );
        read_response(&mut s, false)
    }

    /// Stops the server and waits for its loop to return.
    pub fn stop(mut self) -> io::Result<()> {
        self.handle.stop();
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            let _ = thread.join();
        }
    }
}

/// The standard fixture:
/// root/index.html, root/style.css, root/a b.txt, root/big.bin (8 MiB), root/empty.txt,
/// root/sub/index.html, root/sub/inner.txt, root/noindex/file.txt, root/.hidden,
/// root/link-inside -> index.html, root/link-outside -> ../outside/secret.txt,
/// root/dir-outside -> ../outside, and outside/secret.txt.
pub fn make_fixture(root: &Path, outside: &Path) {
    use std::fs;
    fs::create_dir_all(root.join("sub")).expect("mkdir");
    fs::create_dir_all(root.join("noindex")).expect("mkdir");
    fs::create_dir_all(outside).expect("mkdir");
    fs::write(root.join("index.html"), INDEX).expect("write");
    fs::write(root.join("style.css"), "body { color: red }\n").expect("write");
    fs::write(root.join("a b.txt"), "spaced\n").expect("write");
    fs::write(root.join("empty.txt"), "").expect("write");
    fs::write(root.join("big.bin"), big_content()).expect("write");
    fs::write(root.join("sub/index.html"), "sub index\n").expect("write");
    fs::write(root.join("sub/inner.txt"), "inner\n").expect("write");
    fs::write(root.join("noindex/file.txt"), "file\n").expect("write");
    fs::write(root.join(".hidden"), "hidden\n").expect("write");
    fs::write(outside.join("secret.txt"), "SECRET OUTSIDE THE ROOT\n").expect("write");
    std::os::unix::fs::symlink("index.html", root.join("link-inside")).expect("symlink");
    std::os::unix::fs::symlink("../outside/secret.txt", root.join("link-outside"))
        .expect("symlink");
    std::os::unix::fs::symlink("../outside", root.join("dir-outside")).expect("symlink");
}

pub fn send(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).expect("send");
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// The status line and header lines, without the final empty line.
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name`, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One GET of `target` on a fresh connection to `addr` (as the binary printed it), with a
/// read timeout so that a hung server fails the test.
/// A port on 127.0.0.1 that was free a moment ago, for a listener the test names itself
/// (the metrics listener of a spawned binary, a front proxy).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn get_at(addr: &str, target: &str) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    send(&mut s, &format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n"));
    read_response(&mut s, false)
}

/// Reads one response. `head_only` is for HEAD requests (no body follows the head).
/// Panics if the connection closes or times out before the response is complete.
pub fn read_response(stream: &mut TcpStream, head_only: bool) -> Response {
    try_read_response(stream, head_only).expect("complete response")
}

/// Like [`read_response`], but `None` if the connection ends first.
pub fn try_read_response(stream: &mut TcpStream, head_only: bool) -> Option<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head[..head.len() - 4].to_vec()).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    assert!(
        status_line.starts_with("HTTP/1.1 "),
        "bad status line {status_line:?}"
    );
    let status = status_line[9..12].parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(": ").expect("header line");
            (n.to_string(), v.to_string())
        })
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().expect("content-length"));
    let mut body = Vec::new();
    if !head_only && status != 204 && status != 304 {
        let len = len.expect("every response has Content-Length");
        body.resize(len, 0);
        stream.read_exact(&mut body).ok()?;
    }
    Some(Response {
        status,
        head,
        headers,
        body,
    })
}

/// Whether the server has closed the connection: reading gives EOF (or a reset) within
/// a few seconds, with no further bytes.
pub fn is_closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
    }
}

/// Whether the connection is still open: nothing arrives within a short time.
pub fn is_open(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    let open = matches!(stream.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    open
}

/// The path of the built binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_readyserve");

/// A fixture directory (root/ and outside/) without a server.
pub fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    make_fixture(&dir.path().join("root"), &dir.path().join("outside"));
    dir
}

/// Starts `cmd` (the binary, with its arguments) and waits (10 s at most) for its
/// "serving ... on http://ADDR/" (or "on unix:PATH") line on stderr; returns the child and
/// ADDR (or `unix:PATH`). The rest of stderr is collected in the background and returned by
/// the join handle.
pub fn spawn_server(
    cmd: &mut std::process::Command,
) -> (std::process::Child, String, JoinHandle<String>) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    // Keep draining stderr so the child never blocks on a full pipe.
    let rest = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let addr = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("the server did not start listening within 10 s:\n{seen}");
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split(" on http://").nth(1) {
            break rest.trim_end_matches('/').to_string();
        }
        if let Some(rest) = line.split(" on unix:").nth(1) {
            break format!("unix:{rest}");
        }
    };
    (child, addr, rest)
}

/// Starts the binary on 127.0.0.1 port 0, serving the fixture in `dir` (see [`fixture`]),
/// with `args` added and stdout discarded. Returns what [`spawn_server`] returns.
pub fn spawn_binary(
    dir: &Path,
    args: &[&str],
) -> (std::process::Child, String, JoinHandle<String>) {
    spawn_server(
        std::process::Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(dir.join("root"))
            .args(args)
            .stdout(std::process::Stdio::null()),
    )
}

/// Runs the binary to completion with a time limit; returns (status code, stderr).
pub fn run_to_exit(cmd: &mut std::process::Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read");
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the binary did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM to a child process.
pub fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
}

/// A process's resident set size in KiB, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A process's CPU time (user + system) in clock ticks, from /proc.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, a)| a).expect("stat format");
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}
