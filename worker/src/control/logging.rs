//! Log output: text or JSON lines, filtered by `RUST_LOG` when it is set,
//! else at the worker's level (`--loglevel`, default `info`).
//!
//! One event is one line, whatever it carries: plugin log messages, host
//! output and message fields come from plugins and producers, and a `\n` in
//! them would forge a log line. JSON escapes them itself; in text the line
//! breaks and carriage returns inside an event are written as `\n` and `\r`
//! (escape sequences are already escaped by the formatter).

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(format: LogFormat, level: tracing::level_filters::LevelFilter) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.to_string()));
    // Colour only for a person at a terminal, never into log files.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.with_writer(OneLine).try_init(),
        LogFormat::Json => {
            builder.with_writer(std::io::stderr).json().flatten_event(true).with_current_span(true).try_init()
        }
    };
}

/// Standard error, one line per event.
#[derive(Debug, Clone, Copy)]
struct OneLine;

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLine;

    fn make_writer(&'a self) -> OneLine {
        OneLine
    }
}

impl Write for OneLine {
    /// The formatter hands over each event whole, ending in its newline.
    fn write(&mut self, event: &[u8]) -> std::io::Result<usize> {
        std::io::stderr().lock().write_all(&one_line(event))?;
        Ok(event.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// `event` with its inner line breaks escaped and one newline at the end.
fn one_line(event: &[u8]) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let mut line = Vec::with_capacity(event.len() + 8);
    for &byte in body {
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            _ => line.push(byte),
        }
    }
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn an_event_is_one_line_whatever_it_carries() {
        let forged = b"INFO plugin: done\nERROR celerity: the database is gone\r\n";
        assert_eq!(one_line(forged), b"INFO plugin: done\\nERROR celerity: the database is gone\\r\n");
        assert_eq!(one_line(b"INFO ok\n"), b"INFO ok\n");
        assert_eq!(one_line(b"no newline"), b"no newline\n");
    }
}
