//! ferry-init as a library: the appliance's stages, shared with `ferry-image` (module
//! database) and the host subcommands.

pub mod cli;
pub mod cmd;
pub mod cmdline;
pub mod coldplug;
pub mod convert;
pub mod inventory;
pub mod kmod;
pub mod logger;
pub mod lvm;
pub mod mounts;
pub mod net;
pub mod pid1;
pub mod reaper;
pub mod status;
pub mod sysinfo;
