//! The on-disk formats both sides of ferry read, with no I/O policy of their own: positioned
//! reads from anything that holds a disk (`read`), partition tables (`table`), the GPT type GUIDs
//! ferry cares about (`guid`), and the filesystem, swap, LUKS and LVM signatures with their
//! UUIDs and labels (`fs`). The sender's used-block analysis, the receiver and the conversion
//! all probe through here, so they never disagree about what a partition holds.

pub mod fs;
pub mod guid;
pub mod md;
pub mod read;
pub mod table;

pub use fs::{probe, FsType, Probe};
pub use read::ReadAt;
