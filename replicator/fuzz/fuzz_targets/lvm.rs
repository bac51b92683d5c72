//! Fuzzes the LVM readers the appliance runs on migrated disks: the PV label, the metadata
//! area (circular buffer, checksum) and the metadata text parser, and the device-mapper table
//! built from what parses. Errors are fine; panics, hangs and huge allocations are not.
#![no_main]

use ferry_convert::lvm::{self, meta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meta::label(data);
    let _ = meta::metadata_text(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(v) = meta::parse(&text) {
        if let Some((name, vg)) = v.sections().next() {
            let _ = lvm::valid_name(name);
            if let Some(lvs) = vg.get("logical_volumes") {
                for (_, lv) in lvs.sections() {
                    let _ = lvm::table(vg, lv, &|_| Some("254:0".to_string()));
                }
            }
        }
    }
});
