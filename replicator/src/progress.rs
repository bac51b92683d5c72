//! Progress reporting for `ferry send` — a redrawn line on a TTY (bytes, speed, ETA =
//! remaining / speed), plain lines otherwise, or JSON line events — and the `--bwlimit` token
//! bucket.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Tty,
    Lines,
    Json,
    Quiet,
}

impl Style {
    pub fn detect(json: bool) -> Self {
        if json {
            Style::Json
        } else if std::io::stderr().is_terminal() {
            Style::Tty
        } else {
            Style::Lines
        }
    }
}

pub struct Progress {
    style: Style,
    name: String,
    total: u64,
    pub done: u64,
    pub wire: u64,
    start: Instant,
    last: Instant,
}

fn human(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

impl Progress {
    pub fn new(style: Style, name: &str, total: u64) -> Self {
        let now = Instant::now();
        Progress { style, name: name.into(), total, done: 0, wire: 0, start: now, last: now }
    }

    pub fn tick(&mut self) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            self.print(false);
        }
    }

    pub fn finish(&mut self) {
        self.print(true);
    }

    fn print(&self, end: bool) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = self.total.saturating_sub(self.done) as f64;
        let eta = if rate > 0.0 { left / rate } else { 0.0 };
        let pct = if self.total > 0 { 100.0 * self.done as f64 / self.total as f64 } else { 100.0 };
        let line = format!(
            "{}: {pct:5.1}% {} / {}  {}/s  wire {}  ETA {}:{:02}",
            self.name,
            human(self.done as f64),
            human(self.total as f64),
            human(rate),
            human(self.wire as f64),
            (eta as u64) / 60,
            (eta as u64) % 60
        );
        let mut e = std::io::stderr();
        match self.style {
            Style::Tty => {
                let _ = write!(e, "\r\x1b[K{line}{}", if end { "\n" } else { "" });
            }
            Style::Lines => {
                let _ = writeln!(e, "{line}");
            }
            Style::Json => {
                let ev = serde_json::json!({"event": "progress", "disk": self.name, "done": self.done,
                    "total": self.total, "wire": self.wire, "rate": rate as u64, "eta_s": eta as u64});
                println!("{ev}");
            }
            Style::Quiet => {}
        }
    }
}

/// Token bucket: `take(n)` sleeps as needed to keep the long-run rate at `bytes_per_s`.
pub struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(mbit: f64) -> Self {
        let rate = mbit * 1e6 / 8.0;
        Bucket { rate, tokens: rate / 10.0, last: Instant::now() }
    }

    /// Changes the rate (Mbit/s) from now on.
    pub fn set(&mut self, mbit: f64) -> &mut Self {
        self.rate = mbit * 1e6 / 8.0;
        self
    }

    pub fn take(&mut self, n: usize) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate / 4.0);
        self.last = now;
        self.tokens -= n as f64;
        if self.tokens < 0.0 {
            std::thread::sleep(Duration::from_secs_f64(-self.tokens / self.rate));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_rate() {
        let mut b = Bucket::new(80.0); // 10 MB/s
        let t = Instant::now();
        for _ in 0..30 {
            b.take(100_000); // 3 MB total
        }
        let s = t.elapsed().as_secs_f64();
        assert!(s > 0.2 && s < 0.6, "{s}");
    }
}
