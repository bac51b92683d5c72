//! LVM source disks made by LVM's own tools: `pvcreate` and `vgcreate` on a loop device over a
//! GPT partition, then the logical volumes written by `vgcfgrestore` from edited metadata
//! (`lvcreate` needs device-mapper, which this host's kernel lacks). Each LV's content is an
//! image written into its extents, segment by segment, as device-mapper would lay it out.

use super::{sh, Loop, MIB};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// 4 MiB extents, LVM's default.
pub const EXTENT: u64 = 4 * MIB;
/// The partition starts at 1 MiB; LVM puts the first extent 1 MiB into the PV.
pub const DATA: u64 = 2 * MIB;

pub struct Lv {
    pub name: &'static str,
    pub visible: bool,
    /// `(pv extent, extents)` in LV order; more than one makes a multi-segment linear LV.
    pub segs: Vec<(u64, u64)>,
    /// Raw segments given verbatim (a snapshot's `type`, `origin`, `cow_store`…) instead.
    pub raw: Option<String>,
    pub image: Option<PathBuf>,
}

impl Lv {
    pub fn linear(name: &'static str, segs: &[(u64, u64)], image: Option<PathBuf>) -> Lv {
        Lv { name, visible: true, segs: segs.to_vec(), raw: None, image }
    }
    /// Byte ranges of the disk the LV's segments occupy.
    pub fn disk_ranges(&self) -> Vec<(u64, u64)> {
        self.segs.iter().map(|&(pe, n)| (DATA + pe * EXTENT, DATA + (pe + n) * EXTENT)).collect()
    }
}

fn segments(lv: &Lv) -> String {
    if let Some(r) = &lv.raw {
        return r.clone();
    }
    let mut out = String::new();
    let mut le = 0;
    for (i, &(pe, n)) in lv.segs.iter().enumerate() {
        out += &format!(
            "segment{} {{\nstart_extent = {le}\nextent_count = {n}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", {pe}]\n}}\n",
            i + 1
        );
        le += n;
    }
    out
}

/// A GPT disk of `mib` MiB, one partition from 1 MiB to the end holding a PV of a fresh VG with
/// `lvs`. Returns the image and the VG name.
pub fn disk(dir: &Path, mib: u64, lvs: &[Lv]) -> (PathBuf, String) {
    static N: AtomicU32 = AtomicU32::new(0);
    let vg = format!("ferrytest{}n{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    std::fs::create_dir_all(dir).unwrap();
    let img = dir.join("lvm.img");
    sh(&format!("truncate -s {mib}M {0} && sgdisk -n 1:2048:0 -t 1:8e00 {0} >/dev/null", img.display()));
    let (start, len) = super::partitions(&img)[0];
    let l = Loop::new(&img, start, len);
    let env = "LVM_SUPPRESS_FD_WARNINGS=1";
    sh(&format!("{env} pvcreate -qq -y --dataalignment 1m {0} && {env} vgcreate -qq {vg} {0}", l.0));
    let backup = dir.join("vg.txt");
    sh(&format!("{env} vgcfgbackup -qq -f {} {vg}", backup.display()));
    let mut text = std::fs::read_to_string(&backup).unwrap();
    let mut section = String::from("logical_volumes {\n");
    for (i, lv) in lvs.iter().enumerate() {
        let status = if lv.visible { r#"["READ", "WRITE", "VISIBLE"]"# } else { r#"["READ", "WRITE"]"# };
        let count = if lv.raw.is_some() { 1 } else { lv.segs.len() };
        section += &format!(
            "{} {{\nid = \"ferry0-0000-0000-0000-0000-0000-{i:06}\"\nstatus = {status}\nflags = []\nsegment_count = {count}\n{}}}\n",
            lv.name,
            segments(lv)
        );
    }
    section += "}\n";
    let end = text.rfind('}').unwrap();
    text.insert_str(end, &section);
    let text = text.replacen("seqno = 1", "seqno = 2", 1);
    std::fs::write(&backup, text).unwrap();
    sh(&format!(
        "{env} vgcfgrestore -qq -f {} {vg} 2>&1 | grep -v 'Failed to check for active' || true",
        backup.display()
    ));
    let got = sh(&format!("{env} lvs --noheadings -o lv_name {vg}"));
    for lv in lvs.iter().filter(|l| l.raw.is_none() && l.visible) {
        assert!(
            got.split_whitespace().any(|n| n == lv.name),
            "vgcfgrestore did not create {}: {got}",
            lv.name
        );
    }
    drop(l);
    // Contents, segment by segment.
    let disk = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    for lv in lvs {
        let Some(src) = &lv.image else { continue };
        let data = std::fs::read(src).unwrap();
        let mut off = 0usize;
        for (s, e) in lv.disk_ranges() {
            let n = ((e - s) as usize).min(data.len() - off);
            disk.write_all_at(&data[off..off + n], s).unwrap();
            off += n;
        }
        assert_eq!(off, data.len(), "{}'s image is larger than its extents", lv.name);
    }
    (img, vg)
}

/// The LV's bytes read back from a disk image through its segments.
pub fn read_lv(img: &Path, lv: &Lv, out: &Path) {
    let f = std::fs::File::open(img).unwrap();
    let mut data = Vec::new();
    for (s, e) in lv.disk_ranges() {
        let mut b = vec![0u8; (e - s) as usize];
        f.read_exact_at(&mut b, s).unwrap();
        data.extend_from_slice(&b);
    }
    std::fs::write(out, data).unwrap();
}
