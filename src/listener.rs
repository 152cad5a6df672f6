//! Where connections come from: a TCP or a Unix-domain listener, and the one stream type
//! the loop keeps in its slab for both.
//!
//! Behind a reverse proxy on the same machine, a Unix socket saves the TCP stack's work
//! and cannot be reached from the network at all. Both kinds are plain readiness sources to
//! mio, so the loop does not care which one it has.
//!
//! A listener is either bound here or inherited: systemd's socket activation
//! (`--listen systemd`, sd_listen_fds(3)) or a parent process (`--listen fd:N`) binds the
//! socket and passes it open across exec(2). [`Listener::bind`] checks that such a
//! descriptor really is a listening stream socket and wraps it as the same TCP or Unix
//! listener, so the rest of the server cannot tell the difference.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::ListenAddr;

/// The kernel's queue of connections not yet accepted.
const BACKLOG: i32 = 1024;

/// Most bytes a TCP socket holds that it has not transmitted yet (`TCP_NOTSENT_LOWAT`), while
/// the client takes a body as fast as we send it: past this, a send takes no more and the
/// socket is not writable; it is again once the unsent part is below half of it.
///
/// Why bound it: without a bound, a large file fills the whole send buffer (autotuned to 4
/// MiB, `tcp_wmem`) while the client's window is closed, and then every byte of it is
/// transmitted later from the client's ACK processing, in softirq, on the client's CPU. On
/// loopback that CPU also delivers the segment to the client's socket. With the bound, the
/// bytes are sent from our own send call as the window opens. Measured on the 2 vCPU bench
/// VM (10 MiB file, 8 connections, server and wrk on their own cores, 8 alternating
/// rounds): wrk's CPU per response fell from 7.0 to 4.3 ms, ours rose from 2.0 to 3.0 ms,
/// the sum fell by a fifth, and throughput rose by about a fifth. 128 KiB spent the least
/// in total; 512 KiB, 1 MiB and 2 MiB moved less work (wrk 4.9, 5.5, 6.7 ms). It costs one
/// setsockopt(2) per connection. It is what the kernel documents for servers that write
/// more than the network can take at once (`tcp_notsent_lowat` in
/// Documentation/networking/ip-sysctl.rst).
///
/// A client that cannot keep up gets [`NOTSENT_LOWAT_SLOW_READER`] instead, until it can
/// again (see there).
pub const NOTSENT_LOWAT: u32 = 128 * 1024;

/// The unsent bound for a body whose client's window, not our sending, sets the pace: an
/// nginx front reading its upstream through 8 KiB buffers, a slow network. The connection
/// switches to it when sendfile(2) stops short often in one body, at least once per 512 KiB
/// (the socket holds its bound and the window is shut), and back to [`NOTSENT_LOWAT`] after
/// a body the client kept up with (fewer than one short send per 4 MiB). 4 MiB is Linux's
/// largest autotuned send buffer (`tcp_wmem`), so for such a client the send buffer is the
/// bound, as it is for nginx and lighttpd.
///
/// Why: with the small bound, such a client wakes us for every 64 KiB it takes, and each
/// wakeup is a context switch and a sendfile(2) call that transmits nothing (the bytes go
/// out later, from the client's ACK processing, whatever the bound). Behind an nginx front,
/// 10 MiB bodies: 64 sendfile calls and as many epoll_wait wakeups per response with 128
/// KiB, `finish_task_switch` the top symbol of our profile (24%), and the upstream's CPU
/// per response 2.3× the unbounded build's. Bounds for the whole body, 5 alternating rounds:
/// 1 MiB 1.26×, 2 MiB 1.06×, 4 MiB 1.00× the unbounded build's CPU per response.
///
/// What it costs: a client reading slower than 2 MiB per write timeout makes no writable
/// edge in that time, so the write timeout tries once more before it closes, and the
/// client goes on if it has taken 1 MiB (see `Connection::timed_out`); and a client that
/// reads in bursts and then pauses (`curl
/// --limit-rate`) has more buffered ahead of it, so its pause is longer. Nginx with a 30 s
/// `send_timeout` cuts that curl at the same point.
pub const NOTSENT_LOWAT_SLOW_READER: u32 = 4 * 1024 * 1024;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix-domain socket at `path`.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its filesystem path (`@name` for an abstract socket).
        path: PathBuf,
        /// This process made the socket file, so it removes it again when the listener is
        /// closed: the file's device and inode, to remove it only if it is still the same
        /// file (another instance may have replaced it since). An inherited socket's file
        /// belongs to whoever made it (systemd removes its own when the socket unit stops)
        /// and is left alone: `None`.
        made: Option<(u64, u64)>,
    },
}

/// Options for binding.
#[derive(Debug, Clone, Copy)]
pub struct BindOptions {
    /// Set SO_REUSEPORT, so that several processes can listen on one port.
    pub reuse_port: bool,
    /// Permission bits for a Unix socket file.
    pub unix_mode: u32,
}

impl Listener {
    /// Binds `addr`, or takes over the inherited socket it names (`systemd`, `fd:N`). An
    /// inherited descriptor that cannot serve is an `InvalidInput` error whose inner error is
    /// an [`InheritError`] saying why.
    pub fn bind(addr: &ListenAddr, options: BindOptions) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(addr) => bind_tcp(*addr, options.reuse_port).map(Listener::Tcp),
            ListenAddr::Unix(path) => {
                // Bound through a short private name and linked into place, a path too long
                // for a socket address would bind, and no client could connect to it.
                socket2::SockAddr::unix(path).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "the path is too long for a Unix socket (at most 107 bytes)",
                    )
                })?;
                let lock = lock_directory(path)?;
                remove_stale_socket(path)?;
                let (listener, made) =
                    bind_unix(path, options.unix_mode).map_err(|e| {
                        match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                            Some(dir) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                                io::Error::new(e.kind(), format!("no directory {}", dir.display()))
                            }
                            _ => e,
                        }
                    })?;
                drop(lock);
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                    made: Some(made),
                })
            }
            ListenAddr::Systemd => {
                let fd = systemd_fd().map_err(InheritError::into_io)?;
                let listener = inherit(fd).map_err(InheritError::into_io)?;
                // Socket units may name their sockets (FileDescriptorName=); say which it was.
                match std::env::var("LISTEN_FDNAMES") {
                    Ok(name) => log::info!("took the listening socket {name:?} from systemd"),
                    Err(_) => log::info!("took the listening socket from systemd"),
                }
                Ok(listener)
            }
            ListenAddr::Fd(fd) => inherit(*fd).map_err(InheritError::into_io),
        }
    }

    /// Accepts one connection. The peer is `None` for a Unix-socket client.
    pub fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept()?;
                // Responses are written whole; Nagle's algorithm would only delay their tails.
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("{peer}: TCP_NODELAY failed: {e}");
                }
                if let Err(e) = set_notsent_lowat(&stream, NOTSENT_LOWAT) {
                    log::debug!("{peer}: TCP_NOTSENT_LOWAT failed: {e}");
                }
                Ok((Stream::Tcp(stream), Some(peer)))
            }
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept()?;
                Ok((Stream::Unix(stream), None))
            }
        }
    }

    /// The TCP address, if this is a TCP listener (with the real port for port 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }

    /// A URL-ish description for the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(addr) => format!("http://{addr}/"),
                Err(_) => "tcp".to_string(),
            },
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
        }
    }
}

impl Drop for Listener {
    /// A Unix listener that made its socket file removes it when it is closed: on shutdown,
    /// and on any error path that drops the server. An inherited one leaves it to its owner.
    ///
    /// Only if the file there is still the one it made: a second instance started after
    /// this one took the path for stale, or an operator replaced it, and that file is not
    /// ours to remove.
    fn drop(&mut self) {
        let Listener::Unix {
            path,
            made: Some(made),
            ..
        } = self
        else {
            return;
        };
        match std::fs::symlink_metadata(&*path) {
            Ok(meta) if (meta.dev(), meta.ino()) == *made => {
                if let Err(e) = std::fs::remove_file(&*path) {
                    log::warn!("could not remove {}: {e}", path.display());
                }
            }
            Ok(_) => log::warn!(
                "{} is no longer the socket this server made; left in place",
                path.display()
            ),
            Err(e) => log::debug!("{}: {e}; nothing to remove", path.display()),
        }
    }
}

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START` in sd_listen_fds(3)); the
/// others, if any, follow it.
pub const SD_LISTEN_FDS_START: RawFd = 3;

/// Why an inherited descriptor (`--listen systemd` or `fd:N`) cannot be the listener.
#[derive(Debug)]
pub enum InheritError {
    /// A variable of the protocol is not set: the process was not socket-activated.
    Unset(&'static str),
    /// A variable of the protocol is not a number.
    NotANumber(&'static str, String),
    /// `LISTEN_PID` names another process: the sockets were meant for it, not for us.
    OtherProcess {
        /// The value of `LISTEN_PID`.
        listen_pid: u32,
        /// This process's PID.
        ours: u32,
    },
    /// `LISTEN_FDS` is not 1: readyserve serves exactly one socket.
    Count(u32),
    /// The descriptor is not open in this process.
    NotOpen(RawFd),
    /// The descriptor is open but is not a socket; the text says what it is instead.
    NotASocket(RawFd, &'static str),
    /// A socket, but not a stream (TCP-like) one: datagrams, for example.
    NotAStream(RawFd),
    /// A stream socket of a family other than IPv4, IPv6 or Unix.
    Family(RawFd, rustix::net::AddressFamily),
    /// A stream socket that is not listening: a connection (systemd's `Accept=yes` passes
    /// those), or one never given to listen(2).
    NotListening(RawFd),
    /// Asking the kernel about the descriptor, or setting its flags, failed.
    Sys(RawFd, io::Error),
}

impl std::fmt::Display for InheritError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InheritError::Unset(var) => write!(
                f,
                "{var} is not set: readyserve was not started by socket activation \
                 (a systemd .socket unit, or systemd-socket-activate)"
            ),
            InheritError::NotANumber(var, value) => write!(f, "{var}={value:?} is not a number"),
            InheritError::OtherProcess { listen_pid, ours } => write!(
                f,
                "LISTEN_PID={listen_pid}, but this process is {ours}: the sockets were \
                 passed to another process"
            ),
            InheritError::Count(n) => write!(
                f,
                "LISTEN_FDS={n}, and readyserve takes exactly one socket: give the socket \
                 unit one ListenStream="
            ),
            InheritError::NotOpen(fd) => write!(f, "descriptor {fd} is not open"),
            InheritError::NotASocket(fd, what) => {
                write!(f, "descriptor {fd} is {what}, not a socket")
            }
            InheritError::NotAStream(fd) => write!(
                f,
                "descriptor {fd} is not a stream socket (ListenStream=, not ListenDatagram=)"
            ),
            InheritError::Family(fd, family) => write!(
                f,
                "descriptor {fd} is a socket of family {family:?}, not IPv4, IPv6 or Unix"
            ),
            InheritError::NotListening(fd) => write!(
                f,
                "descriptor {fd} is a socket that is not listening (a connection? a socket \
                 unit must have Accept=no)"
            ),
            InheritError::Sys(fd, e) => write!(f, "descriptor {fd}: {e}"),
        }
    }
}

impl std::error::Error for InheritError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InheritError::Sys(_, e) => Some(e),
            _ => None,
        }
    }
}

impl InheritError {
    /// As the `io::Error` that [`Listener::bind`] returns.
    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, self)
    }
}

/// The descriptor systemd passed to this process, by the protocol of sd_listen_fds(3):
/// `LISTEN_PID` must be our PID (the variables may have been inherited from a parent that
/// was the one activated), and `LISTEN_FDS` the number of descriptors from 3 on.
fn systemd_fd() -> Result<RawFd, InheritError> {
    let listen_pid = env_number("LISTEN_PID")?;
    let ours = rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    if listen_pid != ours {
        return Err(InheritError::OtherProcess { listen_pid, ours });
    }
    match env_number("LISTEN_FDS")? {
        1 => Ok(SD_LISTEN_FDS_START),
        n => Err(InheritError::Count(n)),
    }
}

/// The variable `var` as a number.
fn env_number(var: &'static str) -> Result<u32, InheritError> {
    let value = std::env::var_os(var).ok_or(InheritError::Unset(var))?;
    let value = value.to_string_lossy();
    value
        .parse()
        .map_err(|_| InheritError::NotANumber(var, value.into_owned()))
}

/// Sets `TCP_NOTSENT_LOWAT` (see [`NOTSENT_LOWAT`]), through socket2.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_notsent_lowat(socket: &TcpStream, bytes: u32) -> io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_notsent_lowat(bytes)
}

/// Elsewhere the option is left alone: it paces large files, nothing depends on it.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_notsent_lowat(_socket: &TcpStream, _bytes: u32) -> io::Result<()> {
    Ok(())
}

/// Takes over the listening socket on descriptor `fd`: checks that it is a listening stream
/// socket, sets close-on-exec and non-blocking, and wraps it by its address family.
fn inherit(fd: RawFd) -> Result<Listener, InheritError> {
    use rustix::fs::FileType;
    use rustix::net::{AddressFamily, SocketType, sockopt};

    // SAFETY: fcntl(F_GETFD) with any integer is sound: it reads the descriptor's flags and
    // touches no memory; for a number that is not open it fails with EBADF. It is asked on
    // the raw number because nothing may own the descriptor before we know it is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(InheritError::NotOpen(fd));
    }
    // SAFETY: `fd` is open (just checked), and it was handed to this process to be taken
    // over: by systemd (LISTEN_PID is ours) or by whoever started us with `--listen fd:N`.
    // Nothing else in the process owns it: stdin, stdout and stderr are refused when
    // parsing, `Server::bind` takes the listener before it opens any file or socket of its
    // own (so the number cannot be one of ours that happened to be free), and this runs
    // once per bind, so the descriptor gets exactly one owner, closed exactly once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let sys = |e: rustix::io::Errno| InheritError::Sys(fd, e.into());

    let kind = FileType::from_raw_mode(rustix::fs::fstat(&owned).map_err(sys)?.st_mode);
    let what = match kind {
        FileType::Socket => None,
        FileType::RegularFile => Some("a regular file"),
        FileType::Directory => Some("a directory"),
        FileType::Fifo => Some("a pipe"),
        FileType::CharacterDevice => Some("a character device (a terminal?)"),
        FileType::BlockDevice => Some("a block device"),
        FileType::Symlink | FileType::Unknown => Some("of an unknown kind"),
    };
    if let Some(what) = what {
        return Err(InheritError::NotASocket(fd, what));
    }
    if sockopt::socket_type(&owned).map_err(sys)? != SocketType::STREAM {
        return Err(InheritError::NotAStream(fd));
    }
    let unix = match socket_domain(&owned).map_err(sys)? {
        AddressFamily::INET | AddressFamily::INET6 => false,
        AddressFamily::UNIX => true,
        other => return Err(InheritError::Family(fd, other)),
    };
    if !is_listening(&owned).map_err(sys)? {
        return Err(InheritError::NotListening(fd));
    }
    // systemd clears close-on-exec so that the descriptor survives its exec(2) into us; set
    // it again, so that it goes no further. Non-blocking, because the loop accepts until
    // WouldBlock. (O_NONBLOCK is shared with systemd's copy, which systemd does not mind.)
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC).map_err(sys)?;
    rustix::io::ioctl_fionbio(&owned, true).map_err(sys)?;
    if !unix {
        let listener = std::net::TcpListener::from(owned);
        return Ok(Listener::Tcp(TcpListener::from_std(listener)));
    }
    let listener = std::os::unix::net::UnixListener::from(owned);
    let path = listener
        .local_addr()
        .map(|a| unix_path(&a))
        .map_err(|e| InheritError::Sys(fd, e))?;
    Ok(Listener::Unix {
        listener: UnixListener::from_std(listener),
        path,
        made: None,
    })
}

/// The address family of a socket (`SO_DOMAIN`).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn socket_domain(socket: &OwnedFd) -> rustix::io::Result<rustix::net::AddressFamily> {
    rustix::net::sockopt::socket_domain(socket)
}

/// The address family of a socket, from its address: systems such as macOS have no
/// `SO_DOMAIN`.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn socket_domain(socket: &OwnedFd) -> rustix::io::Result<rustix::net::AddressFamily> {
    Ok(rustix::net::getsockname(socket)?.address_family())
}

/// Whether a socket is listening (`SO_ACCEPTCONN`).
#[cfg(not(target_vendor = "apple"))]
fn is_listening(socket: &OwnedFd) -> rustix::io::Result<bool> {
    rustix::net::sockopt::socket_acceptconn(socket)
}

/// Apple's systems declare `SO_ACCEPTCONN` but do not implement it: there a socket is taken
/// on trust, and one that is not listening fails at its first accept(2).
#[cfg(target_vendor = "apple")]
fn is_listening(_: &OwnedFd) -> rustix::io::Result<bool> {
    Ok(true)
}

/// The name of an abstract Unix socket (a Linux invention), if `addr` is one.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_name(addr: &std::os::unix::net::SocketAddr) -> Option<&[u8]> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    addr.as_abstract_name()
}

/// Other systems have no abstract sockets.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_name(_: &std::os::unix::net::SocketAddr) -> Option<&[u8]> {
    None
}

/// A Unix socket's address for people: its path, or `@name` for an abstract socket.
fn unix_path(addr: &std::os::unix::net::SocketAddr) -> PathBuf {
    match (addr.as_pathname(), abstract_name(addr)) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(name)) => PathBuf::from(format!("@{}", String::from_utf8_lossy(name))),
        (None, None) => PathBuf::from("(unnamed)"),
    }
}

/// A TCP listener made with socket2, for SO_REUSEPORT and an explicit backlog.
fn bind_tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Restarting must not wait for old connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        // Each process has its own queue; the kernel spreads new connections over them.
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds a Unix socket at `path` with permissions `mode`, and returns it with its file's
/// device and inode.
///
/// Bound at `path` directly, the socket would have the umask's mode (0777 with umask 000)
/// until the chmod, and a client that connected in between would be served. So it is bound
/// inside a private directory beside `path` (mode 0700: no one else can reach into it),
/// given its mode there, and only then linked to `path`. link(2) fails if `path` exists, so
/// a socket another process made there since [`remove_stale_socket`] looked is not replaced
/// either. Where the private directory cannot be made, or the longer name does not fit in a
/// socket address, it is bound at `path` and then chmod-ed, as before.
fn bind_unix(path: &Path, mode: u32) -> io::Result<(UnixListener, (u64, u64))> {
    let set_mode = |at: &Path| std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode));
    let parent = directory_of(path);
    // A name no one can guess ahead (the PID and the clock's nanoseconds): a directory made
    // there beforehand would turn the protection off.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let private = parent.join(format!(".readyserve-{}-{nanos}", std::process::id()));
    let staged = private.join("s");
    let listener = match std::fs::DirBuilder::new().mode(0o700).create(&private) {
        Ok(()) => {
            let linked = UnixListener::bind(&staged).and_then(|listener| {
                set_mode(&staged)?;
                std::fs::hard_link(&staged, path)?;
                Ok(listener)
            });
            // The private name goes whatever happened; the socket lives on under `path`.
            let _ = std::fs::remove_file(&staged);
            let _ = std::fs::remove_dir(&private);
            match linked {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process made a socket file here meanwhile",
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    // The private name is longer than a socket address takes; `path` is not
                    // (that was checked before).
                    log::warn!(
                        "{}: too long for a socket address; binding the socket in place (its \
                         mode is the umask's until the chmod)",
                        staged.display()
                    );
                    None
                }
                other => Some(other?),
            }
        }
        Err(e) => {
            log::warn!(
                "{}: {e}; binding the socket in place (its mode is the umask's until the chmod)",
                private.display()
            );
            None
        }
    };
    let listener = match listener {
        Some(listener) => listener,
        None => {
            let listener = UnixListener::bind(path)?;
            set_mode(path)?;
            listener
        }
    };
    let meta = std::fs::symlink_metadata(path)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

/// The directory a socket file is in (`.` for a bare name).
fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// How long a start-up waits for another process's lock on the socket's directory.
const DIRECTORY_LOCK_WAIT: Duration = Duration::from_secs(2);

/// Two instances starting on one socket path at once each probe the file, and one could
/// take the other's just-bound socket for stale and remove it. So the probe, the removal
/// and the bind happen under an exclusive flock(2) on the socket's directory (a lock file
/// would be one more file left behind). It is held for milliseconds, only while binding;
/// a lock held longer than [`DIRECTORY_LOCK_WAIT`] (a process stopped mid-bind) is an
/// error, not a reason to race. A directory that cannot be opened or locked at all (no
/// read permission, a file system without flock) is bound as before, unlocked.
fn lock_directory(path: &Path) -> io::Result<Option<File>> {
    use rustix::fs::FlockOperation;
    let dir = directory_of(path);
    let Ok(handle) = File::open(dir) else {
        return Ok(None); // a missing directory is reported by the bind
    };
    let give_up = Instant::now() + DIRECTORY_LOCK_WAIT;
    loop {
        match rustix::fs::flock(&handle, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Some(handle)),
            Err(rustix::io::Errno::WOULDBLOCK) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another process has held a lock on {} for {}s (another instance \
                         stopped while binding?)",
                        dir.display(),
                        DIRECTORY_LOCK_WAIT.as_secs()
                    ),
                ));
            }
            Err(e) => {
                log::debug!("{}: flock: {e}; binding without the lock", dir.display());
                return Ok(None);
            }
        }
    }
}

/// Removes a socket file left behind by a process that is gone: one whose connect(2) is
/// refused. A file that is not a socket, a socket someone still listens on (the connect
/// succeeds, or waits because its queue is full), and one we cannot tell about (no
/// permission to connect: another user's live socket, say) are left alone and reported.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match probe_unix_socket(path) {
        Ok(()) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket (its queue is full)",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Only if it is still the file that refused. Another readyserve cannot have
            // replaced it meanwhile (both bind under the directory's lock, see
            // `lock_directory`); another program could, and this narrows its window.
            let now = std::fs::symlink_metadata(path)?;
            if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process made a socket file here meanwhile",
                ));
            }
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()), // gone meanwhile
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot tell whether the socket is in use ({e}); remove it if it is stale"),
        )),
    }
}

/// A non-blocking connect(2) to the socket at `path`: it does not wait for a listener that
/// is too busy to accept (its queue full: `WouldBlock`).
fn probe_unix_socket(path: &Path) -> io::Result<()> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::unix(path)?) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
        other => other,
    }
}

impl Source for Listener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(registry, token, interests),
            Listener::Unix { listener, .. } => listener.register(registry, token, interests),
        }
    }
    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(registry, token, interests),
            Listener::Unix { listener, .. } => listener.reregister(registry, token, interests),
        }
    }
    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(registry),
            Listener::Unix { listener, .. } => listener.deregister(registry),
        }
    }
}

/// A client connection over TCP or a Unix socket.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix-domain socket.
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A byte stream a [`Connection`](crate::connection::Connection) can run on: a [`Stream`]
/// from a listener, or an in-memory stand-in in tests, fuzzing and benchmarks.
pub trait Transport: Read + Write {
    /// Shuts down the sending half (TCP FIN), keeping the receiving half open.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Writes the slices in order, as much as fits, in one call (writev(2)); with `more`,
    /// also tells the kernel that more data follows at once (MSG_MORE), so that a response
    /// head and the file after it fill whole packets.
    ///
    /// The default writes the first non-empty slice only, with `write`: correct for any
    /// transport, just more calls.
    fn send_vectored(&mut self, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
        let _ = more;
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(first) => self.write(first),
            None => Ok(0),
        }
    }

    /// Sends up to `count` bytes of `file` from its current offset, in the kernel, without
    /// copying them through user space (sendfile(2)). `Unsupported` where that is not
    /// possible; the caller then reads and writes instead.
    fn send_file(&mut self, file: &mut File, count: usize) -> io::Result<usize> {
        let _ = (file, count);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Sets how many bytes the transport may hold untransmitted before it stops taking more
    /// (`TCP_NOTSENT_LOWAT`; see [`NOTSENT_LOWAT`]). The default does nothing: only TCP has
    /// such a bound.
    fn set_unsent_bound(&mut self, bytes: u32) -> io::Result<()> {
        let _ = bytes;
        Ok(())
    }
}

/// [`Transport::send_vectored`] for a socket: one sendmsg(2) of all the slices, with
/// MSG_NOSIGNAL (a client that went away is an error to handle, not a SIGPIPE) and, when a
/// file follows, MSG_MORE.
///
/// One slice, the usual case (a head, and a small body copied beside it), goes with send(2)
/// instead: sendmsg(2) copies in a `msghdr` and an iovec array and checks them, which on
/// Linux is 0.15 µs of the 8 µs a keep-alive request costs the server on loopback (`perf`,
/// against `benches/limit-probe`, which uses send(2)).
fn send_vectored(socket: impl AsFd, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    use rustix::net::SendAncillaryBuffer;
    if let [one] = bufs {
        return Ok(rustix::net::send(socket, one, send_flags(more))?);
    }
    // No control messages: the empty ancillary buffer allocates nothing.
    let mut control = SendAncillaryBuffer::default();
    Ok(rustix::net::sendmsg(
        socket,
        bufs,
        &mut control,
        send_flags(more),
    )?)
}

/// `MSG_NOSIGNAL`, and `MSG_MORE` when `more`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_flags(more: bool) -> rustix::net::SendFlags {
    use rustix::net::SendFlags;
    if more {
        SendFlags::MORE | SendFlags::NOSIGNAL
    } else {
        SendFlags::NOSIGNAL
    }
}

/// The BSDs have no `MSG_MORE`: a response head may go out in a packet of its own.
#[cfg(any(
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
fn send_flags(_more: bool) -> rustix::net::SendFlags {
    rustix::net::SendFlags::NOSIGNAL
}

/// Apple's systems have neither flag. SIGPIPE stays harmless: mio and socket2 set
/// `SO_NOSIGPIPE` on the sockets they make, and a Rust program ignores SIGPIPE anyway.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
fn send_flags(_more: bool) -> rustix::net::SendFlags {
    rustix::net::SendFlags::empty()
}

/// sendfile(2): up to `count` bytes of `file`, from and advancing its own offset, to
/// `socket`.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
))]
fn sendfile(socket: impl AsFd, file: &File, count: usize) -> io::Result<usize> {
    // `None`: use and advance the file's own offset, as read(2) would.
    Ok(rustix::fs::sendfile(socket, file, None, count)?)
}

/// Other systems' sendfile has another shape (and the `portable-fallbacks` feature hides
/// Linux's): `Unsupported`, and the connection reads and writes instead.
#[cfg(not(all(
    any(target_os = "linux", target_os = "android"),
    not(feature = "portable-fallbacks")
)))]
fn sendfile(_: impl AsFd, _: &File, _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

impl Transport for Stream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => send_vectored(&*s, bufs, more),
            // MSG_MORE means nothing to a Unix socket: there are no packets to fill.
            Stream::Unix(s) => send_vectored(&*s, bufs, false),
        }
    }

    fn send_file(&mut self, file: &mut File, count: usize) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => sendfile(&*s, file, count),
            Stream::Unix(s) => sendfile(&*s, file, count),
        }
    }

    fn set_unsent_bound(&mut self, bytes: u32) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => set_notsent_lowat(s, bytes),
            Stream::Unix(_) => Ok(()),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }
    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }
    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}

#[doc(hidden)]
pub mod testing {
    //! An in-memory socket for the connection's unit tests, the fuzz target and the
    //! benchmark: the state machine runs on it with no network and no kernel. Not part of
    //! the API.

    use std::collections::VecDeque;
    use std::io::{self, Read, Write};

    use super::Transport;

    /// A socket whose peer is a script: what it sent (`input`), how much more it will take
    /// (`room`), and whether it has shut down its side (`eof`).
    #[derive(Debug)]
    pub struct MemSocket {
        /// Bytes the client sent that were not read yet. A read takes what fits; one that
        /// takes all of it comes up short, as a real socket's would.
        pub input: VecDeque<u8>,
        /// Once `input` is empty, a read says EOF (the client's FIN) instead of WouldBlock.
        pub eof: bool,
        /// Everything written, unless `discard_output`.
        pub output: Vec<u8>,
        /// Counts output without keeping it (the benchmark).
        pub discard_output: bool,
        /// Bytes written in all.
        pub written: usize,
        /// How many more bytes the client will take: 0 for a client that does not read.
        pub room: usize,
        /// Our sending half was shut down (FIN sent).
        pub shut_down: bool,
    }

    impl MemSocket {
        /// A socket with nothing to read, unlimited room, and output kept.
        pub fn new() -> Self {
            MemSocket {
                input: VecDeque::new(),
                eof: false,
                output: Vec::new(),
                discard_output: false,
                written: 0,
                room: usize::MAX,
                shut_down: false,
            }
        }
    }

    impl Default for MemSocket {
        fn default() -> Self {
            MemSocket::new()
        }
    }

    impl Read for MemSocket {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            // VecDeque's own Read copies a slice at a time (a byte at a time, as this did,
            // made the benchmark a tenth slower).
            self.input.read(buf)
        }
    }

    impl Write for MemSocket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.written += n;
            if !self.discard_output {
                self.output.extend_from_slice(&buf[..n]);
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for MemSocket {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.shut_down = true;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The socket option as the kernel holds it (`u32::MAX`: no bound).
    fn notsent_lowat(socket: &impl std::os::fd::AsFd) -> u32 {
        socket2::SockRef::from(socket)
            .tcp_notsent_lowat()
            .expect("getsockopt")
    }

    #[test]
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn accepted_tcp_connections_bound_their_unsent_bytes() {
        let options = BindOptions {
            reuse_port: false,
            unix_mode: 0o660,
        };
        let addr = ListenAddr::Tcp("127.0.0.1:0".parse().expect("address"));
        let listener = Listener::bind(&addr, options).expect("bind");
        let client =
            std::net::TcpStream::connect(listener.tcp_addr().expect("tcp")).expect("connect");
        // The kernel's default is "no bound" (u32::MAX).
        assert_ne!(notsent_lowat(&client), NOTSENT_LOWAT);
        let accepted = loop {
            match listener.accept() {
                Ok((Stream::Tcp(s), _)) => break s,
                Ok(_) => panic!("a TCP listener accepted something else"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert_eq!(notsent_lowat(&accepted), NOTSENT_LOWAT);
    }
}
