//! ferry-init as a library: the appliance's stages, shared with `ferry-image` (module
//! database) and the host subcommands.

pub mod cli;
pub use ferry_boot::{cmdline, kmod};
/// The command runner lives with the conversion; re-exported for `ferry-image`.
pub use ferry_convert::cmd;
pub mod coldplug;
pub mod inventory;
pub mod logger;
pub mod mounts;
pub mod net;
pub mod oci;
pub mod pid1;
pub mod reaper;
pub mod rehearse;
pub mod secure;
pub mod status;
pub mod sysinfo;
pub mod to_image;
