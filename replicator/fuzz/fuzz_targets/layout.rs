//! Fuzzes the partition-table and filesystem probes on a disk made of the input bytes: GPT,
//! MBR with logical partitions, ext2/3/4 group descriptors and bitmaps, XFS free-space btrees,
//! swap. Any disk must give a layout or an error — never a panic, a hang or a buffer sized by
//! what the disk claims.
#![no_main]

use ferry_replicator::layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The table crates may panic on hostile input; ferry catches that (a panic there means "no
    // table"), but libfuzzer-sys's hook aborts on any panic, caught or not. A quiet hook lets
    // caught panics pass; an uncaught one still ends the run as a crash.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let disk = data;
    if let Ok(l) = layout::analyze(&disk) {
        assert!(l.extent_bytes <= l.size);
    }
    let _ = layout::ext::free(&disk, 0, data.len() as u64);
    let _ = layout::xfs::free(&disk, 0, data.len() as u64);
});
