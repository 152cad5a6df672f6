//! The real binary under pressure: file-descriptor exhaustion, shutdown with a download in
//! flight, and clients that stop reading.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn emfile_pauses_accepting_without_spinning_and_recovers() {
    let dir = fixture();
    let root = dir.path().join("root");
    // `ulimit -n` sets both limits, so the server cannot raise its soft limit past 32.
    let script = format!(
        "ulimit -n 32 && exec {BIN} --listen 127.0.0.1:0 --root '{}' --access-log off --keep-alive-timeout 60",
        root.display()
    );
    let (mut child, addr, stderr) = spawn_server(
        Command::new("bash")
            .args(["-c", &script])
            .stdout(Stdio::null()),
    );
    let pid = child.id();

    // Flood: far more connections than the server has descriptors for.
    let mut flood: Vec<TcpStream> = Vec::new();
    for _ in 0..80 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        send(&mut s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        flood.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // A loop that retried accept() without pause would burn all 200 ticks of these 2 s.
    assert!(
        used < 40,
        "the server spun at EMFILE: {used} ticks of CPU in 2 s"
    );

    // Let the flood go; the server must serve again.
    drop(flood);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get_at(&addr, "/index.html").body_text(), INDEX);

    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let log = stderr.join().expect("stderr");
    assert!(
        log.contains("pausing accepts"),
        "EMFILE was not logged:\n{log}"
    );
    assert_eq!(
        log.matches("pausing accepts").count(),
        1,
        "logged more than once:\n{log}"
    );
}

#[test]
fn sigterm_lets_an_in_flight_download_finish_then_exits_0() {
    let dir = fixture();
    let (mut child, addr, stderr) = spawn_binary(dir.path(), &["--access-log", "off"]);
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut first = [0u8; 1000];
    s.read_exact(&mut first).expect("the response started");
    // An idle keep-alive connection is closed at once on shutdown.
    let mut idle = TcpStream::connect(&addr).expect("connect");
    send(&mut idle, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut idle, false).status, 200);

    sigterm(&child);
    assert!(
        is_closed(&mut idle),
        "idle connection kept open during shutdown"
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("read the rest");
    let mut whole = first.to_vec();
    whole.extend_from_slice(&rest);
    let split = whole
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    assert!(
        whole[split..] == big_content(),
        "download cut short or corrupted"
    );
    assert!(
        String::from_utf8_lossy(&whole[..split]).contains("Connection: close")
            || whole.len() == split + BIG_LEN
    );
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    assert!(stderr.join().expect("stderr").contains("shutdown complete"));
    // The listener is gone.
    assert!(TcpStream::connect(&addr).is_err());
}

#[test]
fn fifty_stalled_readers_cost_bounded_memory() {
    let dir = fixture();
    let (mut child, addr, _stderr) = spawn_binary(dir.path(), &["--access-log", "off"]);
    let pid = child.id();
    // Warm up: one full download, so allocator pools and the page cache are settled.
    let mut warm = TcpStream::connect(&addr).expect("connect");
    send(&mut warm, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(read_response(&mut warm, false).body.len(), BIG_LEN);
    let before = rss_kib(pid);

    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&addr).expect("connect");
        send(&mut s, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        stalled.push(s); // and never read
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    let grown = after.saturating_sub(before);
    eprintln!("RSS {before} KiB -> {after} KiB with 50 stalled 8 MiB downloads (+{grown} KiB)");
    assert!(grown < 20 * 1024, "RSS grew by {grown} KiB");

    // Others are still served.
    assert_eq!(get_at(&addr, "/index.html").body_text(), INDEX);

    sigterm(&child);
    drop(stalled);
    let _ = child.wait();
}

/// `--trace` shows the whole loop: where each turn starts and how many events it has, the
/// interest changing when a download must wait for room, the connection yielding its turn,
/// the bytes each sendfile(2) sent (and the total, not "wrote 0 bytes"), and the slot freed.
#[test]
fn trace_shows_turns_interest_yields_sendfile_and_freed_slots() {
    let dir = fixture();
    let (mut child, addr, stderr) = spawn_binary(dir.path(), &["--trace", "--access-log", "off"]);
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Kept alive, and open until the shutdown closes it as idle, so that the connection
    // surely goes back to reading (W=>R) once the body is out. Closing it from here raced:
    // when the server's next read already met the client's FIN (its trace lines can block
    // on a full stderr pipe meanwhile), it closed in that same run, and no W=>R was traced.
    std::io::Write::write_all(&mut s, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
    // Not reading for a moment: the 8 MiB cannot all go at once.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_response(&mut s, false).body.len(), BIG_LEN);
    // A client pipelining 40 requests in one write: past its fair share of a turn (32
    // requests), its connection yields to the others and is resumed.
    let mut p = TcpStream::connect(&addr).expect("connect");
    p.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let forty = "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n".repeat(40);
    std::io::Write::write_all(&mut p, forty.as_bytes()).expect("send");
    for _ in 0..40 {
        assert_eq!(read_response(&mut p, false).status, 200);
    }
    drop(p);
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    drop(s);
    let trace = stderr.join().expect("stderr");
    let has = |needle: &str| trace.lines().any(|l| l.contains(needle));
    assert!(has("] turn 1: 1 events"), "{trace}");
    assert!(has("token=0 interest R=>W"), "{trace}");
    assert!(has("token=0 interest W=>R"), "{trace}");
    assert!(has("yields (budget)"), "{trace}");
    assert!(has("token=0 freed"), "{trace}");
    // Every sendfile call's count, and the write totals include them. (With the
    // `portable-fallbacks` feature there is no sendfile: the body is copied, and counted
    // in the write totals alone.)
    // The sum of the numbers after `token=0 <what> ` on every line.
    let total = |what: &str| -> u64 {
        let prefix = format!("token=0 {what} ");
        trace
            .lines()
            .filter_map(|l| {
                l.split(&prefix)
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let want = if cfg!(feature = "portable-fallbacks") {
        0
    } else {
        BIG_LEN as u64
    };
    assert_eq!(total("sendfile"), want, "{trace}");
    let wrote = total("wrote");
    assert!(wrote > BIG_LEN as u64, "wrote {wrote}:\n{trace}");
}

/// A second SIGTERM stops at once, and still writes the access-log line of a download it
/// cuts short, with the bytes that went out.
#[test]
fn a_second_sigterm_still_logs_what_it_cut_short() {
    let dir = fixture();
    let log = dir.path().join("access.log");
    let log_arg = log.to_string_lossy().into_owned();
    let (mut child, addr, _stderr) = spawn_binary(dir.path(), &["--access-log", &log_arg]);
    let mut s = TcpStream::connect(&addr).expect("connect");
    std::io::Write::write_all(&mut s, b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
    // Some of it arrives; then the client stops reading.
    let mut first = [0u8; 4096];
    s.read_exact(&mut first).expect("the start");
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .find(|l| l.contains("\"GET /big.bin HTTP/1.1\" 200 "))
        .unwrap_or_else(|| panic!("no line for the download:\n{text}"));
    let bytes: u64 = line
        .split("\" 200 ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .expect("bytes");
    assert!(bytes >= 4096 && bytes < BIG_LEN as u64, "{line}");
}

/// Idle keep-alive connections hold no buffer, whatever their last response was: here
/// each downloaded 512 KiB, which ends with a look for more input (a short sendfile(2)
/// waited for a writable edge, and no input was reported meanwhile). That look found
/// nothing, and kept a 4 KiB read buffer per connection before it gave it back.
#[test]
fn idle_connections_after_large_downloads_hold_no_buffers() {
    let dir = fixture();
    let (mut child, addr, _stderr) = spawn_binary(dir.path(), &["--access-log", "off"]);
    let pid = child.id();
    let fetch = |s: &mut TcpStream| {
        send(
            s,
            "GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-524287\r\n\r\n",
        );
        let response = read_response(s, false);
        assert_eq!(response.body.len(), 512 * 1024);
    };
    let mut warm = TcpStream::connect(&addr).expect("connect");
    fetch(&mut warm);
    let before = rss_kib(pid);
    let idle: Vec<_> = (0..400)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            fetch(&mut s);
            s
        })
        .collect();
    let grown = rss_kib(pid).saturating_sub(before);
    eprintln!("RSS +{grown} KiB with 400 idle connections after 512 KiB each");
    // 400 slots are about 220 KiB; 400 read buffers would be 1600 KiB more.
    assert!(grown < 1000, "RSS grew by {grown} KiB");
    drop(idle);
    sigterm(&child);
    let _ = child.wait();
}

/// Connections that close with their request answered give their buffers back at once, so
/// the next ones reuse them: 400 clients that each send a request and close at once, as wrk
/// does at the end of a run, raise the server's peak memory by little. (Before, each closed
/// connection kept its buffers to the end of the turn and the next took fresh ones: the
/// peak of the heap under `wrk -c256`.)
#[test]
fn clients_closing_together_do_not_raise_peak_memory() {
    let dir = fixture();
    let (mut child, addr, _stderr) = spawn_binary(dir.path(), &["--access-log", "off"]);
    let pid = child.id();
    assert_eq!(get_at(&addr, "/index.html").body_text(), INDEX);
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmHWM")
    };
    let before = peak();
    let mut clients: Vec<_> = (0..400)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // Accepted and idle first (no buffer held), then all requests and closes together:
    // with the server stopped, so that it finds them all in one turn.
    assert_eq!(get_at(&addr, "/index.html").body_text(), INDEX);
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {name}");
    };
    signal("-STOP");
    for s in &mut clients {
        send(s, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    drop(clients);
    signal("-CONT");
    assert_eq!(get_at(&addr, "/index.html").body_text(), INDEX);
    let grown = peak().saturating_sub(before);
    eprintln!("peak RSS +{grown} KiB with 400 clients closing together");
    // 400 read buffers alone would be 1600 KiB.
    assert!(grown < 800, "peak RSS grew by {grown} KiB");
    sigterm(&child);
    let _ = child.wait();
}

/// One request with a 1000-byte `User-Agent` on its own connection (so each access-log line
/// is about 1.1 KB); panics if it is not answered within 10 s.
fn logged_get(addr: &str, target: &str) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let ua = "U".repeat(1000);
    send(
        &mut s,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\nConnection: close\r\n\r\n"
        ),
    );
    let mut response = Vec::new();
    s.read_to_end(&mut response)
        .unwrap_or_else(|e| panic!("GET {target} not answered: {e}"));
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
}

/// A child process that is killed if the test fails before it exits: a failing test
/// leaves no server behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits (10 s at most) for the child to exit; returns its exit code.
fn exit_code_within_10s(Reaped(child): &mut Reaped) -> Option<i32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if std::time::Instant::now() > deadline {
            panic!("the server did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The access log on stdout, piped to a reader that never reads: the pipe fills after
/// about 60 lines. The loop used to block in write(2) there, SIGTERM included. Now the
/// lines wait in memory (1 MiB), then are dropped and counted; serving and the shutdown go
/// on, and the reader gets whole lines (all but perhaps the last, cut by the exit), and
/// stderr what was lost.
#[test]
fn an_access_log_reader_that_stops_reading_stops_nothing() {
    let dir = fixture();
    let (child, addr, stderr) = spawn_server(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("root"))
            .stdout(Stdio::piped()),
    );
    let mut child = Reaped(child);
    for _ in 0..300 {
        logged_get(&addr, "/");
    }
    sigterm(&child.0);
    assert_eq!(exit_code_within_10s(&mut child), Some(0));
    let err = stderr.join().expect("stderr");
    // 300 lines of about 1.1 KB: the backlog held what the pipe did not.
    assert!(err.contains("lines lost at exit"), "{err}");
    assert!(err.contains("shutdown complete"), "{err}");
    let mut log = Vec::new();
    let mut stdout = child.0.stdout.take().expect("stdout");
    stdout.read_to_end(&mut log).expect("read the log");
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert!(lines.len() >= 40, "{} lines", lines.len());
    for line in lines.iter().filter(|l| l.ends_with('\n')) {
        assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
        assert!(line.contains("\"GET / HTTP/1.1\" 200 "), "{line}");
    }
}

/// The reader stops, then reads again: what was kept comes first, then new lines; the
/// dropped lines are counted on stderr, and kept plus dropped is every request.
#[test]
fn an_access_log_reader_that_reads_again_gets_the_lines_and_the_count() {
    let dir = fixture();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (child, addr, stderr) = spawn_server(
        Command::new(BIN)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                &metrics,
                "--root",
            ])
            .arg(dir.path().join("root"))
            .stdout(Stdio::piped()),
    );
    let mut child = Reaped(child);
    // About 1.6 MB of lines: more than the pipe and the backlog hold together.
    let stalled = 1500;
    for _ in 0..stalled {
        logged_get(&addr, "/");
    }
    let mut stdout = child.0.stdout.take().expect("stdout");
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = std::thread::spawn({
        let log = std::sync::Arc::clone(&log);
        move || {
            let mut chunk = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                log.lock().expect("log").extend_from_slice(&chunk[..n]);
            }
        }
    });
    // The reader reads again: what waited comes (the loop retries every 10 ms). A line
    // logged before the backlog has room again would be dropped, so wait for it to drain:
    // nothing more for 300 ms.
    let mut seen = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(300));
        let now = log.lock().expect("log").len();
        if now == seen && now > 0 {
            break;
        }
        seen = now;
    }
    logged_get(&addr, "/?after=1");
    std::thread::sleep(Duration::from_millis(300));
    let scrape = get_at(&metrics, "/metrics");
    let counted: usize = String::from_utf8_lossy(&scrape.body)
        .lines()
        .find_map(|l| l.strip_prefix("readyserve_access_log_dropped_lines_total "))
        .and_then(|v| v.parse().ok())
        .expect("the dropped-lines counter");
    sigterm(&child.0);
    assert_eq!(exit_code_within_10s(&mut child), Some(0));
    reader.join().expect("reader");
    let log = log.lock().expect("log");
    let text = String::from_utf8_lossy(&log);
    assert!(text.ends_with('\n'), "a line was cut");
    assert!(text.lines().last().is_some_and(|l| l.contains("/?after=1")));
    let err = stderr.join().expect("stderr");
    let dropped: usize = err
        .split("reads again; ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count of dropped lines:\n{err}"));
    assert!(dropped > 0);
    assert_eq!(counted, dropped);
    assert_eq!(text.lines().count() + dropped, stalled + 1, "{err}");
}

/// stdout and stderr are one pipe (`2>&1`, or journald's one socket), and its reader stops
/// after the start-up lines: the server's own log lines would wait for it too, the one
/// about SIGTERM included, so they are silenced until the reader reads again.
#[test]
fn a_stalled_log_pipe_shared_with_stderr_stops_nothing() {
    use std::io::BufRead;
    let dir = fixture();
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut child = Reaped(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("root"))
            .stdout(writer.try_clone().expect("clone"))
            .stderr(writer)
            .spawn()
            .expect("spawn"),
    );
    let mut reader = std::io::BufReader::new(reader);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "no start-up"
        );
        if let Some(rest) = line.split(" on http://").nth(1) {
            break rest.trim().trim_end_matches('/').to_string();
        }
    };
    for _ in 0..300 {
        logged_get(&addr, "/");
    }
    sigterm(&child.0);
    assert_eq!(exit_code_within_10s(&mut child), Some(0));
}

/// Starts the binary with stdout and stderr on one pipe (`2>&1`) and reads up to its
/// "serving" line; returns the child, its address and the pipe's reading end.
fn spawn_with_one_pipe(dir: &std::path::Path) -> (Reaped, String, std::io::PipeReader) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let child = Reaped(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(dir.join("root"))
            .stdout(writer.try_clone().expect("clone"))
            .stderr(writer)
            .spawn()
            .expect("spawn"),
    );
    // One byte at a time, so that nothing after the "serving" line is taken out of the pipe.
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut reader = reader;
    let addr = loop {
        reader.read_exact(&mut byte).expect("start-up lines");
        if byte[0] != b'\n' {
            line.push(byte[0]);
            continue;
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        line.clear();
        if let Some(rest) = text.split(" on http://").nth(1) {
            break rest.trim().trim_end_matches('/').to_string();
        }
    };
    (child, addr, reader)
}

/// `2>&1` into a pipe that is nearly full but still takes the access log's last write:
/// the server's own next line (here the one about SIGTERM) used to block in write(2), and
/// the server never exited. Now a line stderr would not take at once is dropped.
#[test]
fn a_nearly_full_pipe_shared_with_stderr_does_not_hold_the_shutdown() {
    let dir = fixture();
    let (mut child, addr, reader) = spawn_with_one_pipe(dir.path());
    // The server widened its stderr pipe (this one) to 1 MiB; back to 64 KiB, to fill it
    // sooner.
    rustix::pipe::fcntl_setpipe_size(&reader, 64 * 1024).expect("F_SETPIPE_SZ");
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Keep-alive requests with a short line each, until a line no longer goes into the
    // pipe: every page of it is in use and the last has less room than a line. (It fills
    // page by page: a write that does not fit the last page's room takes a new one.) A log
    // line of the server's own, longer than that, would then wait.
    let mut queued = 0;
    for n in 0.. {
        assert!(n < 100_000, "the pipe never filled");
        send(&mut s, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(read_response(&mut s, false).status, 200);
        // The line goes out at the end of the turn that sent the response.
        std::thread::sleep(Duration::from_millis(2));
        let now = rustix::io::ioctl_fionread(&reader).expect("FIONREAD");
        if now == queued && now > 32 * 1024 {
            break;
        }
        queued = now;
    }
    sigterm(&child.0);
    assert_eq!(exit_code_within_10s(&mut child), Some(0));
    drop(reader);
}

/// `2>&1 | head`: the reader exits. simple_logger's `eprintln!` panics on EPIPE, and the
/// next log line ended the server (the panic, then a second one in the access log's drop,
/// aborted it). Now the server serves on, and stops cleanly on SIGTERM.
#[test]
fn a_log_pipe_whose_reader_exits_does_not_end_the_server() {
    let dir = fixture();
    let (mut child, addr, reader) = spawn_with_one_pipe(dir.path());
    drop(reader);
    for _ in 0..3 {
        logged_get(&addr, "/");
    }
    // A log line of the server's own: the access log's failure is reported on stderr.
    sigterm(&child.0);
    assert_eq!(exit_code_within_10s(&mut child), Some(0));
}

/// stderr on a terminal that is never read (an ssh session whose network stalled): its
/// buffer fills after a few dozen lines. The server's next log line used to block in
/// write(2) for good, SIGTERM included. Here each SIGHUP logs one line.
#[test]
fn an_unread_terminal_on_stderr_stops_nothing() {
    use rustix::process::{Pid, Signal, kill_process};
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let dir = fixture();
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_string_lossy().as_ref())
        .expect("open the terminal");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Reaped(
        Command::new(BIN)
            .args(["--listen", &addr, "--access-log", "off", "--root"])
            .arg(dir.path().join("root"))
            .stderr(terminal)
            .spawn()
            .expect("spawn"),
    );
    let pid = Pid::from_raw(child.0.id() as i32).expect("pid");
    // Up once it answers (its "serving" line went to the terminal).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..500 {
        kill_process(pid, Signal::HUP).expect("SIGHUP");
        std::thread::sleep(Duration::from_millis(2));
    }
    logged_get(&addr, "/");
    sigterm(&child.0);
    assert_eq!(exit_code_within_10s(&mut child), Some(0));
    drop(master);
}
