//! The one-time token an appliance accepts: 128 random bits from the kernel (waiting for its
//! random number generator if it is not ready yet), as 8 groups of 4 hex digits.

use anyhow::{ensure, Result};

pub fn generate() -> Result<String> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: writes at most the remaining length into the buffer.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            ensure!(e.kind() == std::io::ErrorKind::Interrupted, "no random numbers: {e}");
            continue;
        }
        filled += n as usize;
    }
    let hex: Vec<String> = b.chunks(2).map(|c| format!("{:02x}{:02x}", c[0], c[1])).collect();
    Ok(hex.join("-"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape_and_freshness() {
        let (a, b) = (super::generate().unwrap(), super::generate().unwrap());
        assert_eq!(a.len(), 39);
        assert_eq!(a.split('-').count(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        assert_ne!(a, b);
    }
}
