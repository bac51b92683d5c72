//! LVM volume activation without the LVM tools: PVs are found by their label, the newest
//! metadata is read from each PV's metadata area, and every visible linear or striped LV whose
//! PVs are all present becomes a device-mapper device named and identified the way LVM itself
//! names them (`VG-LV`, uuid `LVM-<vg id><lv id>`), so the migrated system's own `lvm` sees
//! them as active. `/dev/mapper/VG-LV` and `/dev/VG/LV` are created as links to `/dev/dm-N`.
//! The returned guard removes the devices again.

pub mod dm;
pub mod meta;

use anyhow::{bail, Context, Result};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A physical volume found on a device.
#[derive(Debug, Clone)]
pub struct Pv {
    pub dev: PathBuf,
    pub label: meta::Label,
    pub metadata: meta::Value,
}

/// An activated logical volume.
#[derive(Debug, Clone)]
pub struct Lv {
    pub vg: String,
    pub name: String,
    /// `/dev/mapper/VG-LV`
    pub dev: PathBuf,
    /// The PV devices it lives on.
    pub pvs: Vec<PathBuf>,
}

impl Lv {
    /// The names fstab, crypttab or a kernel command line may use for it.
    pub fn aliases(&self) -> Vec<String> {
        vec![self.dev.display().to_string(), format!("/dev/{}/{}", self.vg, self.name)]
    }
}

/// The largest metadata area read (lvm's default is 1 MiB; its maximum is far below this).
const MAX_MDA: u64 = 256 << 20;

/// A VG or LV name as LVM accepts it: 1..=127 of `a-zA-Z0-9+_.-`, not starting with `-`, not
/// `.`/`..` and not a name LVM reserves. Anything else is never used in a path or a dm name.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 127
        && !n.starts_with('-')
        && n != "."
        && n != ".."
        && !matches!(n, "snapshot" | "pvmove")
        // Directories of /dev a VG's links would land in.
        && !matches!(
            n,
            "mapper" | "disk" | "block" | "char" | "bus" | "pts" | "shm" | "net" | "input" | "cpu" | "dri" | "snd"
                | "fd" | "hugepages" | "mqueue" | "vfio" | "cdrom"
        )
        && n.bytes().all(|c| c.is_ascii_alphanumeric() || b"+_.-".contains(&c))
}

/// Reads the PV label and metadata of `dev`; `Ok(None)` when it is not a PV.
pub fn read_pv(dev: &Path) -> Result<Option<Pv>> {
    let f = std::fs::File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut head = vec![0u8; 2048];
    f.read_exact_at(&mut head, 0).with_context(|| format!("reading the PV label of {}", dev.display()))?;
    let Some(label) = meta::label(&head) else { return Ok(None) };
    let dev_size = {
        use std::io::{Seek, SeekFrom};
        (&f).seek(SeekFrom::End(0)).with_context(|| format!("sizing {}", dev.display()))?
    };
    let mut last = None;
    for &(off, size) in &label.mdas {
        // Bounded before anything is allocated: inside the device, at most MAX_MDA.
        anyhow::ensure!(
            (512..=MAX_MDA).contains(&size) && off.checked_add(size).is_some_and(|e| e <= dev_size),
            "{}: LVM metadata area at byte {off} of {size} bytes does not fit the device ({dev_size} bytes, areas up to {MAX_MDA})",
            dev.display()
        );
        let mut area = vec![0u8; size as usize];
        f.read_exact_at(&mut area, off)
            .with_context(|| format!("reading the LVM metadata area of {} at byte {off}", dev.display()))?;
        match meta::metadata_text(&area).and_then(|t| meta::parse(&t)) {
            Ok(v) => last = Some(v),
            Err(e) => log::warn!("lvm: {} metadata area at byte {off}: {e:#}", dev.display()),
        }
    }
    let metadata =
        last.with_context(|| format!("{} has an LVM label but no readable metadata", dev.display()))?;
    Ok(Some(Pv { dev: dev.to_path_buf(), label, metadata }))
}

/// The VG section of a PV's metadata: the one top-level section (the rest are plain keys).
fn vg_of(pv: &Pv) -> Option<(&str, &meta::Value)> {
    pv.metadata.sections().next().map(|(k, v)| (k.as_str(), v))
}

fn dm_escape(s: &str) -> String {
    s.replace('-', "--")
}

fn devnum(p: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(p).with_context(|| format!("stat {}", p.display()))?.rdev();
    Ok(format!("{}:{}", nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)))
}

/// The device-mapper table of one LV, or why it cannot be activated.
pub fn table(
    vg: &meta::Value,
    lv: &meta::Value,
    pv_dev: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<dm::Target>> {
    let ext = vg
        .int("extent_size")
        .and_then(|e| u64::try_from(e).ok())
        .filter(|&e| e > 0)
        .context("VG without a valid extent_size")?;
    let pvs = vg.get("physical_volumes").context("VG without physical_volumes")?;
    let mut out = Vec::new();
    let mut segs: Vec<&meta::Value> =
        lv.sections().filter(|(k, _)| k.starts_with("segment")).map(|(_, v)| v).collect();
    segs.sort_by_key(|s| s.int("start_extent").unwrap_or(0));
    for s in segs {
        let extents = |key: &str| -> Result<u64> {
            let n = s.int(key).with_context(|| format!("segment without {key}"))?;
            u64::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(ext))
                .with_context(|| format!("segment {key} = {n} is out of range"))
        };
        let (start, len) = (extents("start_extent")?, extents("extent_count")?);
        let kind = s.str("type").unwrap_or("");
        if kind != "striped" {
            bail!("segment type {kind:?} is not supported (linear and striped are)");
        }
        let Some(meta::Value::List(stripes)) = s.get("stripes") else { bail!("segment without stripes") };
        let mut devs = Vec::new();
        for pair in stripes.chunks(2) {
            let [meta::Value::Str(pv), meta::Value::Int(pe)] = pair else { bail!("malformed stripes list") };
            let pe = u64::try_from(*pe)
                .ok()
                .and_then(|p| p.checked_mul(ext))
                .context("stripe extent out of range")?;
            let p = pvs.get(pv).with_context(|| format!("stripe on unknown {pv}"))?;
            let id = p.str("id").unwrap_or("").replace('-', "");
            let dev = pv_dev(&id).with_context(|| format!("PV {pv} ({id}) is not on the migrated disks"))?;
            let pe_start =
                p.int("pe_start").and_then(|v| u64::try_from(v).ok()).context("PV without pe_start")?;
            devs.push(format!("{dev} {}", pe_start.checked_add(pe).context("stripe offset out of range")?));
        }
        if devs.len() == 1 {
            out.push(dm::Target { start, len, kind: "linear".into(), params: devs.remove(0) });
        } else {
            let chunk = s.int("stripe_size").context("striped segment without stripe_size")?;
            let params = format!("{} {chunk} {}", devs.len(), devs.join(" "));
            out.push(dm::Target { start, len, kind: "striped".into(), params });
        }
    }
    Ok(out)
}

/// Active LVs; dropping it removes their device-mapper devices and links.
#[derive(Debug, Default)]
pub struct Active {
    pub lvs: Vec<Lv>,
    links: Vec<PathBuf>,
}

impl Drop for Active {
    fn drop(&mut self) {
        nix::unistd::sync();
        for l in self.links.drain(..).rev() {
            let _ = std::fs::remove_file(&l);
        }
        for lv in self.lvs.drain(..).rev() {
            let name = format!("{}-{}", dm_escape(&lv.vg), dm_escape(&lv.name));
            if let Err(e) = dm::remove(&name) {
                log::warn!("lvm: {e:#}");
            }
        }
    }
}

/// Activates every complete LV found on `devs` (partitions or whole disks).
pub fn activate(devs: &[PathBuf]) -> Result<Active> {
    let mut pvs = Vec::new();
    for d in devs {
        match read_pv(d) {
            Ok(Some(pv)) => pvs.push(pv),
            Ok(None) => {}
            Err(e) => log::warn!("lvm: {e:#}"),
        }
    }
    let mut active = Active::default();
    if pvs.is_empty() {
        return Ok(active);
    }
    let pv_nums: Vec<(PathBuf, String)> =
        pvs.iter().filter_map(|p| Some((p.dev.clone(), devnum(&p.dev).ok()?))).collect();
    let pv_dev = |id: &str| {
        let dev = &pvs.iter().find(|p| p.label.pv_uuid == id)?.dev;
        pv_nums.iter().find(|(p, _)| p == dev).map(|(_, d)| d.clone())
    };
    // Each VG once, from the PV whose metadata has the highest seqno.
    let mut vgs: Vec<(&str, &meta::Value)> = Vec::new();
    for pv in &pvs {
        let Some((name, vg)) = vg_of(pv) else { continue };
        match vgs.iter_mut().find(|(n, _)| *n == name) {
            Some(e) if e.1.int("seqno") < vg.int("seqno") => e.1 = vg,
            Some(_) => {}
            None => vgs.push((name, vg)),
        }
    }
    for (vgname, vg) in vgs {
        if !valid_name(vgname) {
            log::warn!("lvm: volume group {:?} has a name LVM would not accept; not activated", vgname);
            continue;
        }
        let vgid = vg.str("id").unwrap_or("").replace('-', "");
        let Some(lvs) = vg.get("logical_volumes") else { continue };
        for (lvname, lv) in lvs.sections() {
            if !lv.strs("status").contains(&"VISIBLE") {
                continue;
            }
            if !valid_name(lvname) {
                log::warn!(
                    "lvm: {vgname}: logical volume {lvname:?} has a name LVM would not accept; not activated"
                );
                continue;
            }
            let targets = match table(vg, lv, &pv_dev) {
                Ok(t) => t,
                Err(e) => {
                    log::warn!("lvm: {vgname}/{lvname} not activated: {e:#}");
                    continue;
                }
            };
            let name = format!("{}-{}", dm_escape(vgname), dm_escape(lvname));
            let uuid = format!("LVM-{vgid}{}", lv.str("id").unwrap_or("").replace('-', ""));
            let readonly = !lv.strs("status").contains(&"WRITE");
            let (major, minor) = dm::create(&name, &uuid, &targets, readonly)
                .with_context(|| format!("activating {vgname}/{lvname}"))?;
            let node = dm::node_name(major, minor);
            let mapper = PathBuf::from(format!("/dev/mapper/{name}"));
            for link in [mapper.clone(), PathBuf::from(format!("/dev/{vgname}/{lvname}"))] {
                dm::link(&link, &node).with_context(|| format!("activating {vgname}/{lvname}"))?;
                active.links.push(link);
            }
            // Table parameters name devices as whole MAJ:MIN words.
            let used: Vec<PathBuf> = pv_nums
                .iter()
                .filter(|(_, d)| targets.iter().any(|t| t.params.split_whitespace().any(|w| w == d)))
                .map(|(p, _)| p.clone())
                .collect();
            log::info!(
                "lvm: activated {vgname}/{lvname} as {} ({} segments)",
                mapper.display(),
                targets.len()
            );
            active.lvs.push(Lv { vg: vgname.into(), name: lvname.clone(), dev: mapper, pvs: used });
        }
    }
    Ok(active)
}

#[cfg(test)]
mod tests;
