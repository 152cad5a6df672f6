//! Where connections come from: a TCP or a Unix-domain listener, and the one stream type
//! the loop keeps in its slab for both.
//!
//! Behind a reverse proxy on the same machine, a Unix socket saves the TCP stack's work
//! and cannot be reached from the network at all. Both kinds are plain readiness sources to
//! mio, so the loop does not care which one it has.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::config::ListenAddr;

/// The kernel's queue of connections not yet accepted.
const BACKLOG: i32 = 1024;

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix-domain socket at `path`, which is removed again on shutdown.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its filesystem path.
        path: PathBuf,
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
    /// Binds `addr`.
    pub fn bind(addr: &ListenAddr, options: BindOptions) -> io::Result<Listener> {
        match addr {
            ListenAddr::Tcp(addr) => bind_tcp(*addr, options.reuse_port).map(Listener::Tcp),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path)?;
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(options.unix_mode))?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
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
    /// A Unix listener removes its socket file when it is closed: on shutdown, and on any
    /// error path that drops the server.
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self
            && let Err(e) = std::fs::remove_file(&*path)
        {
            log::warn!("could not remove {}: {e}", path.display());
        }
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

/// Removes a socket file left behind by a process that is gone. A file that is not a
/// socket, or a socket someone still listens on, is left alone and reported.
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
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
        Err(_) => {
            log::info!("removing stale socket {}", path.display());
            std::fs::remove_file(path)
        }
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
}

/// [`Transport::send_vectored`] for a socket: one sendmsg(2) of all the slices, with
/// MSG_NOSIGNAL (a client that went away is an error to handle, not a SIGPIPE) and, when a
/// file follows, MSG_MORE.
fn send_vectored(socket: impl AsFd, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendFlags};
    let flags = if more {
        SendFlags::MORE | SendFlags::NOSIGNAL
    } else {
        SendFlags::NOSIGNAL
    };
    // No control messages: the empty ancillary buffer allocates nothing.
    let mut control = SendAncillaryBuffer::default();
    Ok(rustix::net::sendmsg(socket, bufs, &mut control, flags)?)
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
        // `None`: use and advance the file's own offset, as read(2) would.
        match self {
            Stream::Tcp(s) => Ok(rustix::fs::sendfile(&*s, &*file, None, count)?),
            Stream::Unix(s) => Ok(rustix::fs::sendfile(&*s, &*file, None, count)?),
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
            let n = buf.len().min(self.input.len());
            for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
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
