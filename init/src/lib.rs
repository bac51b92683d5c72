//! ferry-init as a library: the appliance's stages, shared with `ferry-image` (module
//! database) and the host subcommands.

pub mod cli;
/// The command runner lives with the conversion; re-exported for `ferry-image`.
pub use ferry_convert::cmd;
pub mod cmdline;
pub mod coldplug;
pub mod inventory;
pub mod kmod;
pub mod logger;
pub mod mounts;
pub mod net;
pub mod pid1;
pub mod reaper;
pub mod status;
pub mod sysinfo;
