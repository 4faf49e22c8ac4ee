//! A minimal stderr logger: `2026-11-29T10:00:00.123Z INFO message`.
//! The level comes from `ACCESSGATE_LOG` (error, warn, info, debug, trace).

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) || r.target().starts_with("smoltcp") {
            return;
        }
        let _ = writeln!(std::io::stderr().lock(), "{} {:<5} {}", timestamp(), r.level(), r.args());
    }

    fn flush(&self) {}
}

/// RFC 3339 UTC with milliseconds, from the system clock.
pub fn timestamp() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = control::audit::chain::civil(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Installs the logger once.
pub fn init() {
    let level = match std::env::var("ACCESSGATE_LOG").as_deref() {
        Ok("error") => log::LevelFilter::Error,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    };
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
