//! The data sync tests against a booted appliance (or `ferry-init receive`): the status and data
//! ports, authentication over the real TLS channel, the plan checked as a dry run (the same
//! checks the receiver makes before writing), throughput over the channel (the receiver decodes
//! and discards), each disk's read speed and compressibility, and an estimate of the migration
//! time. Nothing is written to a target: the session ends with `Bye` instead of a real plan.

use super::{bytes, Item, Level};
use crate::auth;
use crate::proto::{self, Msg, PIECE};
use crate::sender::{self, zstd_level, Conn, Src};
use ferry_formats::read::ReadAt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// What the data sync tests need.
pub struct Remote<'a> {
    /// HOST[:PORT] of the receiver's data port.
    pub to: &'a str,
    pub token: &'a str,
    pub fingerprint: Option<String>,
    /// The appliance's status port (on the same host).
    pub status_port: u16,
    pub compress: u8,
    pub workers: usize,
    pub bwlimit_mbit: Option<f64>,
    /// Seconds for each throughput test (network raw, network compressed, disk read).
    pub seconds: f64,
}

/// What a user can do about a failed connection, from the error's kind.
pub fn explain_io(e: &anyhow::Error, what: &str) -> String {
    let kind = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()).map(|io| io.kind());
    let why = match kind {
        Some(ErrorKind::ConnectionRefused) => {
            "refused: nothing listens there (is the appliance booted and receiving, on this port?)"
        }
        Some(ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            "timed out: a firewall drops the packets, or the address is wrong"
        }
        Some(
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof,
        ) => "reset: something on the path (a proxy, an IPS, a load balancer) cut the connection",
        Some(ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable) => "no route to the appliance",
        _ => "",
    };
    if why.is_empty() {
        format!("{what}: {e:#}")
    } else {
        format!("{what}: {why} ({e:#})")
    }
}

fn host_of(to: &str) -> &str {
    match to.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(':') => {
            h.trim_start_matches('[').trim_end_matches(']')
        }
        _ => to,
    }
}

/// The addresses `to` resolves to (for the firewall check).
pub fn addresses(to: &str) -> Vec<IpAddr> {
    let host = host_of(to);
    (host, 0).to_socket_addrs().map(|a| a.map(|s| s.ip()).collect()).unwrap_or_default()
}

/// GET /status on the appliance's status port: its JSON.
fn status(host: &str, port: u16) -> anyhow::Result<serde_json::Value> {
    let addr =
        (host, port).to_socket_addrs()?.next().ok_or_else(|| anyhow::anyhow!("no address for {host}"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /status HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    // At most 1 MiB, within 10 s in all: a server that trickles is cut off.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut body = Vec::new();
    let mut buf = [0u8; 16384];
    while body.len() < 1 << 20 {
        anyhow::ensure!(Instant::now() < deadline, "no complete answer within 10 s");
        match s.read(&mut buf)? {
            0 => break,
            n => body.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&body);
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(serde_json::from_str(json)?)
}

fn status_item(host: &str, port: u16) -> (Item, Option<String>) {
    const T: &str = "Status port";
    match status(host, port) {
        Ok(v) => {
            let fp = v["receiver"]["fingerprint"].as_str().map(str::to_string);
            let phase = v["phase"].as_str().unwrap_or("?").to_string();
            (
                Item::ok("connect-status", T, format!("{host}:{port} answers; appliance phase {phase}"))
                    .val("phase", phase),
                fp,
            )
        }
        Err(e) => (
            Item::new("connect-status", Level::Warning, T, explain_io(&e, &format!("{host}:{port}"))).fix(
                "only monitoring needs it (`ferry-init receive` has none); allow TCP to it to watch /status",
            ),
            None,
        ),
    }
}

/// Deterministic incompressible bytes.
fn noise(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    blake3::Hasher::new().update(b"ferry check").finalize_xof().fill(&mut v);
    v
}

/// Sends `pieces` (raw length, compressed?, bytes) round-robin for `secs`; returns (raw bytes,
/// wire bytes, seconds) as the receiver counted them.
fn sink(c: &mut Conn, pieces: &[(u32, bool, Vec<u8>)], secs: f64) -> anyhow::Result<(u64, u64, f64)> {
    let t0 = Instant::now();
    let mut i = 0;
    while t0.elapsed().as_secs_f64() < secs && !pieces.is_empty() {
        let (raw_len, compressed, b) = &pieces[i % pieces.len()];
        c.send(&Msg::Sink { raw_len: *raw_len, compressed: *compressed, bytes: b.clone().into() })?;
        i += 1;
    }
    c.send(&Msg::SinkEnd)?;
    c.s.flush()?;
    let Msg::SinkDone { raw_bytes, wire_bytes } = proto::expect(&mut c.s, "SinkDone")? else {
        unreachable!()
    };
    Ok((raw_bytes, wire_bytes, t0.elapsed().as_secs_f64().max(1e-6)))
}

/// A disk's sequential read speed (from the middle of its extents) and its non-zero blocks in
/// up to 32 pieces of 1 MiB spread over its extents, the sample for compression.
struct DiskSample {
    read_rate: f64,
    /// Non-zero blocks of each sampled piece, concatenated.
    data: Vec<Vec<u8>>,
    sampled: u64,
    zero: u64,
}

fn sample_disk(s: &Src, secs: f64) -> anyhow::Result<DiskSample> {
    let ranges = s.layout.extents.ranges();
    // Logical position → (byte offset, bytes left in that extent), by binary search.
    let mut starts = Vec::with_capacity(ranges.len());
    let mut total = 0u64;
    for &(a, b) in ranges.iter() {
        starts.push(total);
        total += b - a;
    }
    let at = |pos: u64| -> Option<(u64, u64)> {
        if pos >= total {
            return None;
        }
        let i = starts.partition_point(|&x| x <= pos) - 1;
        let (a, b) = ranges[i];
        let into = pos - starts[i];
        Some((a + into, b - a - into))
    };
    let mut buf = vec![0u8; PIECE as usize];
    let mut out = DiskSample { read_rate: 0.0, data: Vec::new(), sampled: 0, zero: 0 };
    for k in 0..32u64 {
        let Some((off, left)) = at(total / 32 * k) else { continue };
        let n = left.min(PIECE) as usize;
        s.f.read_exact_at(&mut buf[..n], off)?;
        let mut data = Vec::with_capacity(n);
        for b in buf[..n].chunks(proto::BLOCK as usize) {
            if b.iter().all(|&x| x == 0) {
                out.zero += b.len() as u64;
            } else {
                data.extend_from_slice(b);
            }
        }
        out.sampled += n as u64;
        if !data.is_empty() {
            out.data.push(data);
        }
    }
    // What was just sampled must not come from the cache in the timed reads.
    s.f.refresh();
    let t0 = Instant::now();
    let mut read = 0u64;
    let mut pos = total / 2;
    while total > 0 && t0.elapsed().as_secs_f64() < secs && read < 512 << 20 {
        let Some((off, left)) = at(pos).or_else(|| at(0)) else { break };
        let n = left.min(PIECE) as usize;
        s.f.read_exact_at(&mut buf[..n], off)?;
        read += n as u64;
        pos = if pos + (n as u64) < total { pos + n as u64 } else { 0 };
    }
    s.f.refresh();
    out.read_rate = read as f64 / t0.elapsed().as_secs_f64().max(1e-6);
    Ok(out)
}

fn rate(b: f64) -> String {
    format!("{:.1} MB/s", b / 1e6)
}

/// The data sync tests. Items stop at the first Critical the rest depends on. The disks are
/// sampled before connecting: a check session holds the receiver only for the channel tests.
pub fn items(r: &Remote, srcs: &[Src]) -> Vec<Item> {
    let mut out = Vec::new();
    let mut samples = Vec::new();
    for s in srcs {
        match sample_disk(s, r.seconds) {
            Ok(d) => {
                out.push(
                    Item::ok("read-throughput", "Disk read throughput", rate(d.read_rate))
                        .on(&s.path)
                        .val("bytes_per_second", d.read_rate),
                );
                samples.push(d);
            }
            Err(e) => out.push(
                Item::new("read-throughput", Level::Critical, "Disk read throughput", format!("{e:#}"))
                    .on(&s.path),
            ),
        }
    }
    let host = host_of(r.to).to_string();
    let (st, status_fp) = status_item(&host, r.status_port);
    out.push(st);
    let Some(mut c) = session(r, status_fp, &mut out) else { return out };
    let secs = r.seconds;
    // The link: incompressible data, raw.
    let raw: Vec<(u32, bool, Vec<u8>)> = vec![(PIECE as u32, false, noise(PIECE as usize))];
    let net = match sink(&mut c, &raw, secs) {
        Ok((_, wire, t)) => {
            let n = wire as f64 / t;
            out.push(
                Item::ok(
                    "network-throughput",
                    "Network throughput",
                    format!("{} over the TLS channel ({} in {t:.1} s, uncompressed)", rate(n), bytes(wire)),
                )
                .val("bytes_per_second", n),
            );
            n
        }
        Err(e) => {
            out.push(Item::new(
                "network-throughput",
                Level::Critical,
                "Network throughput",
                explain_io(&e, "sending test data"),
            ));
            return out;
        }
    };
    // Compression of the sampled non-zero blocks (zero blocks travel as ranges), then those
    // blocks over the channel.
    let m = Sampled::measure(&samples, zstd_level(r.compress));
    if !m.pieces.is_empty() {
        match sink(&mut c, &m.pieces, secs) {
            Ok((raw_b, wire, t)) => out.push(
                Item::ok(
                    "compressed-throughput",
                    "Compressed throughput",
                    format!(
                        "{} of source data ({} on the wire) at --compress {}: ratio {:.2}, {:.0} % zero blocks",
                        rate(raw_b as f64 / t),
                        rate(wire as f64 / t),
                        r.compress,
                        m.ratio,
                        m.zero_frac * 100.0
                    ),
                )
                .val("bytes_per_second", raw_b as f64 / t)
                .val("ratio", m.ratio)
                .val("zero_fraction", m.zero_frac),
            ),
            Err(e) => out.push(Item::new("compressed-throughput", Level::Warning, "Compressed throughput", format!("{e:#}"))),
        }
    }
    // The plan, checked as the receiver checks a real one, changing nothing.
    match sender::plan_ok(&mut c, srcs, false, true) {
        Ok(starts) => {
            for (s, st) in srcs.iter().zip(&starts) {
                out.push(
                    Item::ok(
                        "target-plan",
                        "Target",
                        format!(
                            "{} ({}) for {} used bytes of {}: {:?} pass",
                            st.target.name,
                            bytes(st.target.size_bytes),
                            bytes(s.layout.extent_bytes),
                            bytes(s.layout.size),
                            st.mode
                        ),
                    )
                    .on(&s.path)
                    .val("target", st.target.name.clone())
                    .val("mode", format!("{:?}", st.mode)),
                );
            }
            let _ = c.send(&Msg::Bye);
            let _ = c.s.flush();
        }
        Err(e) => out.push(
            Item::new("target-plan", Level::Critical, "Target plan", format!("{e:#}"))
                .fix("attach a target disk at least as large as each source's last used byte, not mounted or in use, or map --disk SRC=TARGET"),
        ),
    }
    let reads: Vec<f64> = samples.iter().map(|d| d.read_rate).filter(|&x| x > 0.0).collect();
    let used = srcs.iter().map(|s| s.layout.extent_bytes).sum();
    out.push(estimate(used, &reads, net, r, &m));
    out
}

/// Connects and authenticates, pushing the connection items; `None` after a Critical.
fn session(r: &Remote, status_fp: Option<String>, out: &mut Vec<Item>) -> Option<Conn> {
    let sock = match sender::connect(r.to) {
        Ok(s) => {
            out.push(Item::ok("connect-data", "Data port", format!("{} accepts connections", r.to)));
            s
        }
        Err(e) => {
            out.push(Item::new("connect-data", Level::Critical, "Data port", explain_io(&e, r.to)).fix(
                "boot the appliance with ip=… and check the address and port; allow outbound TCP to it",
            ));
            return None;
        }
    };
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = sock.set_write_timeout(Some(Duration::from_secs(60)));
    let mut c = match auth::client(sock, r.fingerprint.clone()) {
        Ok(s) => Conn::new(s, sender::control::Knobs::new(r.compress, r.bwlimit_mbit)),
        Err(e) => {
            out.push(Item::new(
                "authentication",
                Level::Critical,
                "Authentication",
                explain_io(&e, "TLS handshake"),
            ));
            return None;
        }
    };
    let fp =
        c.s.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| auth::fingerprint(c))
            .unwrap_or_default();
    match auth::client_handshake(&mut c.s, r.token) {
        Ok(targets) => {
            let list: Vec<String> =
                targets.iter().map(|t| format!("{} ({} bytes)", t.name, t.size_bytes)).collect();
            let i = match status_fp.filter(|s| *s != fp) {
                None => Item::ok(
                    "authentication",
                    "Authentication",
                    format!("TLS 1.3 and the token accepted; certificate SHA-256 {fp}"),
                ),
                Some(s) => Item::new(
                    "authentication",
                    Level::Warning,
                    "Authentication",
                    format!("the token was accepted, but the status page shows certificate {s}, the data port {fp}"),
                )
                .fix("make sure HOST is the appliance you booted (a NAT or port forward may lead elsewhere); pin it with --fingerprint"),
            };
            out.push(i.val("fingerprint", fp).val("targets", list));
            Some(c)
        }
        Err(e) => {
            let text = format!("{e:#}");
            let fix = if text.contains("authentication failed") || text.contains("could not prove") {
                "use the token the appliance was booted with (ferry.token=, shown on its console)"
            } else {
                ""
            };
            out.push(
                Item::new(
                    "authentication",
                    Level::Critical,
                    "Authentication",
                    explain_io(&e, "authenticating"),
                )
                .fix(fix),
            );
            None
        }
    }
}

/// The sampled non-zero blocks compressed: pieces to send, the ratio and the speed.
struct Sampled {
    pieces: Vec<(u32, bool, Vec<u8>)>,
    /// Non-zero bytes ÷ their compressed size.
    ratio: f64,
    zero_frac: f64,
    /// Non-zero bytes per second of one thread (infinite when compression is off).
    compress_rate: f64,
}

impl Sampled {
    fn measure(samples: &[DiskSample], level: i32) -> Sampled {
        let (mut raw_n, mut comp_n, mut comp_t) = (0u64, 0u64, 0f64);
        let mut pieces = Vec::new();
        for p in samples.iter().flat_map(|d| &d.data) {
            raw_n += p.len() as u64;
            if level == 0 {
                comp_n += p.len() as u64;
                pieces.push((p.len() as u32, false, p.clone()));
                continue;
            }
            let t0 = Instant::now();
            let z = zstd::bulk::compress(p, level).unwrap_or_else(|_| p.clone());
            comp_t += t0.elapsed().as_secs_f64();
            comp_n += z.len().min(p.len()) as u64;
            pieces.push(if z.len() < p.len() {
                (p.len() as u32, true, z)
            } else {
                (p.len() as u32, false, p.clone())
            });
        }
        let sampled: u64 = samples.iter().map(|d| d.sampled).sum();
        let zero: u64 = samples.iter().map(|d| d.zero).sum();
        Sampled {
            pieces,
            ratio: if comp_n == 0 { 1.0 } else { raw_n as f64 / comp_n as f64 },
            zero_frac: if sampled == 0 { 0.0 } else { zero as f64 / sampled as f64 },
            compress_rate: if level == 0 || comp_t <= 0.0 { f64::INFINITY } else { raw_n as f64 / comp_t },
        }
    }
}

/// Used bytes ÷ the slowest stage: reading, compressing the non-zero blocks (all workers), and
/// sending them compressed over the link.
fn estimate(used: u64, reads: &[f64], net: f64, r: &Remote, m: &Sampled) -> Item {
    let read = reads.iter().copied().fold(f64::INFINITY, f64::min);
    let link = match r.bwlimit_mbit {
        Some(mbit) => net.min(mbit * 1e6 / 8.0),
        None => net,
    };
    let data = 1.0 - m.zero_frac;
    let compress = m.compress_rate * r.workers.max(1) as f64;
    let per_byte = [1.0 / read, data / compress, data / m.ratio / link];
    let t = used as f64 * per_byte.iter().copied().filter(|x| x.is_finite()).fold(0.0, f64::max);
    let show = |x: f64, none: &str| if x.is_finite() { rate(x) } else { none.to_string() };
    Item::ok(
        "estimate",
        "Estimated migration time",
        format!(
            "{:.0} min for {} of used blocks (read {}, compress {}, link {}, ratio {:.2}, {:.0} % zero blocks; a delta pass reads the used blocks again)",
            (t / 60.0).ceil(),
            bytes(used),
            show(read, "not measured"),
            show(compress, "off"),
            rate(link),
            m.ratio,
            m.zero_frac * 100.0
        ),
    )
    .val("seconds", t.round())
    .val("used_bytes", used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_say_what_to_do() {
        let refused =
            anyhow::Error::new(std::io::Error::from(ErrorKind::ConnectionRefused)).context("connecting");
        assert!(
            explain_io(&refused, "h:8703").contains("nothing listens"),
            "{}",
            explain_io(&refused, "h:8703")
        );
        let t = anyhow::Error::new(std::io::Error::from(ErrorKind::TimedOut));
        assert!(explain_io(&t, "h").contains("firewall drops"));
        let r = anyhow::Error::new(std::io::Error::from(ErrorKind::ConnectionReset));
        assert!(explain_io(&r, "h").contains("cut the connection"));
        assert_eq!(host_of("10.0.0.5:8703"), "10.0.0.5");
        assert_eq!(host_of("appliance"), "appliance");
        assert_eq!(host_of("[::1]:8703"), "::1");
    }

    fn remote(workers: usize, bwlimit_mbit: Option<f64>) -> Remote<'static> {
        Remote {
            to: "x",
            token: "t",
            fingerprint: None,
            status_port: 8080,
            compress: 1,
            workers,
            bwlimit_mbit,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_estimate_counts_zero_blocks_once() {
        // Half the sampled bytes are zero blocks; the rest is incompressible.
        let d = DiskSample { read_rate: 100e6, data: vec![noise(1 << 20)], sampled: 2 << 20, zero: 1 << 20 };
        let m = Sampled::measure(&[d], 0);
        assert_eq!((m.zero_frac, m.ratio, m.compress_rate), (0.5, 1.0, f64::INFINITY));
        assert_eq!(m.pieces.len(), 1);
        // 1 GB used at 10 MB/s of link: only the non-zero half travels, 50 s; reading takes 10 s.
        let e = estimate(1_000_000_000, &[100e6], 10e6, &remote(2, None), &m);
        assert_eq!(e.values["seconds"], 50.0);
        assert!(e.detail.contains("compress off"), "{}", e.detail);
        // --bwlimit 40 Mbit/s (5 MB/s) doubles it; no disk measured leaves the read stage out.
        let e = estimate(1_000_000_000, &[], 10e6, &remote(2, Some(40.0)), &m);
        assert_eq!(e.values["seconds"], 100.0);
        assert!(e.detail.contains("read not measured"), "{}", e.detail);
        // Compressible data: the ratio is measured on the non-zero blocks alone.
        let text = b"ferry ferry ferry ".repeat(60_000);
        let d = DiskSample { read_rate: 1e9, data: vec![text], sampled: 1 << 21, zero: 0 };
        let m = Sampled::measure(&[d], 3);
        assert!(m.ratio > 50.0 && m.compress_rate.is_finite(), "{}", m.ratio);
    }
}
