//! Tests against real outside programs: nginx as the reverse proxy in front of readyserve,
//! promtool on the metrics, goaccess on the access log. They are `#[ignore]`d so that
//! `cargo test` passes on a machine without them; `.ci/run` installs the programs and runs
//! them with `cargo test -- --include-ignored`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Kills a child process when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The ```nginx blocks of the README, in order: the deploy examples users copy.
fn readme_nginx_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    readme
        .split("```nginx\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .map(str::to_string)
        .collect()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs nginx (apt-get install nginx-light)"]
fn through_nginx_over_tcp_keepalive_and_unix_socket() {
    let dir = fixture();
    let root = dir.path().join("root");
    let sock = dir.path().join("rs.sock");
    let log = dir.path().join("access.log");
    let (tcp_port, nginx_tcp, nginx_unix) = (free_port(), free_port(), free_port());

    // Two readyserve processes: one on TCP, one on a Unix socket, both trusting nginx.
    let start = |listen: String, extra: &[&str]| {
        let (child, _, _) = spawn_server(
            Command::new(BIN)
                .args(["--listen", &listen, "--root"])
                .arg(&root)
                .arg("--access-log")
                .arg(&log)
                .args(extra)
                .stdout(Stdio::null()),
        );
        child
    };
    let tcp = start(
        format!("127.0.0.1:{tcp_port}"),
        &["--trust-proxy", "127.0.0.1"],
    );
    // 666: nginx's worker may run as another user than this test.
    let unix = start(
        format!("unix:{}", sock.display()),
        &["--trust-proxy", "unix", "--unix-mode", "666"],
    );

    let blocks = readme_nginx_blocks();
    assert_eq!(
        blocks.len(),
        2,
        "the README has a TCP and a Unix-socket nginx example"
    );
    let http = blocks
        .join("\n")
        .replace("127.0.0.1:7878", &format!("127.0.0.1:{tcp_port}"))
        .replace(
            "unix:/run/readyserve/readyserve.sock",
            &format!("unix:{}", sock.display()),
        )
        .replace("listen 80;", &format!("listen 127.0.0.1:{nginx_tcp};"))
        .replace("listen 81;", &format!("listen 127.0.0.1:{nginx_unix};"));
    let tmp = dir.path().join("nginx");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {t}/nginx.pid;\nerror_log stderr warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n\
         fastcgi_temp_path {t}/fcgi;\n uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n{http}\n}}\n",
        t = tmp.display()
    );
    let conf_path = tmp.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write conf");
    let nginx = Killed(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&tmp)
            .stdout(Stdio::null())
            .spawn()
            .expect("start nginx (is it installed?)"),
    );
    wait_for_port(nginx_tcp);
    wait_for_port(nginx_unix);

    for port in [nginx_tcp, nginx_unix] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect nginx");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        // Keep-alive, a HEAD, and three pipelined requests, one with a client-set XFF.
        send(&mut s, "GET /index.html HTTP/1.1\r\nHost: site\r\n\r\n");
        assert_eq!(
            read_response(&mut s, false).body_text(),
            INDEX,
            "port {port}"
        );
        send(&mut s, "HEAD /style.css HTTP/1.1\r\nHost: site\r\n\r\n");
        let head = read_response(&mut s, true);
        assert_eq!(
            (head.status, head.header("Content-Length")),
            (200, Some("20"))
        );
        send(
            &mut s,
            "GET /a%20b.txt HTTP/1.1\r\nHost: site\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n\
             GET /missing HTTP/1.1\r\nHost: site\r\n\r\n\
             GET /sub/inner.txt HTTP/1.1\r\nHost: site\r\n\r\n",
        );
        assert_eq!(read_response(&mut s, false).body_text(), "spaced\n");
        assert_eq!(read_response(&mut s, false).status, 404);
        assert_eq!(read_response(&mut s, false).body_text(), "inner\n");
        // A large file streams through intact.
        send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: site\r\n\r\n");
        assert!(read_response(&mut s, false).body == big_content());
    }
    drop(nginx);
    for child in [&tcp, &unix] {
        sigterm(child);
    }
    for mut child in [tcp, unix] {
        assert_eq!(child.wait().expect("wait").code(), Some(0));
    }
    let text = std::fs::read_to_string(&log).expect("access log");
    assert_eq!(text.lines().count(), 12, "{text}");
    // The TCP server trusts 127.0.0.1, which on loopback is nginx and this test alike, so
    // it believes the client's own claim. The Unix-socket server trusts only its peer
    // (nginx), so nginx's entry for this client, 127.0.0.1, is the client.
    assert_eq!(text.matches("203.0.113.9 - - [").count(), 1, "{text}");
    assert!(
        text.contains("\"HEAD /style.css HTTP/1.0\"")
            || text.contains("\"HEAD /style.css HTTP/1.1\""),
        "{text}"
    );
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn metrics_pass_promtool_check() {
    let dir = fixture();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (mut child, addr, _) = spawn_binary(
        dir.path(),
        &["--metrics-listen", &metrics_addr, "--access-log", "off"],
    );
    for path in ["/", "/nope", "/index.html"] {
        let mut s = TcpStream::connect(&addr).expect("connect");
        send(
            &mut s,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
        read_response(&mut s, false);
    }
    let mut s = TcpStream::connect(&metrics_addr).expect("connect metrics");
    send(
        &mut s,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let body = read_response(&mut s, false).body;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (is it installed?)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("feed");
    let out = promtool.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool failed:\n{report}");
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
    sigterm(&child);
    let _ = child.wait();
}

#[test]
#[ignore = "needs goaccess (apt-get install goaccess)"]
fn goaccess_parses_the_access_log_with_no_failed_lines() {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let (mut child, addr, _) = spawn_binary(dir.path(), &["--access-log", &log.to_string_lossy()]);
    let requests = [
        "GET /index.html HTTP/1.1\r\nHost: t\r\nUser-Agent: Mozilla/5.0 (X11) \"quoted\"\r\nReferer: http://ref/\r\n\r\n",
        "HEAD /style.css HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /missing%20file HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /sub HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /index.html HTTP/1.0\r\n\r\n",
        "BREW / HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for raw in requests {
        let mut s = TcpStream::connect(&addr).expect("connect");
        send(&mut s, raw);
        let _ = try_read_response(&mut s, raw.starts_with("HEAD"));
    }
    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let report = dir.path().join("report.json");
    let status = Command::new("goaccess")
        .arg(&log)
        .args(["--log-format=COMBINED", "--no-global-config", "-o"])
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run goaccess (is it installed?)");
    assert!(status.success());
    let json = std::fs::read_to_string(&report).expect("report");
    let number = |key: &str| -> u64 {
        let at = json
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} in report"));
        json[at + key.len() + 3..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    assert_eq!(
        number("total_requests"),
        requests.len() as u64,
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(number("failed_requests"), 0);
}
