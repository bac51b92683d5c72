//! This machine's load: CPU utilisation sampled from `/proc/stat` over a short window and memory
//! utilisation from `/proc/meminfo`. Sending reads, hashes and compresses every used block: on a
//! saturated server it competes with the services.

use super::host::Host;
use super::{pct, Item, Level};

/// CPU utilisation above this is a Warning.
pub const CPU_WARN: f64 = 90.0;
/// Memory utilisation above this is a Warning.
pub const MEM_WARN: f64 = 95.0;

/// (busy, total) jiffies of the `cpu` line of /proc/stat.
fn jiffies(stat: &str) -> Option<(u64, u64)> {
    let l = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Utilisation in % between two /proc/stat snapshots.
pub fn cpu_busy(before: &str, after: &str) -> Option<f64> {
    let (b0, t0) = jiffies(before)?;
    let (b1, t1) = jiffies(after)?;
    let dt = t1.checked_sub(t0).filter(|&d| d > 0)?;
    Some(pct(b1.saturating_sub(b0) as f64, dt as f64))
}

/// (used %, total bytes, available bytes) from /proc/meminfo.
pub fn mem_used(meminfo: &str) -> Option<(f64, u64, u64)> {
    let kib = |k: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(k)?.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    let total = kib("MemTotal:")?;
    let avail = kib("MemAvailable:")?;
    Some((pct(total.saturating_sub(avail) as f64, total as f64), total * 1024, avail * 1024))
}

pub fn cpu_item(busy: Option<f64>, window_s: f64) -> Item {
    const T: &str = "CPU utilisation";
    match busy {
        None => Item::new("cpu-load", Level::Warning, T, "could not read /proc/stat"),
        Some(b) if b > CPU_WARN => Item::new("cpu-load", Level::Warning, T, format!("{b:.1} % busy over {window_s:.1} s"))
            .fix("sending competes with the services for CPU: send at a quiet time, or limit it with --workers 1 and --bwlimit")
            .val("percent", b),
        Some(b) => Item::ok("cpu-load", T, format!("{b:.1} % busy over {window_s:.1} s")).val("percent", b),
    }
}

pub fn mem_item(m: Option<(f64, u64, u64)>) -> Item {
    const T: &str = "Memory utilisation";
    match m {
        None => Item::new(
            "memory-load",
            Level::Warning,
            T,
            "could not read MemTotal/MemAvailable in /proc/meminfo",
        ),
        Some((p, total, avail)) => {
            let detail =
                format!("{p:.1} % used ({} available of {})", super::bytes(avail), super::bytes(total));
            let i = if p > MEM_WARN {
                Item::new("memory-load", Level::Warning, T, detail)
                    .fix("ferry needs ~100 MiB per worker; with memory this tight, send with --workers 1 at a quiet time")
            } else {
                Item::ok("memory-load", T, detail)
            };
            i.val("percent", p).val("total_bytes", total).val("available_bytes", avail)
        }
    }
}

/// The start of a CPU sample: the other checks run while it lasts.
pub struct Sample {
    before: String,
    at: std::time::Instant,
}

pub fn start(h: &Host) -> Sample {
    Sample { before: h.proc_file("stat").unwrap_or_default(), at: std::time::Instant::now() }
}

/// Both load items, once at least `h.cpu_window` has passed since `s`.
pub fn finish(h: &Host, s: Sample) -> Vec<Item> {
    if let Some(left) = h.cpu_window.checked_sub(s.at.elapsed()) {
        std::thread::sleep(left);
    }
    let window = s.at.elapsed().as_secs_f64();
    let after = h.proc_file("stat").unwrap_or_default();
    vec![
        cpu_item(cpu_busy(&s.before, &after), window),
        mem_item(h.proc_file("meminfo").as_deref().and_then(mem_used)),
    ]
}

/// Both load items (samples the CPU for `h.cpu_window`).
pub fn items(h: &Host) -> Vec<Item> {
    finish(h, start(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_over_90_percent_is_a_warning() {
        let a = "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let b = "cpu  1050 0 150 820 0 0 0 0 0 0\n";
        let busy = cpu_busy(a, b).unwrap();
        assert_eq!(busy, 98.0);
        assert_eq!(cpu_item(Some(busy), 1.0).level, Level::Warning);
        assert_eq!(cpu_item(cpu_busy(a, "cpu  150 0 150 1700 0 0 0 0\n"), 1.0).level, Level::Ok);
        assert_eq!(cpu_busy(a, a), None);
        assert_eq!(cpu_item(None, 1.0).level, Level::Warning);
    }

    #[test]
    fn memory_over_95_percent_is_a_warning() {
        let full = "MemTotal:        8000000 kB\nMemFree:  10 kB\nMemAvailable:     200000 kB\n";
        let m = mem_used(full).unwrap();
        assert_eq!(m.0, 97.5);
        let i = mem_item(Some(m));
        assert_eq!(i.level, Level::Warning);
        assert_eq!(i.values["total_bytes"], 8_192_000_000u64);
        let ok = "MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n";
        assert_eq!(mem_item(mem_used(ok)).level, Level::Ok);
    }

    #[test]
    fn reads_a_fake_proc() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("stat"), "cpu  1 0 1 98 0 0 0 0\n").unwrap();
        std::fs::write(t.path().join("meminfo"), "MemTotal: 1000 kB\nMemAvailable: 10 kB\n").unwrap();
        let mut h = Host::system();
        h.proc = t.path().into();
        h.cpu_window = std::time::Duration::ZERO;
        let v = items(&h);
        // The same snapshot twice: no time passed, utilisation unknown.
        assert_eq!((v[0].id, v[0].level), ("cpu-load", Level::Warning));
        assert_eq!((v[1].id, v[1].level), ("memory-load", Level::Warning));
        assert_eq!(v[1].values["percent"], 99.0);
    }
}
