//! Log lines in runc's formats (logrus text or JSON) for `--log` / `--log-format`, which podman
//! parses, and error text on stderr the way runc prints it.
//!
//! Owns: the CLI's own messages. The supervisor logs with `tracing` to its state directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use crate::timefmt;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// logrus text: `time="..." level=error msg="..."`.
    Text,
    /// One JSON object per line: `{"level":"error","msg":"...","time":"..."}`.
    Json,
}

/// Where the CLI's messages go.
#[derive(Debug, Clone)]
pub struct Logger {
    file: Option<PathBuf>,
    format: LogFormat,
    debug: bool,
}

impl Logger {
    /// A logger writing to `file` (stderr only when `None`).
    pub fn new(file: Option<PathBuf>, format: LogFormat, debug: bool) -> Logger {
        Logger {
            file,
            format,
            debug,
        }
    }

    /// Whether `--debug` was given.
    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    fn line(&self, level: &str, msg: &str) -> String {
        let time = timefmt::rfc3339_secs(std::time::SystemTime::now());
        match self.format {
            LogFormat::Json => format!(
                "{}\n",
                serde_json::json!({"level": level, "msg": msg, "time": time})
            ),
            LogFormat::Text => format!("time=\"{time}\" level={level} msg={msg:?}\n"),
        }
    }

    fn write(&self, level: &str, msg: &str) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let line = self.line(level, msg);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .is_ok()
    }

    /// An error: to the log file and, like runc, the bare message on stderr (the logrus line
    /// when there is no log file).
    pub fn error(&self, msg: &str) {
        if self.write("error", msg) {
            eprintln!("{msg}");
        } else {
            eprint!(
                "{}",
                Logger::new(None, LogFormat::Text, false).line("error", msg)
            );
        }
    }

    /// A warning: log file and stderr.
    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
        eprint!(
            "{}",
            Logger::new(None, LogFormat::Text, false).line("warning", msg)
        );
    }

    /// A debug line (log file only, with `--debug`).
    pub fn debug(&self, msg: &str) {
        if self.debug {
            self.write("debug", msg);
        }
    }
}
