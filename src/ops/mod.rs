//! What operating the server needs beside serving: the access log, the Prometheus
//! counters, and the client's real address behind a trusted proxy.

pub mod access_log;
pub mod metrics;
pub mod proxy;
