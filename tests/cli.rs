//! The binary: flags, environment variables, exit codes, the start-up line, the access log
//! and SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use common::*;

#[test]
fn bad_flag_values_exit_2_with_one_line() {
    for args in [
        &["--listen", "not-an-address"][..],
        &["--max-header-bytes", "lots"],
        &["--log-level", "shouty"],
        &["--frobnicate"],
        &["--header-timeout", "18446744073709551615"],
        &["--keep-alive-timeout", "86401"],
        &["--shutdown-grace", "99999999999"],
    ] {
        let (code, err) = run_to_exit(Command::new(BIN).args(args));
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?} printed: {err}");
        assert!(err.starts_with("readyserve: error:"), "{err}");
    }
}

#[test]
fn bad_env_value_exits_2() {
    let (code, err) = run_to_exit(Command::new(BIN).env("READYSERVE_LISTEN", "nope"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("nope"), "{err}");
    // An on/off variable's error lists the words it takes.
    let (code, err) = run_to_exit(Command::new(BIN).env("READYSERVE_TRACE", "maybe"));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("READYSERVE_TRACE") && err.contains("yes/no"),
        "{err}"
    );
}

#[test]
fn missing_root_exits_1_with_a_clear_message() {
    let (code, err) = run_to_exit(Command::new(BIN).args([
        "--listen",
        "127.0.0.1:0",
        "--root",
        "/no/such/dir/here",
    ]));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("/no/such/dir/here"), "{err}");
}

#[test]
fn address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = fixture();
    let (code, err) = run_to_exit(
        Command::new(BIN)
            .args(["--listen", &addr, "--root"])
            .arg(dir.path().join("root")),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn env_variables_configure_the_server() {
    let dir = fixture();
    let mut child = Command::new(BIN)
        .env("READYSERVE_LISTEN", "127.0.0.1:0")
        .env("READYSERVE_ROOT", dir.path().join("root"))
        .env("READYSERVE_ACCESS_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = lines
        .find_map(|l| l.ok().filter(|l| l.contains("on http://")))
        .expect("start-up line");
    let addr = line
        .split("on http://")
        .nth(1)
        .expect("addr")
        .trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    send(&mut s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).body_text(), INDEX);
    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

#[test]
fn access_log_on_stdout_in_combined_format_and_sigterm_exits_0() {
    let dir = fixture();
    let (mut child, addr, _stderr) = spawn_server(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("root"))
            .stdout(Stdio::piped()),
    );
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    send(
        &mut s,
        "GET /index.html HTTP/1.1\r\nHost: t\r\nUser-Agent: tester/1.0\r\nReferer: http://r/\r\n\r\n",
    );
    let r = read_response(&mut s, false);
    drop(s);
    sigterm(&child);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let line = out.lines().next().expect("one access-log line");
    // 127.0.0.1 - - [24/Nov/2026:17:24:34 +0000] "GET /index.html HTTP/1.1" 200 71 "http://r/" "tester/1.0" 123
    let (ip, rest) = line.split_once(" - - [").expect("ip - - [");
    assert_eq!(ip, "127.0.0.1");
    let (time, rest) = rest.split_once("] ").expect("time");
    assert_eq!(time.len(), "24/Nov/2026:17:24:34 +0000".len(), "{time}");
    assert!(time.ends_with(" +0000"));
    let want = format!(
        "\"GET /index.html HTTP/1.1\" 200 {} \"http://r/\" \"tester/1.0\" ",
        r.body.len()
    );
    assert!(rest.starts_with(&want), "{rest}");
    let micros = &rest[want.len()..];
    assert!(micros.parse::<u64>().is_ok(), "request time {micros:?}");
}

/// Boolean variables take what people type: 1/0, true/false, yes/no, on/off.
#[test]
fn boolean_variables_accept_the_usual_words() {
    let dir = fixture();
    std::fs::write(dir.path().join("root/.visible-when-allowed"), "dot").expect("dotfile");
    for (value, served) in [
        ("1", true),
        ("true", true),
        ("yes", true),
        ("on", true),
        ("0", false),
        ("false", false),
        ("no", false),
        ("off", false),
    ] {
        let (mut child, addr, _) = spawn_server(
            Command::new(BIN)
                .env("READYSERVE_SERVE_DOTFILES", value)
                .args(["--listen", "127.0.0.1:0", "--access-log", "off", "--root"])
                .arg(dir.path().join("root")),
        );
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        send(
            &mut s,
            "GET /.visible-when-allowed HTTP/1.1\r\nHost: t\r\n\r\n",
        );
        let status = read_response(&mut s, false).status;
        assert_eq!(status, if served { 200 } else { 404 }, "{value}");
        sigterm(&child);
        child.wait().expect("wait");
    }
}

/// An error names the variable when the variable gave the bad value, and lists the accepted
/// values when there is a list; flags that cannot go together are refused.
#[test]
fn errors_say_where_the_bad_value_came_from() {
    let (code, err) = run_to_exit(Command::new(BIN).env("READYSERVE_SERVE_DOTFILES", "maybe"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("READYSERVE_SERVE_DOTFILES"), "{err}");
    let (code, err) = run_to_exit(Command::new(BIN).env("READYSERVE_ACCESS_LOG_FORMAT", "xml"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("READYSERVE_ACCESS_LOG_FORMAT"), "{err}");
    assert!(err.contains("combined, json"), "{err}");
    // On the command line the flag is named, not the variable.
    let (code, err) = run_to_exit(
        Command::new(BIN)
            .env("READYSERVE_ACCESS_LOG_FORMAT", "json")
            .args(["--access-log-format", "xml"]),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("READYSERVE_"), "{err}");
    assert!(err.contains("--access-log-format"), "{err}");
    let (code, err) = run_to_exit(Command::new(BIN).args(["--log-level", "loud"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("debug"), "{err}");
    let (code, err) =
        run_to_exit(Command::new(BIN).args(["--listen", "127.0.0.1:0", "--unix-mode", "600"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--unix-mode"), "{err}");
    let (code, err) = run_to_exit(Command::new(BIN).args(["--max-connections", "-1"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("-1 is not in 1.."), "{err}");
    let (code, err) = run_to_exit(Command::new(BIN).args(["--header-timeout", "-5"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("'-5' for '--header-timeout"), "{err}");
    assert!(err.contains("expected a whole number"), "{err}");
    let (code, err) = run_to_exit(Command::new(BIN).args(["--proxy-protocol"]));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--proxy-protocol needs --trust-proxy"),
        "{err}"
    );
    for (listen, trusted) in [
        ("127.0.0.1:0", "unix"),
        ("unix:/tmp/rs-never.sock", "127.0.0.1"),
    ] {
        let (code, err) = run_to_exit(Command::new(BIN).args([
            "--listen",
            listen,
            "--proxy-protocol",
            "--trust-proxy",
            trusted,
        ]));
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("refuses every connection"), "{err}");
    }
    for (code, err) in
        [&["--help"][..], &["--version"]].map(|a| run_to_exit(Command::new(BIN).args(a)))
    {
        assert_eq!(code, Some(0), "{err}");
    }
}

/// `--listen localhost:PORT` is resolved at start-up.
#[test]
fn listen_takes_a_host_name() {
    let dir = fixture();
    let (mut child, addr, _) = spawn_server(
        Command::new(BIN)
            .args(["--listen", "localhost:0", "--access-log", "off", "--root"])
            .arg(dir.path().join("root")),
    );
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    send(&mut s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut s, false).status, 200);
    sigterm(&child);
    child.wait().expect("wait");
}

/// Start-up errors say which file and which listener.
#[test]
fn startup_errors_name_the_file_and_the_listener() {
    let dir = fixture();
    let missing = dir.path().join("no-such-dir/access.log");
    let (code, err) = run_to_exit(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--access-log"])
            .arg(&missing)
            .arg("--root")
            .arg(dir.path().join("root")),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, err) = run_to_exit(
        Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                &addr,
                "--root",
            ])
            .arg(dir.path().join("root")),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("metrics") && err.contains(&addr), "{err}");
    // A Unix socket in a directory that does not exist names the directory.
    let nowhere = dir.path().join("no-such-dir");
    let (code, err) = run_to_exit(
        Command::new(BIN)
            .arg("--listen")
            .arg(format!("unix:{}/s.sock", nowhere.display()))
            .arg("--root")
            .arg(dir.path().join("root")),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("no directory {}", nowhere.display())),
        "{err}"
    );
}
