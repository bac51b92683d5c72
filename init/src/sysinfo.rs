//! Small facts about the running kernel: uptime and random bytes.

/// Seconds since boot (CLOCK_BOOTTIME), the same clock the kernel log uses.
pub fn uptime() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
        .unwrap_or(0.0)
}

/// A random u32 from the kernel (used for DHCP transaction ids).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n != 4 {
        let t = uptime().to_bits();
        return (t ^ (t >> 32)) as u32 ^ std::process::id();
    }
    u32::from_ne_bytes(b)
}
