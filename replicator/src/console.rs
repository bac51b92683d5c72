//! The sender's terminal output (log lines, progress, JSON events), with one rule: never write
//! to a frozen filesystem. While a freeze is held, output whose file lives on a frozen
//! filesystem (stdout or stderr redirected into a file there) is queued in memory and written
//! after the thaw; output to a terminal or a pipe goes out at once.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// Queued lines are capped; beyond it the oldest are dropped and counted.
const MAX_QUEUED: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    Out,
    Err,
}

struct Hold {
    /// Which streams are held (their files are on a frozen filesystem).
    out: bool,
    err: bool,
    queue: VecDeque<(Stream, String)>,
    dropped: u64,
}

static HOLD: Mutex<Hold> = Mutex::new(Hold { out: false, err: false, queue: VecDeque::new(), dropped: 0 });

fn write_now(s: Stream, text: &str) {
    match s {
        Stream::Out => {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(text.as_bytes());
            let _ = o.flush();
        }
        Stream::Err => {
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

/// Writes `text` (with its own newline, or a carriage return for a redrawn line).
pub fn write(s: Stream, text: &str) {
    let mut h = HOLD.lock().unwrap_or_else(|e| e.into_inner());
    let held = match s {
        Stream::Out => h.out,
        Stream::Err => h.err,
    };
    if held {
        if h.queue.len() >= MAX_QUEUED {
            h.queue.pop_front();
            h.dropped += 1;
        }
        h.queue.push_back((s, text.to_string()));
        return;
    }
    drop(h);
    write_now(s, text);
}

pub fn line(s: Stream, text: &str) {
    write(s, &format!("{text}\n"));
}

/// `st_dev` of the file behind a stream when it is a regular file or directory (a terminal or
/// a pipe never blocks on a frozen filesystem).
fn file_dev(fd: i32) -> Option<u64> {
    let st = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }).ok()?;
    let fmt = st.st_mode & libc::S_IFMT;
    (fmt == libc::S_IFREG || fmt == libc::S_IFDIR).then_some(st.st_dev)
}

/// Holds the streams whose files live on one of the filesystems with these `st_dev` values.
pub fn hold_for(frozen_devs: &[u64]) {
    let mut h = HOLD.lock().unwrap_or_else(|e| e.into_inner());
    h.out = file_dev(std::io::stdout().as_raw_fd()).is_some_and(|d| frozen_devs.contains(&d));
    h.err = file_dev(std::io::stderr().as_raw_fd()).is_some_and(|d| frozen_devs.contains(&d));
}

/// Releases the hold and writes what was queued.
pub fn release() {
    let (queue, dropped) = {
        let mut h = HOLD.lock().unwrap_or_else(|e| e.into_inner());
        h.out = false;
        h.err = false;
        (std::mem::take(&mut h.queue), std::mem::take(&mut h.dropped))
    };
    if dropped > 0 {
        write_now(Stream::Err, &format!("ferry: {dropped} lines of output were dropped while frozen\n"));
    }
    for (s, t) in queue {
        write_now(s, &t);
    }
}

/// A `log` backend for the CLI: `ferry: [warning: |error: ]message` on stderr.
pub struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let lvl = match r.level() {
                log::Level::Error => "error: ",
                log::Level::Warn => "warning: ",
                _ => "",
            };
            line(Stream::Err, &format!("ferry: {lvl}{}", r.args()));
        }
    }
    fn flush(&self) {}
}

/// Installs [`Logger`]: info, or debug with `FERRY_DEBUG` set.
pub fn init_logger() {
    let _ = log::set_logger(&Logger);
    log::set_max_level(if std::env::var_os("FERRY_DEBUG").is_some() {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
}
