//! Settings: every flag, its `READYSERVE_*` environment variable, and its default.
//!
//! `clap` does the parsing (an argument parser is not the point of this project). A flag
//! given on the command line wins over its environment variable, which wins over the default.
//! A value clap cannot parse ends the process with one line on stderr and exit status 2;
//! values that parse but cannot work (a root that does not exist, an address in use) are
//! reported by [`crate::Server::bind`] and end it with status 1.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

// The option types of the operations side live with the code that uses them; the command
// line names them here.
pub use crate::ops::access_log::{AccessLogFormat, AccessLogTarget};
pub use crate::ops::proxy::{RealIpHeader, TrustedProxy};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address such as `127.0.0.1:7878`; port 0 asks the kernel for a free port.
    Tcp(SocketAddr),
    /// A Unix-domain socket, written `unix:/path/to.sock`.
    Unix(PathBuf),
    /// The one listening socket systemd passes (socket activation, sd_listen_fds(3)),
    /// written `systemd`: descriptor 3, checked against `LISTEN_FDS` and `LISTEN_PID`.
    Systemd,
    /// A listening socket inherited on this descriptor, written `fd:N` (N is 3 or more: 0, 1
    /// and 2 are stdin, stdout and stderr). The server takes it over and closes it when it
    /// ends, so it must have been handed to this process for that and to nothing else in
    /// it; the binary claims it before it opens anything of its own.
    Fd(std::os::fd::RawFd),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, as in unix:/run/readyserve.sock".to_string());
            }
            if path.ends_with('/') {
                return Err(format!(
                    "'{path}' names a directory; a socket needs a file name, as in {path}readyserve.sock"
                ));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if s == "systemd" {
            return Ok(ListenAddr::Systemd);
        }
        if let Some(n) = s.strip_prefix("fd:") {
            return match n.parse::<std::os::fd::RawFd>() {
                Ok(fd) if fd >= 3 => Ok(ListenAddr::Fd(fd)),
                _ => Err(format!(
                    "'{s}' is not fd:N with a descriptor number N of 3 or more, as in fd:3"
                )),
            };
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(ListenAddr::Tcp(addr));
        }
        // A name, as people type it: `localhost:8080`. Resolved once, at start-up; an IPv4
        // address is preferred when the name has both, as `localhost` usually does.
        let resolved: Vec<SocketAddr> = s
            .to_socket_addrs()
            .map_err(|e| format!("{e} (give host:port, for example 127.0.0.1:7878)"))?
            .collect();
        resolved
            .iter()
            .find(|a| a.is_ipv4())
            .or(resolved.first())
            .map(|a| ListenAddr::Tcp(*a))
            .ok_or_else(|| format!("'{s}' resolves to no address"))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ListenAddr::Systemd => write!(f, "systemd"),
            ListenAddr::Fd(fd) => write!(f, "fd:{fd}"),
        }
    }
}

/// The longest duration any flag takes: one day, in seconds. Deadlines are `Instant`s, and
/// `Instant + Duration` panics when the sum does not fit; a day always fits, and no timeout a
/// person means is longer. The command line refuses more (exit 2); [`Config`]'s duration
/// methods clamp to it, for configurations built in code.
pub const MAX_SECS: u64 = 24 * 60 * 60;

/// The log levels, by name; an error lists them.
fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not a level: off, error, warn, info, debug or trace"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal file mode such as 660"))
}

/// Every setting of the server. Build one with [`Config::from_command_line`] (flags and environment),
/// or start from [`Config::default`] in code and tests.
#[derive(Debug, Clone, Parser)]
#[command(name = "readyserve", version, about, long_about = None, allow_negative_numbers = true)]
pub struct Config {
    /// Address to listen on: host:port, unix:/path/to.sock, systemd (the socket systemd
    /// passes) or fd:N (a listening socket inherited on descriptor N).
    #[arg(long, env = "READYSERVE_LISTEN", default_value = "127.0.0.1:7878")]
    pub listen: ListenAddr,

    /// Permissions of a unix: socket file, in octal.
    #[arg(long, env = "READYSERVE_UNIX_MODE", default_value = "660", value_parser = parse_mode)]
    pub unix_mode: u32,

    /// Set SO_REUSEPORT, so that several readyserve processes share one port (one per core).
    #[arg(long, env = "READYSERVE_REUSE_PORT", value_parser = BoolishValueParser::new())]
    pub reuse_port: bool,

    /// Proxies whose --real-ip-header is believed: CIDR ranges, and `unix` for Unix-socket
    /// peers, comma-separated. Other peers' headers are ignored.
    #[arg(long, env = "READYSERVE_TRUST_PROXY", value_delimiter = ',')]
    pub trust_proxy: Vec<TrustedProxy>,

    /// Every connection must begin with a PROXY protocol header (v1 or v2), as HAProxy's
    /// `send-proxy`/`send-proxy-v2` sends; its source address is the client (and the peer
    /// whose --real-ip-header is believed only if it is in --trust-proxy itself). Only peers
    /// in --trust-proxy may connect (so it needs --trust-proxy).
    #[arg(long, env = "READYSERVE_PROXY_PROTOCOL", value_parser = BoolishValueParser::new())]
    pub proxy_protocol: bool,

    /// The one header that names the client behind a --trust-proxy peer: X-Forwarded-For,
    /// X-Real-IP or Forwarded (RFC 7239).
    #[arg(
        long,
        env = "READYSERVE_REAL_IP_HEADER",
        default_value = "X-Forwarded-For"
    )]
    pub real_ip_header: RealIpHeader,

    /// Address of a second listener: Prometheus metrics at /metrics, /healthz, and the live
    /// view at /loop; at most 16 connections of its own (off if unset).
    #[arg(long, env = "READYSERVE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Document root: the directory whose files are served.
    #[arg(long, env = "READYSERVE_ROOT", default_value = "./public")]
    pub root: PathBuf,

    /// Most connections open at once; at the cap the server stops accepting until one closes.
    #[arg(long, env = "READYSERVE_MAX_CONNECTIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Seconds from a request's first byte until its head must be complete (then 408).
    #[arg(long, env = "READYSERVE_HEADER_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub header_timeout: u64,

    /// Seconds an idle keep-alive connection is kept open between requests. Longer than a
    /// proxy's upstream keep-alive (nginx: 60 s), so that the proxy, not we, closes first.
    #[arg(long, env = "READYSERVE_KEEP_ALIVE_TIMEOUT", default_value_t = 75,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub keep_alive_timeout: u64,

    /// A client must take 1 MiB of a response (or all of it) per this many seconds, or it is
    /// closed: 35 KB/s at 30 s.
    #[arg(long, env = "READYSERVE_WRITE_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=MAX_SECS))]
    pub write_timeout: u64,

    /// A path answered `200 ok` for load-balancer health checks, before files and handlers,
    /// and never access-logged; `503` while draining (see --drain-delay). Off if unset.
    #[arg(long, env = "READYSERVE_HEALTH_PATH", value_parser = parse_health_path)]
    pub health_path: Option<String>,

    /// Seconds to keep serving after SIGTERM or SIGINT, with the health path answering 503,
    /// so that a load balancer takes the server out before it stops accepting.
    #[arg(long, env = "READYSERVE_DRAIN_DELAY", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SECS))]
    pub drain_delay: u64,

    /// Seconds in-flight responses may take to finish after SIGTERM or SIGINT.
    #[arg(long, env = "READYSERVE_SHUTDOWN_GRACE", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SECS))]
    pub shutdown_grace: u64,

    /// Largest request head (request line plus headers) in bytes, 256 to 1048576; over it
    /// the answer is 431 (a request line over 8 KiB, when the limit is above 8 KiB: 414).
    /// Also at most 100 header lines.
    #[arg(long, env = "READYSERVE_MAX_HEADER_BYTES", default_value_t = 16 * 1024,
          value_parser = clap::value_parser!(u32).range(256..=1024 * 1024))]
    pub max_header_bytes: u32,

    /// Largest request body in bytes; it is read and discarded. Over it the answer is 413.
    #[arg(long, env = "READYSERVE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: u64,

    /// Access log destination: a file path, '-' for stdout, or 'off'.
    #[arg(long, env = "READYSERVE_ACCESS_LOG", default_value = "-")]
    pub access_log: AccessLogTarget,

    /// Access log line format.
    #[arg(
        long,
        env = "READYSERVE_ACCESS_LOG_FORMAT",
        value_enum,
        default_value = "combined"
    )]
    pub access_log_format: AccessLogFormat,

    /// Level of the error and lifecycle log on stderr: off, error, warn, info, debug or trace.
    /// (The binary installs the logger; a program that embeds the library installs its own
    /// `log` backend, and this field is not used.)
    #[arg(long, env = "READYSERVE_LOG", default_value = "info", value_parser = parse_level)]
    pub log_level: log::LevelFilter,

    /// Bytes of small files (up to 1 MiB each) kept in memory; 0 turns the cache off.
    #[arg(long, env = "READYSERVE_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub cache_bytes: usize,

    /// List the contents of directories that have no index.html (otherwise they are 404).
    #[arg(long, env = "READYSERVE_LIST_DIRECTORIES", value_parser = BoolishValueParser::new())]
    pub list_directories: bool,

    /// A directory listing shows at most this many entries, and says so when it is cut.
    #[arg(
        long,
        env = "READYSERVE_MAX_LISTING_ENTRIES",
        default_value_t = crate::files::static_files::DEFAULT_MAX_LISTING_ENTRIES,
        value_parser = parse_positive
    )]
    pub max_listing_entries: usize,

    /// Serve files and directories whose names start with '.' (otherwise they are 404).
    #[arg(long, env = "READYSERVE_SERVE_DOTFILES", value_parser = BoolishValueParser::new())]
    pub serve_dotfiles: bool,

    /// Follow symlinks that lead outside the root (otherwise such files are 404).
    #[arg(long, env = "READYSERVE_FOLLOW_SYMLINKS", value_parser = BoolishValueParser::new())]
    pub follow_symlinks: bool,

    /// Cache-Control value added to 200, 206 and 304 file responses, e.g. "max-age=3600".
    #[arg(long, env = "READYSERVE_CACHE_CONTROL", value_parser = parse_header_value)]
    pub cache_control: Option<String>,

    /// Teaching mode: log every readiness event and state transition on stderr. (In the
    /// binary; a program that embeds the library sees them with a `log` backend at the
    /// trace level for the `readyserve` target.)
    #[arg(long, env = "READYSERVE_TRACE", value_parser = BoolishValueParser::new())]
    pub trace: bool,
}

impl Default for Config {
    /// The defaults of the command line, as if no flag and no variable were given.
    fn default() -> Self {
        Config {
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 7878))),
            unix_mode: 0o660,
            reuse_port: false,
            trust_proxy: Vec::new(),
            proxy_protocol: false,
            real_ip_header: RealIpHeader::XForwardedFor,
            metrics_listen: None,
            access_log_format: AccessLogFormat::Combined,
            root: PathBuf::from("./public"),
            max_connections: 10_000,
            header_timeout: 10,
            keep_alive_timeout: 75,
            write_timeout: 30,
            health_path: None,
            drain_delay: 0,
            shutdown_grace: 10,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            access_log: AccessLogTarget::Stdout,
            log_level: log::LevelFilter::Info,
            cache_bytes: 64 * 1024 * 1024,
            list_directories: false,
            max_listing_entries: crate::files::static_files::DEFAULT_MAX_LISTING_ENTRIES,
            serve_dotfiles: false,
            follow_symlinks: false,
            cache_control: None,
            trace: false,
        }
    }
}

/// Why the command line gave no configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLineError {
    /// `--help` or `--version`: print this on stdout and exit 0.
    Info(String),
    /// A value that cannot work: print this one line on stderr and exit 2.
    Invalid(String),
}

impl Config {
    /// Reads the flags in `args` (the program name first) and the `READYSERVE_*` variables.
    ///
    /// Errors are one line that says what was wrong and where it came from: the variable,
    /// when a variable gave the bad value, and the accepted values, when there is a list.
    pub fn from_command_line<I, T>(args: I) -> Result<Config, CommandLineError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = Config::command();
        let explain = |e: clap::Error, command: &clap::Command| explain(e, command, &args);
        let matches = command
            .try_get_matches_from_mut(args.iter())
            .map_err(|e| explain(e, &command))?;
        let config = Config::from_arg_matches(&matches).map_err(|e| explain(e, &command))?;
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let inherited = matches!(config.listen, ListenAddr::Systemd | ListenAddr::Fd(_));
        if given("unix_mode") && inherited {
            return Err(CommandLineError::Invalid(format!(
                "error: --unix-mode does not apply to --listen {}: whoever made the socket sets \
                 its mode (SocketMode= in a systemd .socket unit)",
                config.listen
            )));
        }
        if given("unix_mode") && !matches!(config.listen, ListenAddr::Unix(_)) {
            return Err(CommandLineError::Invalid(format!(
                "error: --unix-mode applies to a unix: listener, and --listen is {}",
                config.listen
            )));
        }
        // A trust list that no peer of this listener can match refuses every connection.
        let unix_trusted = config.trust_proxy.contains(&TrustedProxy::Unix);
        let net_trusted = config.trust_proxy.iter().any(|t| *t != TrustedProxy::Unix);
        let unmatched = match config.listen {
            ListenAddr::Tcp(_) => !net_trusted,
            ListenAddr::Unix(_) => !unix_trusted,
            _ => false, // inherited: its family is known only once it is taken
        };
        if config.proxy_protocol && !config.trust_proxy.is_empty() && unmatched {
            return Err(CommandLineError::Invalid(format!(
                "error: --proxy-protocol on --listen {} refuses every connection: no peer of \
                 this listener is in --trust-proxy (use an address range for TCP, `unix` for \
                 a Unix socket)",
                config.listen
            )));
        }
        if config.proxy_protocol && config.trust_proxy.is_empty() {
            // Anyone who can connect could otherwise claim to be anyone.
            return Err(CommandLineError::Invalid(
                "error: --proxy-protocol needs --trust-proxy: the peers allowed to send a PROXY \
                 header (for example --trust-proxy 127.0.0.1)"
                    .to_string(),
            ));
        }
        // SO_REUSEPORT only counts if it is set before bind(2), and an inherited socket is
        // bound already: silently ignoring the flag would leave someone believing that
        // several processes share the port.
        if config.reuse_port && inherited {
            return Err(CommandLineError::Invalid(format!(
                "error: --reuse-port does not apply to --listen {}: the socket is bound \
                 already (set ReusePort= in the systemd .socket unit instead)",
                config.listen
            )));
        }
        Ok(config)
    }
}

/// One line for a clap error: its first line, the variable that gave the value if it was
/// not on the command line, and the accepted values if clap knows them.
fn explain(e: clap::Error, command: &clap::Command, args: &[OsString]) -> CommandLineError {
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        return CommandLineError::Info(e.to_string());
    }
    let rendered = e.to_string();
    let mut line = rendered
        .lines()
        .next()
        .unwrap_or("error: invalid arguments")
        // The standard library's words for "-5" or "5s" where a count is wanted. (Which
        // numbers the flag takes, clap says when one is out of its range.)
        .replace("invalid digit found in string", "expected a whole number")
        // clap's BoolishValueParser names no accepted words.
        .replace(
            "value was not a boolean",
            "expected 1/0, true/false, yes/no or on/off",
        )
        .to_string();
    if let Some(ContextValue::Strings(values)) = e.get(ContextKind::ValidValue)
        && !values.is_empty()
    {
        line.push_str(&format!(" (expected one of: {})", values.join(", ")));
    }
    // `--access-log-format <ACCESS_LOG_FORMAT>`: which flag, and was it on the command line?
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().unwrap_or_default(),
        _ => "",
    };
    let on_command_line = |long: &str| {
        args.iter().skip(1).any(|a| {
            let a = a.to_string_lossy();
            a == format!("--{long}") || a.starts_with(&format!("--{long}="))
        })
    };
    let from_env = command.get_arguments().find_map(|arg| {
        let long = arg.get_long()?;
        if flag != format!("--{long}") || on_command_line(long) {
            return None;
        }
        let var = arg.get_env()?;
        std::env::var_os(var).map(|_| var.to_string_lossy().into_owned())
    });
    if let Some(var) = from_env {
        line = match line.strip_prefix("error: ") {
            Some(rest) => format!("error: {var}: {rest}"),
            None => format!("{var}: {line}"),
        };
    }
    CommandLineError::Invalid(line)
}

/// A count of at least 1.
fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number of at least 1")),
    }
}

/// A header value must be visible ASCII and spaces: no CR or LF that would split a response.
fn parse_header_value(s: &str) -> Result<String, String> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
    {
        return Err(format!("{s:?} is not a valid header value"));
    }
    Ok(s.to_string())
}

/// A health path is matched against the request's path, byte for byte, without its query:
/// so it must be an absolute path, and one that a request can spell (no query, fragment,
/// space or control character).
pub fn parse_health_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} is not a path starting with '/', such as /healthz"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '?' | '#') || !c.is_ascii_graphic())
    {
        return Err(format!(
            "{s:?} has {c:?}: a health path has no query, fragment, space or control character"
        ));
    }
    Ok(s.to_string())
}

/// Seconds as a [`Duration`] of at most [`MAX_SECS`].
fn seconds(secs: u64) -> Duration {
    Duration::from_secs(secs.min(MAX_SECS))
}

impl Config {
    /// The header timeout as a [`Duration`] (at most [`MAX_SECS`]).
    pub fn header_timeout(&self) -> Duration {
        seconds(self.header_timeout)
    }

    /// The keep-alive idle timeout as a [`Duration`] (at most [`MAX_SECS`]).
    pub fn keep_alive_timeout(&self) -> Duration {
        seconds(self.keep_alive_timeout)
    }

    /// The write timeout as a [`Duration`] (at most [`MAX_SECS`]).
    pub fn write_timeout(&self) -> Duration {
        seconds(self.write_timeout)
    }

    /// The drain delay as a [`Duration`] (at most [`MAX_SECS`]).
    pub fn drain_delay(&self) -> Duration {
        seconds(self.drain_delay)
    }

    /// The shutdown grace period as a [`Duration`] (at most [`MAX_SECS`]).
    pub fn shutdown_grace(&self) -> Duration {
        seconds(self.shutdown_grace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_command_line_defaults() {
        let parsed = Config::try_parse_from(["readyserve"]).map_err(|e| e.to_string());
        let parsed = match parsed {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let default = Config::default();
        assert_eq!(parsed.listen, default.listen);
        assert_eq!(parsed.root, default.root);
        assert_eq!(parsed.max_header_bytes, default.max_header_bytes);
        assert_eq!(parsed.max_body_bytes, default.max_body_bytes);
        assert_eq!(parsed.access_log, default.access_log);
        assert_eq!(parsed.keep_alive_timeout, default.keep_alive_timeout);
        assert_eq!(parsed.real_ip_header, default.real_ip_header);
        let forwarded = Config::try_parse_from(["readyserve", "--real-ip-header", "forwarded"]);
        assert_eq!(
            forwarded.map(|c| c.real_ip_header).ok(),
            Some(RealIpHeader::Forwarded)
        );
    }

    #[test]
    fn durations_are_bounded() {
        let day = Config::try_parse_from(["readyserve", "--header-timeout", "86400"]);
        assert_eq!(
            day.map(|c| c.header_timeout()).ok(),
            Some(seconds(MAX_SECS))
        );
        // Built in code, past the range: clamped, so `now + timeout` cannot overflow.
        let config = Config {
            write_timeout: u64::MAX,
            shutdown_grace: u64::MAX,
            drain_delay: u64::MAX,
            ..Config::default()
        };
        assert_eq!(config.write_timeout(), Duration::from_secs(MAX_SECS));
        assert_eq!(config.shutdown_grace(), Duration::from_secs(MAX_SECS));
        assert_eq!(config.drain_delay(), Duration::from_secs(MAX_SECS));
    }

    #[test]
    fn cidr_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("10.0.0.0/8", "10.1.2.3", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("127.0.0.1", "127.0.0.1", true),
            ("127.0.0.1", "127.0.0.2", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("192.168.1.0/24", "::ffff:192.168.1.9", true),
            ("::1", "::1", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("10.0.0.0/8", "::1", false),
            ("unix", "127.0.0.1", false),
        ];
        for (range, ip, want) in cases {
            let range: TrustedProxy = range.parse().unwrap_or(TrustedProxy::Unix);
            let ip: std::net::IpAddr = ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            assert_eq!(range.contains(ip), *want, "{range:?} {ip}");
        }
    }

    #[test]
    fn inherited_listeners_parse_and_print_back() {
        for (text, want) in [
            ("systemd", ListenAddr::Systemd),
            ("fd:3", ListenAddr::Fd(3)),
            ("fd:17", ListenAddr::Fd(17)),
        ] {
            assert_eq!(text.parse::<ListenAddr>().as_ref(), Ok(&want), "{text}");
            assert_eq!(want.to_string(), text);
        }
        for bad in [
            "fd:",
            "fd:abc",
            "fd:-1",
            "fd:0",
            "fd:2",
            "fd: 3",
            "fd:3x",
            "systemd:3",
        ] {
            let err = bad.parse::<ListenAddr>();
            assert!(err.is_err(), "{bad} was accepted as {err:?}");
        }
        assert!(
            "fd:abc"
                .parse::<ListenAddr>()
                .is_err_and(|e| e.contains("fd:N") && e.contains("fd:abc")),
            "the error shows the value and the form"
        );
    }

    #[test]
    fn inherited_listeners_refuse_unix_mode_and_reuse_port() {
        for listen in ["systemd", "fd:3"] {
            // The error names the flag, the listener, and where the setting belongs instead.
            for (flag, instead) in [
                (&["--unix-mode", "600"][..], "SocketMode="),
                (&["--reuse-port"], "ReusePort="),
            ] {
                let args = [&["readyserve", "--listen", listen][..], flag].concat();
                match Config::from_command_line(args) {
                    Err(CommandLineError::Invalid(line)) => {
                        assert!(line.contains(flag[0]), "{line}");
                        assert!(line.contains(listen), "{line}");
                        assert!(line.contains(instead), "{line}");
                    }
                    other => panic!("{listen} {flag:?} gave {other:?}"),
                }
            }
            let plain = Config::from_command_line(["readyserve", "--listen", listen]);
            assert!(plain.is_ok(), "{listen}: {plain:?}");
        }
    }

    /// The one line a bad value gets says what is wrong with it, not only that it is.
    #[test]
    fn bad_value_messages_say_why() {
        for (args, says) in [
            (
                &["readyserve", "--listen", "localhost:99999"][..],
                "invalid port value",
            ),
            (&["readyserve", "--listen", "nocolon"], "give host:port"),
            (
                &["readyserve", "--header-timeout", "5s"],
                "expected a whole number",
            ),
            (
                &["readyserve", "--header-timeout", "0"],
                "0 is not in 1..=86400",
            ),
        ] {
            match Config::from_command_line(args) {
                Err(CommandLineError::Invalid(line)) => {
                    assert!(line.contains(says), "{args:?}: {line}");
                    assert!(!line.contains("0 or more"), "{args:?}: {line}");
                }
                other => panic!("{args:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            &["readyserve", "--listen", "nowhere"][..],
            &["readyserve", "--listen", "127.0.0.1"],
            &["readyserve", "--max-header-bytes", "-5"],
            &["readyserve", "--max-connections", "0"],
            &["readyserve", "--log-level", "loud"],
            &["readyserve", "--no-such-flag"],
            &["readyserve", "--cache-control", "max-age=1\r\nX: y"],
            &["readyserve", "--trust-proxy", "10.0.0.0/33"],
            &["readyserve", "--trust-proxy", "nonsense"],
            &["readyserve", "--unix-mode", "999"],
            &["readyserve", "--listen", "unix:"],
            &["readyserve", "--listen", "unix:/missing/dir/"],
            &["readyserve", "--access-log-format", "xml"],
            &["readyserve", "--header-timeout", "18446744073709551615"],
            &["readyserve", "--header-timeout", "86401"],
            &["readyserve", "--real-ip-header", "X-Client-IP"],
            &["readyserve", "--keep-alive-timeout", "86401"],
            &["readyserve", "--write-timeout", "86401"],
            &["readyserve", "--shutdown-grace", "86401"],
            &["readyserve", "--drain-delay", "86401"],
            &["readyserve", "--drain-delay", "-1"],
            &["readyserve", "--health-path", "healthz"],
            &["readyserve", "--health-path", ""],
            &["readyserve", "--health-path", "/health?x=1"],
            &["readyserve", "--health-path", "/he alth"],
        ] {
            assert!(
                Config::try_parse_from(args).is_err(),
                "{args:?} was accepted"
            );
        }
    }
}
