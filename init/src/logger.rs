//! Logging for the appliance: every record goes to the console (stderr) and, when we are PID 1,
//! to /dev/kmsg, each stamped with the kernel uptime so boot stages can be timed from the log.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;

struct Logger {
    kmsg: Option<Mutex<std::fs::File>>,
    level: LevelFilter,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let up = crate::sysinfo::uptime();
        let tag = match r.level() {
            Level::Error => "ERROR ",
            Level::Warn => "WARN ",
            _ => "",
        };
        let _ = writeln!(std::io::stderr(), "[{up:9.3}] ferry: {tag}{}", r.args());
        if let Some(k) = &self.kmsg {
            // One write per record (kmsg makes a record of each write). Priority 7 keeps the
            // kernel from echoing it to the console a second time; `dmesg` still shows it.
            let line = format!("<7>ferry: {tag}{}\n", r.args());
            if let Ok(mut f) = k.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger. `kmsg` adds /dev/kmsg as a second sink (PID 1 only).
pub fn init(debug: bool, kmsg: bool) {
    let kmsg = kmsg.then(|| OpenOptions::new().write(true).open("/dev/kmsg").ok()).flatten().map(Mutex::new);
    let level = if debug { LevelFilter::Debug } else { LevelFilter::Info };
    if log::set_boxed_logger(Box::new(Logger { kmsg, level })).is_ok() {
        log::set_max_level(level);
    }
}
