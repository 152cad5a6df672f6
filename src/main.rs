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
    // Its lines are dropped, not waited for, when stderr would block (see `stderr_log`).
    let max_level = logger.max_level();
    let guarded = readyserve::ops::stderr_log::Guarded::new(logger);
    if let Err(e) = log::set_boxed_logger(Box::new(guarded)) {
        eprintln!("readyserve: cannot start logging: {e}");
        return ExitCode::FAILURE;
    }
    log::set_max_level(max_level);

    match readyserve::server::raise_fd_limit() {
        Some(limit) => log::info!("open-file limit: {limit}"),
        None => log::info!("open-file limit: unlimited"),
    }

    // sd_listen_fds(3) can unset LISTEN_PID and LISTEN_FDS once the socket is taken, so that
    // a child process cannot mistake them for its own. readyserve starts no child process,
    // and unsetting them would need `unsafe` (std::env::remove_var), so they are left: the
    // LISTEN_PID check keeps any other process from taking them as its own.
    let bound = Server::bind(config);
    let mut server = match bound {
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
