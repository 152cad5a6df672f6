//! The `readyserve` binary: read the settings, start logging, bind, run.

use std::process::ExitCode;

use clap::Parser;
use readyserve::{Config, Server};

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One clear line, not a page of usage.
            let text = e.to_string();
            eprintln!(
                "readyserve: {}",
                text.lines().next().unwrap_or("invalid arguments")
            );
            return ExitCode::from(2);
        }
    };

    let level = if config.trace {
        log::LevelFilter::Trace
    } else {
        config.log_level
    };
    let logger = simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Warn)
        .with_module_level("readyserve", level)
        .with_utc_timestamps();
    if let Err(e) = logger.init() {
        eprintln!("readyserve: cannot start logging: {e}");
        return ExitCode::FAILURE;
    }

    match readyserve::server::raise_fd_limit() {
        Some(limit) => log::info!("open-file limit: {limit}"),
        None => log::info!("open-file limit: unlimited"),
    }

    let mut server = match Server::bind(config) {
        Ok(server) => server,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = server.handle_signals() {
        log::error!("cannot handle signals: {e}");
        return ExitCode::FAILURE;
    }
    log::info!("serving {} on {}", server.root().display(), server.url());
    if let Some(addr) = server.metrics_addr() {
        log::info!("metrics on http://{addr}/metrics");
    }
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
