//! What operating the server needs beside serving: the access log, the Prometheus
//! counters, the live view of the loop (`/loop`), the client's real address behind a
//! trusted proxy (from a header, or from the PROXY protocol), and a server log on stderr
//! that never stops the loop.

pub mod access_log;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod stderr_log;
