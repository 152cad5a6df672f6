//! Tests against real outside programs: the README's deployment blocks (nginx over TCP and
//! over a Unix socket, HAProxy, the systemd units in `deploy/systemd/`) run as written
//! against real nginx, haproxy, systemd-analyze and systemd-socket-activate; promtool on the
//! metrics; goaccess on the access log; restarts behind HAProxy under wrk, without a failed
//! request. Those needing a program are `#[ignore]`d so that `cargo test` passes on a
//! machine without them; `.ci/run` installs the programs and runs them with
//! `cargo test -- --include-ignored`. The blocks are read out of README.md, so a README
//! that stops working fails here.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
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

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

/// The README's fenced blocks of one language (```nginx, ```haproxy, ```ini), in order.
fn readme_blocks(lang: &str) -> Vec<String> {
    readme()
        .split(&format!("```{lang}\n"))
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .map(str::to_string)
        .collect()
}

/// The README's text under a `### title` heading, up to the next heading.
fn readme_section(title: &str) -> String {
    let text = readme();
    let start = text
        .find(&format!("\n### {title}\n"))
        .unwrap_or_else(|| panic!("README section {title}"));
    let body = &text[start + title.len() + 6..];
    let end = body
        .find("\n### ")
        .or(body.find("\n## "))
        .unwrap_or(body.len());
    body[..end].to_string()
}

fn deploy_file(rel: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy")
            .join(rel),
    )
    .unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// `s` with `from` replaced, asserting that `from` was there: a README edit that removes the
/// spot a test rewrites must fail the test, not silently test something else.
fn swap(s: &str, from: &str, to: &str) -> String {
    assert!(s.contains(from), "expected {from:?} in:\n{s}");
    s.replace(from, to)
}

/// The README's nginx-over-TCP block, pointed at readyserve on `rs_port` and listening on
/// 127.0.0.1:`nginx_port`.
fn readme_tcp_nginx(rs_port: u16, nginx_port: u16) -> String {
    let block = &readme_blocks("nginx")[0];
    let http = swap(block, "127.0.0.1:7878", &format!("127.0.0.1:{rs_port}"));
    swap(
        &http,
        "listen 80;",
        &format!("listen 127.0.0.1:{nginx_port};"),
    )
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A user's uid (from /etc/passwd) or a group's gid (from /etc/group).
fn id_of(db: &str, name: &str) -> u32 {
    std::fs::read_to_string(db)
        .expect("read user database")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .unwrap_or_else(|| panic!("{name} in {db}"))
}

/// A fixture whose directory others may traverse: nginx's worker and readyserve run as
/// unprivileged users in some tests, and a temporary directory is 0700.
fn open_fixture() -> tempfile::TempDir {
    let dir = fixture();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A real nginx with the given `http { }` content, its prefix, pid file, temp paths and error
/// log all in `prefix`. As root, its worker runs as `www-data` (Debian's `user`) like a
/// packaged nginx; otherwise as this user. Stopped on drop by SIGTERM to its master's PID.
struct Nginx {
    master: Option<Child>,
    prefix: PathBuf,
}

impl Nginx {
    fn start(prefix: &Path, http: &str, ports: &[u16]) -> Nginx {
        std::fs::create_dir_all(prefix).expect("mkdir nginx prefix");
        let user = if is_root() { "user www-data;\n" } else { "" };
        let conf = format!(
            "{user}daemon off;\nmaster_process on;\nworker_processes 1;\npid {t}/nginx.pid;\n\
             error_log {t}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n access_log off;\n client_body_temp_path {t}/body;\n proxy_temp_path {t}/proxy;\n\
             fastcgi_temp_path {t}/fcgi;\n uwsgi_temp_path {t}/uwsgi;\n scgi_temp_path {t}/scgi;\n{http}\n}}\n",
            t = prefix.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let master = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(prefix)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (is it installed?)");
        let nginx = Nginx {
            master: Some(master),
            prefix: prefix.to_path_buf(),
        };
        for &port in ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "nginx does not listen on {port}:\n{}",
                    nginx.error_log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default()
    }

    /// The PIDs of the master's children (the worker), from /proc.
    fn workers(&self) -> Vec<u32> {
        let master = self.master.as_ref().map(Child::id).unwrap_or(0);
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let after = s.rsplit_once(')')?.1.split_whitespace().nth(1)?.to_string();
                        after.parse::<u32>().ok()
                    })
                    == Some(master)
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut master) = self.master.take() else {
            return;
        };
        // SIGTERM to the master: it stops its worker and exits. SIGKILL would orphan the
        // worker, so it is only the last resort.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(master.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = master.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = master.kill();
        let _ = master.wait();
    }
}

/// A TCP connection to 127.0.0.1:`port` from the source address 127.0.0.2, so that the
/// client is told apart from the proxy (127.0.0.1) in readyserve's access log.
fn connect_from_127_0_0_2(port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let src: SocketAddr = "127.0.0.2:0".parse().expect("addr");
    s.bind(&src.into()).expect("bind 127.0.0.2");
    let dst = SocketAddr::from(([127, 0, 0, 1], port));
    s.connect(&dst.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// The requests every proxy block must pass through, on one client connection from
/// 127.0.0.2: keep-alive, HEAD, pipelining, a client's own X-Forwarded-For, a large file,
/// and an HTTP/1.0 request without Host (proxies must not forward an empty Host: 400).
fn exercise_proxy(port: u16) {
    let mut s = connect_from_127_0_0_2(port);
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: site\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
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
    send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: site\r\n\r\n");
    assert!(read_response(&mut s, false).body == big_content());

    let mut old = connect_from_127_0_0_2(port);
    send(&mut old, "GET /index.html HTTP/1.0\r\n\r\n");
    let r = read_response(&mut old, false);
    assert_eq!(r.status, 200, "HTTP/1.0 without Host: {}", r.body_text());
    assert_eq!(r.body_text(), INDEX);
}

/// Checks the access log after [`exercise_proxy`]: 7 requests, every one attributed to the
/// client at 127.0.0.2 (read from X-Forwarded-For behind the trusted proxy), none to the
/// proxy itself and none to the address the client claimed on its own.
fn assert_client_logged(log: &str) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("\"HEAD / HTTP/1.0\""))
        .collect();
    assert_eq!(lines.len(), 7, "{log}");
    for line in lines {
        assert!(line.starts_with("127.0.0.2 - - ["), "{log}");
    }
}

/// readyserve's `--keep-alive-timeout` default, read from the code, not from the README.
fn our_keep_alive_default() -> u64 {
    readyserve::Config::default().keep_alive_timeout
}

/// An nginx block's upstream `keepalive_timeout`, in seconds.
fn upstream_keepalive_secs(block: &str) -> u64 {
    block
        .lines()
        .find_map(|l| l.trim().strip_prefix("keepalive_timeout "))
        .and_then(|v| v.trim_end_matches(';').trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("no upstream keepalive_timeout in:\n{block}"))
}

#[test]
fn readme_nginx_blocks_close_idle_upstream_connections_before_readyserve() {
    let blocks = readme_blocks("nginx");
    assert_eq!(blocks.len(), 2, "a TCP and a Unix-socket nginx block");
    for block in &blocks {
        let upstream = block.split("server {").next().expect("upstream part");
        let secs = upstream_keepalive_secs(upstream);
        assert!(
            secs < our_keep_alive_default(),
            "nginx's keepalive_timeout {secs}s must be below readyserve's {} s:\n{block}",
            our_keep_alive_default()
        );
        // $host falls back to server_name when a client sent no Host; without a
        // server_name, it would be empty and readyserve would answer 400.
        assert!(block.contains("proxy_set_header Host $host;"), "{block}");
        assert!(block.contains("server_name "), "{block}");
    }
}

#[test]
#[ignore = "needs nginx (apt-get install nginx-light)"]
fn readme_nginx_over_tcp() {
    let dir = open_fixture();
    let log = dir.path().join("access.log");
    let (rs_port, nginx_port) = (free_port(), free_port());
    let (rs, _, _) = spawn_server(
        Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{rs_port}"), "--root"])
            .arg(dir.path().join("root"))
            .arg("--access-log")
            .arg(&log)
            .args(["--trust-proxy", "127.0.0.1"])
            .stdout(Stdio::null()),
    );
    let mut rs = Killed(rs);
    let http = readme_tcp_nginx(rs_port, nginx_port);
    let nginx = Nginx::start(&dir.path().join("nginx"), &http, &[nginx_port]);

    exercise_proxy(nginx_port);

    drop(nginx);
    sigterm(&rs.0);
    assert_eq!(rs.0.wait().expect("wait").code(), Some(0));
    assert_client_logged(&std::fs::read_to_string(&log).expect("access log"));
}

/// One systemd setting of a unit file or drop-in (the last one wins), with `\` continuation
/// lines joined.
fn unit_setting(unit: &str, key: &str) -> String {
    unit.replace("\\\n", " ")
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("{key}= in:\n{unit}"))
        .to_string()
}

/// The Unix-socket setup as systemd and a packaged nginx would run it, with real
/// permissions: readyserve is started with the drop-in's ExecStart arguments as an
/// unprivileged user whose group is the drop-in's `Group=`, in a runtime directory made the
/// way `RuntimeDirectory=`/`RuntimeDirectoryMode=` make it; nginx's worker runs as
/// `www-data`. What is simulated: `nobody` stands in for the dynamic user, `setpriv` for
/// systemd's credential switch, a temporary directory for /run/readyserve.
#[test]
#[ignore = "needs nginx (apt-get install nginx-light), setpriv (util-linux) and root"]
fn readme_nginx_over_unix_socket_with_the_systemd_drop_in() {
    assert!(
        is_root(),
        "this test switches users: run it as root (CI does)"
    );
    let dropin = deploy_file("systemd/readyserve.service.d/unix-socket.conf");
    let group = unit_setting(&dropin, "Group");
    let runtime = unit_setting(&dropin, "RuntimeDirectory");
    let mode = u32::from_str_radix(&unit_setting(&dropin, "RuntimeDirectoryMode"), 8)
        .expect("RuntimeDirectoryMode is octal");
    let (nobody, gid, www_data) = (
        id_of("/etc/passwd", "nobody"),
        id_of("/etc/group", &group),
        id_of("/etc/passwd", "www-data"),
    );

    let dir = open_fixture();
    let run = dir.path().join("run").join(&runtime);
    let logs = dir.path().join("log");
    for (path, mode) in [(&run, mode), (&logs, 0o750)] {
        std::fs::create_dir_all(path).expect("mkdir");
        std::os::unix::fs::chown(path, Some(nobody), Some(gid)).expect("chown");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let exec = unit_setting(&dropin, "ExecStart");
    assert!(!exec.contains(['"', '\'']), "split below ignores quoting");
    let mut argv = exec.split_whitespace().map(|a| {
        a.replace("/usr/local/bin/readyserve", BIN)
            .replace(&format!("/run/{runtime}"), &run.display().to_string())
            .replace("/srv/www", &dir.path().join("root").display().to_string())
            .replace("/var/log/readyserve", &logs.display().to_string())
    });
    let program = argv.next().expect("ExecStart program");
    let (rs, listen, _) = spawn_server(
        Command::new("setpriv")
            .args(["--reuid", &nobody.to_string(), "--regid", &gid.to_string()])
            .args(["--clear-groups", "--"])
            .arg(program)
            .args(argv)
            .stdout(Stdio::null()),
    );
    let mut rs = Killed(rs);
    let sock = PathBuf::from(listen.strip_prefix("unix:").expect("a unix: listener"));
    let meta = std::fs::metadata(&sock).expect("socket file");
    assert_eq!(
        (meta.uid(), meta.gid(), format!("{:o}", meta.mode() & 0o777)),
        (nobody, gid, "660".to_string()),
        "socket owner, group (Group=) and mode (--unix-mode)"
    );

    let nginx_port = free_port();
    let block = &readme_blocks("nginx")[1];
    let http = swap(
        block,
        "unix:/run/readyserve/readyserve.sock",
        &format!("unix:{}", sock.display()),
    );
    let http = swap(
        &http,
        "listen 80;",
        &format!("listen 127.0.0.1:{nginx_port};"),
    );
    let nginx = Nginx::start(&dir.path().join("nginx"), &http, &[nginx_port]);
    let workers = nginx.workers();
    assert!(!workers.is_empty(), "nginx has a worker");
    for pid in &workers {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1)?.parse::<u32>().ok());
        assert_eq!(uid, Some(www_data), "nginx's worker runs as www-data");
    }

    exercise_proxy(nginx_port);
    let errors = nginx.error_log();
    drop(nginx);
    assert!(!errors.contains("Permission denied"), "{errors}");

    sigterm(&rs.0);
    assert_eq!(rs.0.wait().expect("wait").code(), Some(0));
    assert!(
        !sock.exists(),
        "the socket file is removed on clean shutdown"
    );
    let log = std::fs::read_to_string(logs.join("access.log")).expect("access log");
    assert_client_logged(&log);
}

/// GETs one Prometheus sample (the sum over all label sets of `name`) from the metrics
/// listener.
fn metric(addr: &str, name: &str, label: &str) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect metrics");
    send(
        &mut s,
        "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    read_response(&mut s, false)
        .body_text()
        .lines()
        .filter(|l| {
            (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
#[ignore = "needs haproxy (apt-get install haproxy)"]
fn readme_haproxy_config() {
    let section = readme_section("HAProxy");
    assert!(
        section.contains(
            "`--proxy-protocol --trust-proxy 127.0.0.1 --health-path /healthz\n--drain-delay 3`"
        ),
        "{section}"
    );

    let dir = fixture();
    let log = dir.path().join("access.log");
    let (rs_port, front, metrics) = (free_port(), free_port(), free_port());
    let metrics = format!("127.0.0.1:{metrics}");
    let (rs, _, _) = spawn_server(
        Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{rs_port}"), "--root"])
            .arg(dir.path().join("root"))
            .arg("--access-log")
            .arg(&log)
            .args(["--trust-proxy", "127.0.0.1", "--metrics-listen", &metrics])
            .args([
                "--proxy-protocol",
                "--health-path",
                "/healthz",
                "--drain-delay",
                "3",
            ])
            .stdout(Stdio::null()),
    );
    let mut rs = Killed(rs);
    let blocks = readme_blocks("haproxy");
    assert_eq!(blocks.len(), 1, "one HAProxy config");
    let conf = swap(&blocks[0], "bind :80", &format!("bind 127.0.0.1:{front}"));
    let conf = swap(&conf, "127.0.0.1:7878", &format!("127.0.0.1:{rs_port}"));
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, conf).expect("write haproxy.cfg");

    // "Works as written" includes: haproxy finds nothing to warn about (missing timeouts are
    // a warning).
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&conf_path)
        .output()
        .expect("run haproxy (is it installed?)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{said}");
    assert!(
        !said.contains("WARNING") && !said.contains("ALERT"),
        "{said}"
    );

    // -db: in the foreground, one process, stopped by its PID.
    let haproxy = Killed(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    wait_for_port(front);
    // The health check reaches readyserve and is answered 200.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&metrics, "readyserve_health_checks_total", "status=\"200\"") < 1.0 {
        assert!(Instant::now() < deadline, "no health check within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    exercise_proxy(front);

    // Ten keep-alive requests on one client connection. With PROXY headers, HAProxy keeps
    // server connections private to a client connection, so how many it opens is its own
    // business (HAProxy 2.6 opens one per request once earlier clients' private connections
    // sit idle); what must hold is that every request is answered and that no connection
    // it opens is refused.
    let mut s = connect_from_127_0_0_2(front);
    for _ in 0..10 {
        send(&mut s, "GET /index.html HTTP/1.1\r\nHost: site\r\n\r\n");
        assert_eq!(read_response(&mut s, false).status, 200);
    }
    assert_eq!(
        metric(&metrics, "readyserve_proxy_protocol_refused_total", ""),
        0.0
    );
    // Straight to readyserve, without a PROXY header: refused, unanswered.
    let mut direct = TcpStream::connect(("127.0.0.1", rs_port)).expect("connect");
    direct
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    send(
        &mut direct,
        "GET /index.html HTTP/1.1\r\nHost: site\r\n\r\n",
    );
    assert!(is_closed(&mut direct), "answered without a PROXY header");
    drop(s);

    drop(haproxy);
    sigterm(&rs.0);
    assert_eq!(rs.0.wait().expect("wait").code(), Some(0));
    // Health checks and scrapes are not logged; every line is a client's, and names it.
    let text = std::fs::read_to_string(&log).expect("access log");
    assert!(!text.contains("/healthz"), "{text}");
    assert_eq!(text.lines().count(), 17, "{text}");
    for line in text.lines() {
        assert!(line.starts_with("127.0.0.2 - - ["), "{text}");
    }
}

/// `curl --haproxy-protocol` sends a PROXY v1 header before its request: readyserve with
/// `--proxy-protocol` answers it, and plain curl (no header) gets nothing.
#[test]
#[ignore = "needs curl (apt-get install curl)"]
fn curl_haproxy_protocol() {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let port = free_port();
    let (rs, _, _) = spawn_server(
        Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--root"])
            .arg(dir.path().join("root"))
            .arg("--access-log")
            .arg(&log)
            .args(["--proxy-protocol", "--trust-proxy", "127.0.0.1"])
            .stdout(Stdio::null()),
    );
    let mut rs = Killed(rs);
    let url = format!("http://127.0.0.1:{port}/index.html");
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-s", "-S", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("run curl (is it installed?)")
    };
    let with = curl(&["--haproxy-protocol"]);
    let text = String::from_utf8_lossy(&with.stdout);
    assert!(with.status.success(), "{text}");
    assert!(text.ends_with("\n200"), "{text}");
    let without = curl(&[]);
    assert!(
        !without.status.success(),
        "a request without the header is answered"
    );
    sigterm(&rs.0);
    assert_eq!(rs.0.wait().expect("wait").code(), Some(0));
    let logged = std::fs::read_to_string(&log).expect("access log");
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(logged.starts_with("127.0.0.1 - - ["), "{logged}");
}

/// The keep-alive race, with short timeouts: nginx's upstream `keepalive_timeout` (1 s) below
/// readyserve's `--keep-alive-timeout` (2 s), as the README orders them. Requests come after
/// idle gaps just under and over each timeout; with the proxy closing first, none fails.
#[test]
#[ignore = "needs nginx (apt-get install nginx-light)"]
fn keep_alive_race_through_nginx_gives_no_errors() {
    let dir = open_fixture();
    let (rs_port, nginx_port, metrics) = (free_port(), free_port(), free_port());
    let metrics = format!("127.0.0.1:{metrics}");
    let (rs, _, _) = spawn_server(
        Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{rs_port}"), "--root"])
            .arg(dir.path().join("root"))
            .args(["--access-log", "off", "--keep-alive-timeout", "2"])
            .args(["--metrics-listen", &metrics])
            .stdout(Stdio::null()),
    );
    let mut rs = Killed(rs);
    let http = readme_tcp_nginx(rs_port, nginx_port);
    let http = swap(&http, "keepalive_timeout 60s;", "keepalive_timeout 1s;");
    let nginx = Nginx::start(&dir.path().join("nginx"), &http, &[nginx_port]);

    let get = || {
        let mut s = TcpStream::connect(("127.0.0.1", nginx_port)).expect("connect nginx");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        send(
            &mut s,
            "GET /index.html HTTP/1.1\r\nHost: site\r\nConnection: close\r\n\r\n",
        );
        try_read_response(&mut s, false).map_or(0, |r| r.status)
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get()); // back to back: the pooled connection is reused
    }
    for _ in 0..2 {
        for gap_ms in [900, 1100, 1900, 2100] {
            std::thread::sleep(Duration::from_millis(gap_ms));
            statuses.push(get());
        }
    }
    let accepted = metric(&metrics, "readyserve_accepted_connections_total", "");
    let errors = nginx.error_log();
    drop(nginx);
    sigterm(&rs.0);
    assert_eq!(rs.0.wait().expect("wait").code(), Some(0));
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}\n{errors}");
    // The test is about pooled connections: they must have been reused.
    assert!(
        (accepted as usize) < statuses.len(),
        "{accepted} connections for {} requests",
        statuses.len()
    );
}

#[test]
fn readme_shows_the_systemd_files_byte_for_byte() {
    let blocks = readme_blocks("ini");
    let mut shown = Vec::new();
    for block in &blocks {
        let first = block.lines().next().unwrap_or_default();
        if let Some(rel) = first.strip_prefix("# /etc/systemd/system/") {
            assert_eq!(block, &deploy_file(&format!("systemd/{rel}")), "{rel}");
            shown.push(rel.to_string());
        }
    }
    assert_eq!(
        shown,
        [
            "readyserve.service.d/unix-socket.conf",
            "readyserve.service",
            "readyserve.socket",
            "readyserve.service.d/socket-activation.conf",
        ]
    );
}

/// `systemd-analyze verify` on the shipped units, from temporary copies whose ExecStart
/// points at the built binary instead of /usr/local/bin (it must exist): the service with
/// the Unix-socket drop-in, and the socket unit with the service and the socket-activation
/// drop-in. Each setup gets its own directory, because every drop-in in
/// `readyserve.service.d/` would apply at once, and the two are alternatives.
#[test]
#[ignore = "needs systemd-analyze (apt-get install systemd)"]
fn systemd_units_pass_systemd_analyze_verify() {
    for (files, verify) in [
        (
            &[
                "readyserve.service",
                "readyserve.service.d/unix-socket.conf",
            ][..],
            &["readyserve.service"][..],
        ),
        (
            &[
                "readyserve.service",
                "readyserve.socket",
                "readyserve.service.d/socket-activation.conf",
            ],
            &["readyserve.socket", "readyserve.service"],
        ),
        // The template, verified as an instance of it.
        (&["readyserve@.service"], &["readyserve@1.service"]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let units = dir.path();
        std::fs::create_dir_all(units.join("readyserve.service.d")).expect("mkdir");
        for rel in files {
            let text = deploy_file(&format!("systemd/{rel}"));
            // The socket unit runs no program.
            let text = if rel.ends_with(".socket") {
                text
            } else {
                swap(&text, "/usr/local/bin/readyserve", BIN)
            };
            std::fs::write(units.join(rel), text).expect("write unit");
        }
        // SYSTEMD_UNIT_PATH (with the trailing ':' keeping the default path) makes
        // systemd-analyze load the drop-in next to the unit, and find the service that the
        // socket unit activates.
        // A unit with a file of its own is named by its path; a template's instance, by
        // its name, which systemd-analyze finds through SYSTEMD_UNIT_PATH.
        let named = |unit: &&str| match units.join(unit) {
            path if path.exists() => path.into_os_string(),
            _ => unit.into(),
        };
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .args(verify.iter().map(named))
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
            .output()
            .expect("run systemd-analyze (is it installed?)");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{files:?}: {said}");
        assert!(said.trim().is_empty(), "{files:?}: findings:\n{said}");
    }
}

/// The socket unit and its drop-in as systemd would run them, with `systemd-socket-activate`
/// in systemd's place: it listens on the socket unit's `ListenStream=` (a free port instead
/// of 7878) and, at the first connection, execs the drop-in's ExecStart (the built binary,
/// temporary root and log directory) with the socket on descriptor 3 and `LISTEN_PID` and
/// `LISTEN_FDS` set. A GET must get the file and be logged; SIGTERM ends it with status 0.
#[test]
#[ignore = "needs systemd-socket-activate (apt-get install systemd)"]
fn systemd_socket_activate_runs_the_socket_unit_and_drop_in() {
    let socket_unit = deploy_file("systemd/readyserve.socket");
    let dropin = deploy_file("systemd/readyserve.service.d/socket-activation.conf");
    let port = free_port();
    let listen = swap(
        &unit_setting(&socket_unit, "ListenStream"),
        "127.0.0.1:7878",
        &format!("127.0.0.1:{port}"),
    );
    let dir = open_fixture();
    let logs = dir.path().join("log");
    std::fs::create_dir_all(&logs).expect("mkdir log");
    let exec = unit_setting(&dropin, "ExecStart");
    assert!(exec.contains("--listen systemd"), "{exec}");
    assert!(!exec.contains(['"', '\'']), "split below ignores quoting");
    let argv: Vec<String> = exec
        .split_whitespace()
        .map(|a| {
            a.replace("/usr/local/bin/readyserve", BIN)
                .replace("/srv/www", &dir.path().join("root").display().to_string())
                .replace("/var/log/readyserve", &logs.display().to_string())
        })
        .collect();
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let child = Command::new("systemd-socket-activate")
        .args(["-l", &listen])
        .args(&argv)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start systemd-socket-activate (is it installed?)");
    let mut child = Killed(child);
    let said = || std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();

    // Bounded: systemd-socket-activate listens within moments, and the request waits in the
    // socket's queue until readyserve has started and accepts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => assert!(Instant::now() < deadline, "connect {port}: {e}\n{}", said()),
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    send(&mut s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = try_read_response(&mut s, false)
        .unwrap_or_else(|| panic!("no response through the activated socket:\n{}", said()));
    assert_eq!((r.status, r.body_text()), (200, INDEX.to_string()));
    drop(s);
    assert!(said().contains("from systemd"), "{}", said());

    // systemd-socket-activate exec'd readyserve in its own process: the PID is readyserve's.
    sigterm(&child.0);
    assert_eq!(child.0.wait().expect("wait").code(), Some(0), "{}", said());
    let log = std::fs::read_to_string(logs.join("access.log")).expect("access log");
    assert!(log.contains("\"GET /index.html HTTP/1.1\" 200"), "{log}");
}

#[test]
#[ignore = "needs promtool (apt-get install prometheus)"]
fn metrics_pass_promtool_check() {
    let dir = fixture();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (child, addr, _) = spawn_binary(
        dir.path(),
        &["--metrics-listen", &metrics_addr, "--access-log", "off"],
    );
    let mut child = Killed(child);
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
    sigterm(&child.0);
    let _ = child.0.wait();
}

#[test]
#[ignore = "needs goaccess (apt-get install goaccess)"]
fn goaccess_parses_the_access_log_with_no_failed_lines() {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let (child, addr, _) = spawn_binary(dir.path(), &["--access-log", &log.to_string_lossy()]);
    let mut child = Killed(child);
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
    sigterm(&child.0);
    assert_eq!(child.0.wait().expect("wait").code(), Some(0));
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

/// A server's status as HAProxy sees it (`UP`, `DOWN`, `UP 1/2`...), from `show stat` on
/// its stats socket: the `status` column of backend `readyserve`, row `server`.
fn haproxy_status(socket: &Path, server: &str) -> String {
    use std::io::Read;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return "no stats socket".into();
    };
    let mut csv = String::new();
    if s.write_all(b"show stat\n").is_err() || s.read_to_string(&mut csv).is_err() {
        return "no answer".into();
    }
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (Some(px), Some(sv), Some(status)) = (column("pxname"), column("svname"), column("status"))
    else {
        return format!("unexpected stats header: {header:?}");
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.len() > status && f[px] == "readyserve" && f[sv] == server)
        .map(|f| f[status].to_string())
        .unwrap_or_else(|| format!("no row for {server}"))
}

/// Waits (20 s at most) until HAProxy has `server` UP.
fn wait_until_up(socket: &Path, server: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = haproxy_status(socket, server);
        if status == "UP" {
            return;
        }
        assert!(Instant::now() < deadline, "{server} is {status} after 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What wrk reported.
#[derive(Debug)]
struct WrkReport {
    requests: u64,
    /// connect, read, write, timeout (all 0 when wrk prints no "Socket errors:" line).
    socket_errors: [u64; 4],
    non_2xx_3xx: u64,
}

/// Reads wrk's summary: "N requests in ...", "Socket errors: connect A, read B, write C,
/// timeout D" (printed only when one is non-zero) and "Non-2xx or 3xx responses: N" (same).
fn parse_wrk(out: &str) -> WrkReport {
    let requests = out
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{out}"));
    let mut socket_errors = [0; 4];
    if let Some(line) = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
    {
        for (i, part) in line.split(',').enumerate().take(4) {
            socket_errors[i] = part
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("socket errors {line:?}"));
        }
    }
    let non_2xx_3xx = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .map(|n| n.trim().parse().expect("non-2xx count"))
        .unwrap_or(0);
    WrkReport {
        requests,
        socket_errors,
        non_2xx_3xx,
    }
}

#[test]
fn wrk_output_is_parsed() {
    let clean = "Running 9s test @ http://127.0.0.1:1/\n  2 threads and 32 connections\n\
                 \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                 \x20 181034 requests in 9.00s, 52.14MB read\nRequests/sec:  20113.86\n";
    let r = parse_wrk(clean);
    assert_eq!(
        (r.requests, r.socket_errors, r.non_2xx_3xx),
        (181034, [0; 4], 0)
    );
    let bad = "  99 requests in 9.00s, 1MB read\n\
               \x20 Socket errors: connect 3, read 17, write 0, timeout 2\n\
               \x20 Non-2xx or 3xx responses: 41\n";
    let r = parse_wrk(bad);
    assert_eq!(
        (r.requests, r.socket_errors, r.non_2xx_3xx),
        (99, [3, 17, 0, 2], 41)
    );
}

/// Zero-downtime restarts, for real: two readyserve instances behind the README's HAProxy
/// block (checks every 200 ms, PROXY v2 on requests and checks), wrk for 9 s through
/// HAProxy, and while it runs each instance in turn gets SIGTERM (`--drain-delay 1`), exits,
/// and a new one starts on the same port. wrk must see no socket error and no non-2xx
/// response.
///
/// `READYSERVE_TEST_DRAIN_DELAY=0` runs the same with no drain delay, to see what the delay
/// is for (see the README).
#[test]
#[ignore = "needs haproxy and wrk (apt-get install haproxy wrk)"]
fn zero_downtime_restarts_behind_haproxy() {
    let drain = std::env::var("READYSERVE_TEST_DRAIN_DELAY").unwrap_or_else(|_| "1".into());
    let dir = fixture();
    let root = dir.path().join("root");
    let ports = [free_port(), free_port()];
    let front = free_port();
    let stats = dir.path().join("haproxy.sock");
    // Each generation of each instance logs to its own file, to show who served.
    let start = |i: usize, generation: u32| -> (Killed, PathBuf) {
        let log = dir.path().join(format!("rs{}-{generation}.log", i + 1));
        let (child, _, _stderr) = spawn_server(
            Command::new(BIN)
                .args(["--listen", &format!("127.0.0.1:{}", ports[i]), "--root"])
                .arg(&root)
                .arg("--access-log")
                .arg(&log)
                .args(["--health-path", "/healthz", "--drain-delay", &drain])
                .args(["--proxy-protocol", "--trust-proxy", "127.0.0.1"])
                .stdout(Stdio::null()),
        );
        (Killed(child), log)
    };
    let mut instances = [start(0, 1), start(1, 1)];

    let block = &readme_blocks("haproxy")[0];
    let conf = swap(block, "bind :80", &format!("bind 127.0.0.1:{front}"));
    let conf = swap(
        &conf,
        "    maxconn 4096\n",
        &format!(
            "    maxconn 4096\n    stats socket {} mode 600 level admin\n",
            stats.display()
        ),
    );
    let conf = swap(
        &conf,
        "default-server check inter 1s fall 1 rise 2 ",
        "default-server check inter 200ms fall 1 rise 2 ",
    );
    let conf = swap(
        &conf,
        "    server rs1 127.0.0.1:7878\n",
        &format!(
            "    server rs1 127.0.0.1:{}\n    server rs2 127.0.0.1:{}\n",
            ports[0], ports[1]
        ),
    );
    let conf_path = dir.path().join("haproxy.cfg");
    std::fs::write(&conf_path, &conf).expect("write haproxy.cfg");
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&conf_path)
        .output()
        .expect("run haproxy (is it installed?)");
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{said}\n{conf}");
    let _haproxy = Killed(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    wait_for_port(front);
    wait_until_up(&stats, "rs1");
    wait_until_up(&stats, "rs2");

    // wrk stops by itself after 9 s, whatever happens to the test.
    let mut wrk = Command::new("wrk")
        .args(["-t2", "-c32", "-d9s"])
        .arg(format!("http://127.0.0.1:{front}/index.html"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wrk (is it installed?)");
    std::thread::sleep(Duration::from_secs(1));
    let mut logs = Vec::new();
    for (i, instance) in instances.iter_mut().enumerate() {
        let name = format!("rs{}", i + 1);
        sigterm(&instance.0.0);
        // The balancer takes it out while it still serves (the drain delay), then it exits.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut down_while_running = false;
        let status = loop {
            if let Some(status) = instance.0.0.try_wait().expect("try_wait") {
                break status;
            }
            down_while_running |= haproxy_status(&stats, &name).starts_with("DOWN");
            assert!(
                Instant::now() < deadline,
                "{name} still running 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{name} exit");
        if drain != "0" {
            assert!(
                down_while_running,
                "HAProxy never saw {name} down before it exited"
            );
        }
        // The same port at once: the new listener must bind although connections of the old
        // one are in TIME_WAIT.
        let (new, log) = start(i, 2);
        logs.push(std::mem::replace(&mut instance.1, log));
        instance.0 = new;
        wait_until_up(&stats, &name);
    }
    assert!(
        wrk.try_wait().expect("try_wait").is_none(),
        "wrk ended before both restarts were done: the run proves nothing"
    );
    let out = wrk.wait_with_output().expect("wrk output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = parse_wrk(&text);
    println!("zero-downtime run (--drain-delay {drain}): {report:?}\n{text}");
    // Every generation of both instances served part of the load.
    logs.extend(instances.iter().map(|(_, log)| log.clone()));
    drop(instances);
    for log in &logs {
        let lines = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .count();
        println!("{}: {lines} requests", log.display());
        assert!(lines > 0, "{} served nothing", log.display());
    }
    assert_eq!(report.socket_errors, [0; 4], "socket errors:\n{text}");
    assert_eq!(report.non_2xx_3xx, 0, "non-2xx responses:\n{text}");
    assert!(report.requests > 0, "{text}");
}
/// A headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands in on its descriptor 3, answers out on 4, each a
/// JSON message ended by a NUL byte), so that a test can read a live page's DOM.
struct Browser {
    _child: Killed,
    to: std::process::ChildStdin,
    from: std::process::ChildStdout,
    buf: Vec<u8>,
    next_id: u64,
    session: String,
}

impl Browser {
    /// Opens `url` in a fresh profile under `dir`.
    fn open(url: &str, dir: &Path) -> Browser {
        // sh moves its stdin and stdout to descriptors 3 and 4 before exec'ing Chromium, so
        // the pipe needs no pre_exec; Chromium's own output goes nowhere.
        let profile = dir.join("chromium-profile");
        let script = "exec chromium --headless --no-sandbox --disable-gpu --disable-quic \
                      --no-first-run --disable-background-networking --disable-component-update \
                      --disable-sync --user-data-dir=\"$1\" --remote-debugging-pipe \"$0\" \
                      3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null";
        let mut child = Command::new("sh")
            .args(["-c", script, url])
            .arg(&profile)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start chromium (is it installed?)");
        let to = child.stdin.take().expect("stdin");
        let from = child.stdout.take().expect("stdout");
        let mut browser = Browser {
            _child: Killed(child),
            to,
            from,
            buf: Vec::new(),
            next_id: 0,
            session: String::new(),
        };
        let targets = browser.call("Target.getTargets", "{}");
        let page = targets
            .split("\"targetId\":\"")
            .skip(1)
            .find(|t| t.contains("\"type\":\"page\""))
            .and_then(|t| t.split('"').next())
            .expect("a page target")
            .to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            &format!("{{\"targetId\":\"{page}\",\"flatten\":true}}"),
        );
        browser.session = attached
            .split("\"sessionId\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("a session")
            .to_string();
        browser
    }

    /// Sends one command and returns its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: &str) -> String {
        use std::io::Read;
        self.next_id += 1;
        let id = self.next_id;
        let session = if self.session.is_empty() {
            String::new()
        } else {
            format!(",\"sessionId\":\"{}\"", self.session)
        };
        let msg = format!("{{\"id\":{id},\"method\":\"{method}\",\"params\":{params}{session}}}\0");
        self.to.write_all(msg.as_bytes()).expect("to chromium");
        let want = format!("{{\"id\":{id},");
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == 0) {
                let msg: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&msg[..end]).into_owned();
                if text.starts_with(&want) {
                    return text;
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.from.read(&mut chunk).expect("from chromium");
            assert!(n > 0, "chromium closed its pipe");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Evaluates a JavaScript expression that yields a string, in the page.
    fn eval(&mut self, expression: &str) -> String {
        let params = format!(
            "{{\"expression\":{},\"returnByValue\":true}}",
            json_string(expression)
        );
        let answer = self.call("Runtime.evaluate", &params);
        answer
            .split("\"value\":\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or_default()
            .to_string()
    }
}

/// `s` as a JSON string literal (enough for the expressions above: quotes and backslashes).
fn json_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The live view in a real browser: during a download that the client does not read, the
/// page at `/loop` on the metrics listener shows that connection in `Writing`, waiting for
/// room (`W`), beside the page's own event stream, which is a connection in the same slab.
#[test]
#[ignore = "needs chromium (apt-get install chromium)"]
fn the_live_view_shows_a_download_in_writing() {
    let dir = fixture();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (rs, addr, _) = spawn_server(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("root"))
            .args(["--access-log", "off", "--metrics-listen", &metrics])
            .stdout(Stdio::null()),
    );
    let _rs = Killed(rs);
    // The download: 8 MiB asked for, nothing read, so it waits for room in Writing.
    let mut download = TcpStream::connect(&addr).expect("connect");
    download
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let mut browser = Browser::open(&format!("http://{metrics}/loop"), dir.path());
    let rows = "Array.from(document.querySelectorAll('#slots tr')).map(r => \
                [r.dataset.token, r.dataset.state, r.children[2].textContent, \
                r.className].join(':')).join(',')";
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen = browser.eval(rows);
        let writing = seen.split(',').any(|r| r.ends_with(":Writing:W:"));
        let watcher = seen.split(',').any(|r| r.ends_with(":watcher"));
        if writing && watcher {
            break seen;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed it: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The summary is live too: turns are counted.
    let turns = browser.eval("document.getElementById('turn').textContent");
    assert!(
        turns.parse::<u64>().is_ok_and(|t| t > 0),
        "{turns:?} ({seen})"
    );
    drop(download);
}
