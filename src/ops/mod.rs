//! What operating the server needs beside serving: the access log, the Prometheus
//! counters, the live view of the loop (`/loop`), and the client's real address behind a
//! trusted proxy (from a header, or from the PROXY protocol).

pub mod access_log;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
