//! The `readyserve` binary: read the settings, start logging, bind, run.

use std::process::ExitCode;

use readyserve::config::{CommandLineError, ListenAddr};
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

    let activated = matches!(config.listen, ListenAddr::Systemd);
    let bound = Server::bind(config);
    if activated {
        // sd_listen_fds(3) unsets its variables once the sockets are taken, so that a child
        // process cannot mistake them for its own; do the same.
        // SAFETY: changing the environment is unsound only while another thread may read it,
        // and there is none: nothing before this point starts a thread (clap, the logger and
        // `Server::bind` run on this one; signal handling is set up below).
        unsafe {
            for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
                std::env::remove_var(var);
            }
        }
    }
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
