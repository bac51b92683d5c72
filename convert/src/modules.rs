//! Kernel modules the conversion needs on demand (dm-mod for LVM, md-mod and raid1 for MD
//! arrays): the appliance sets its module loader once; on a host nothing is loaded and the
//! host's own modules are used.

use anyhow::Result;

static LOADER: std::sync::OnceLock<fn(&str) -> Result<()>> = std::sync::OnceLock::new();

/// Sets the module loader (once; later calls are ignored).
pub fn set_loader(f: fn(&str) -> Result<()>) {
    let _ = LOADER.set(f);
}

/// Loads `name` if a loader is set; a failure is logged (the caller checks for the driver).
pub fn load(name: &str) {
    if let Some(Err(e)) = LOADER.get().map(|load| load(name)) {
        log::warn!("loading {name}: {e:#}");
    }
}
