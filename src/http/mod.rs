//! The HTTP protocol, sans I/O: request heads and bodies in, response heads out.
//!
//! Nothing in this folder touches a socket or a file. Each module turns bytes (or parsed
//! headers) into values and back, so it can be read, tested and fuzzed on its own, the way
//! smoltcp keeps its `wire` module apart from its sockets.

pub mod body;
pub mod conditional;
pub mod encoding;
pub mod error;
pub mod range;
pub mod request;
pub mod response;
