//! The `readyserve` binary: read the settings, start logging, bind, run.

use std::process::ExitCode;

use readyserve::config::CommandLineError;
use readyserve::{Config, Server};

fn main() -> ExitCode {
    let config = match Config::from_command_line(std::env::args_os()) {
        Ok(config) => config,
        Err(CommandLineError::Info(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(CommandLineError::Invalid(line)) => {
            // One clear line, not a page of usage.
            eprintln!("readyserve: {line}");
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
