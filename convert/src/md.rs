//! MD RAID1 assembly without mdadm, the way mdadm itself starts an array of version-1
//! members: the members are found by their superblocks (`ferry_formats::md`), grouped by array
//! UUID, stale members (fewer events) left out, an array device made through md_mod's
//! `new_array` parameter, then the md ioctls: `SET_ARRAY_INFO` with only the superblock version
//! (the kernel reads the rest from the members), `ADD_NEW_DISK` per member, `RUN_ARRAY`.
//! Writes then go to every mirror, so the members stay in step while the system is converted.
//! A missing member starts the array degraded. Arrays keep their UUID and name; the migrated
//! system's own mdadm and initramfs assemble them on the new machine. The returned guard stops
//! the arrays again.

use anyhow::{bail, ensure, Context, Result};
use ferry_formats::md::{self, Superblock, ROLE_FAULTY, ROLE_SPARE};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `mdu_array_info_t` (linux/raid/md_u.h).
#[repr(C)]
#[derive(Default)]
struct ArrayInfo {
    major_version: i32,
    minor_version: i32,
    patch_version: i32,
    ctime: u32,
    level: i32,
    size: i32,
    nr_disks: i32,
    raid_disks: i32,
    md_minor: i32,
    not_persistent: i32,
    utime: u32,
    state: i32,
    active_disks: i32,
    working_disks: i32,
    failed_disks: i32,
    spare_disks: i32,
    layout: i32,
    chunk_size: i32,
}

/// `mdu_disk_info_t`.
#[repr(C)]
#[derive(Default)]
struct DiskInfo {
    number: i32,
    major: i32,
    minor: i32,
    raid_disk: i32,
    state: i32,
}

/// `mdu_param_t`.
#[repr(C)]
#[derive(Default)]
struct Param {
    personality: i32,
    chunk_size: i32,
    max_fault: i32,
}

const MD_MAJOR: u8 = 9;
nix::ioctl_write_ptr!(md_set_array_info, MD_MAJOR, 0x23, ArrayInfo);
nix::ioctl_write_ptr!(md_add_new_disk, MD_MAJOR, 0x21, DiskInfo);
nix::ioctl_write_ptr!(md_run_array, MD_MAJOR, 0x30, Param);
nix::ioctl_none!(md_stop_array, MD_MAJOR, 0x32);

/// A member found on a device.
#[derive(Debug, Clone)]
pub struct Member {
    pub dev: PathBuf,
    pub sb: Superblock,
}

/// The version-1 superblock of `dev`, if it has one.
pub fn member(dev: &Path) -> Result<Option<Member>> {
    let f = std::fs::File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let len = ferry_formats::ReadAt::size(&f).with_context(|| format!("sizing {}", dev.display()))?;
    let sb = md::read(&f, 0, len).with_context(|| dev.display().to_string())?;
    Ok(sb.map(|sb| Member { dev: dev.to_path_buf(), sb }))
}

/// One array's members as they will be started: the freshest active ones, by role.
#[derive(Debug)]
pub struct Plan {
    pub uuid: String,
    pub name: String,
    pub minor_version: u32,
    pub members: Vec<Member>,
    /// Members left out, and why.
    pub left_out: Vec<String>,
    /// Fewer active members than the array's raid_disks.
    pub degraded: bool,
}

/// Groups members by array and checks each group; an error names the array and why it cannot
/// be started.
pub fn plan(found: &[Member]) -> Vec<Result<Plan>> {
    let mut groups: Vec<Vec<&Member>> = Vec::new();
    for m in found {
        match groups.iter_mut().find(|g| g[0].sb.set_uuid == m.sb.set_uuid) {
            Some(g) => g.push(m),
            None => groups.push(vec![m]),
        }
    }
    groups.into_iter().map(plan_one).collect()
}

fn plan_one(g: Vec<&Member>) -> Result<Plan> {
    let first = &g[0].sb;
    let uuid = first.uuid_mdadm();
    ensure!(first.level == 1, "array {uuid}: RAID level {} is not assembled (RAID1 is)", first.level);
    ensure!(
        g.iter().all(|m| m.sb.level == 1 && m.sb.minor == first.minor),
        "array {uuid}: members disagree on level or superblock version"
    );
    ensure!(first.features & md::FEATURE_RESHAPE_ACTIVE == 0, "array {uuid}: a reshape is in progress");
    let newest = g.iter().map(|m| m.sb.events).max().unwrap_or(0);
    let mut members: Vec<Member> = Vec::new();
    let mut left_out = Vec::new();
    for m in &g {
        let why = if m.sb.events < newest {
            Some(format!("stale ({} events, the array has {newest})", m.sb.events))
        } else if matches!(m.sb.role, ROLE_SPARE | ROLE_FAULTY) {
            Some("spare or faulty".to_string())
        } else if m.sb.role as u32 >= m.sb.raid_disks {
            Some(format!("role {} outside the array's {} disks", m.sb.role, m.sb.raid_disks))
        } else if members.iter().any(|o| o.sb.role == m.sb.role) {
            Some(format!("role {} taken by another member", m.sb.role))
        } else {
            None
        };
        match why {
            Some(w) => left_out.push(format!("{}: {w}", m.dev.display())),
            None => members.push((*m).clone()),
        }
    }
    ensure!(!members.is_empty(), "array {uuid}: no active member ({})", left_out.join("; "));
    members.sort_by_key(|m| m.sb.role);
    let degraded = (members.len() as u32) < first.raid_disks;
    Ok(Plan { uuid, name: first.name.clone(), minor_version: first.minor, members, left_out, degraded })
}

/// A running array.
#[derive(Debug)]
pub struct Array {
    /// `/dev/mdN`
    pub dev: PathBuf,
    pub plan: Plan,
    fd: std::fs::File,
}

impl Array {
    /// The names fstab, crypttab, mdadm.conf or a kernel command line may use for it.
    pub fn aliases(&self) -> Vec<String> {
        let name = self.plan.name.rsplit(':').next().unwrap_or("").to_string();
        let mut out = vec![self.dev.display().to_string()];
        if !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)) {
            out.push(format!("/dev/md/{name}"));
            if name.bytes().all(|c| c.is_ascii_digit()) {
                out.push(format!("/dev/md{name}"));
            }
        }
        out
    }
}

/// Running arrays; dropping it stops them.
#[derive(Debug, Default)]
pub struct Assembled {
    pub arrays: Vec<Array>,
    /// Arrays found but not started, and why.
    pub failed: Vec<String>,
}

impl Drop for Assembled {
    fn drop(&mut self) {
        nix::unistd::sync();
        for a in self.arrays.drain(..).rev() {
            // SAFETY: STOP_ARRAY takes no argument.
            if let Err(e) = unsafe { md_stop_array(a.fd.as_raw_fd()) } {
                log::warn!("md: stopping {}: {e}", a.dev.display());
            }
        }
    }
}

/// How md_mod and raid1 get loaded (the appliance's module loader; a host loads its own).
fn ensure_driver() -> Result<()> {
    for m in ["md-mod", "raid1"] {
        crate::modules::load(m);
    }
    ensure!(
        Path::new("/sys/module/md_mod/parameters/new_array").exists(),
        "the kernel has no MD driver (md_mod)"
    );
    ensure!(Path::new("/sys/module/raid1").exists(), "the kernel has no RAID1 driver (raid1)");
    Ok(())
}

/// A new, empty array device: the highest free `mdN` from 127 down (as mdadm picks them).
fn new_array() -> Result<(u32, PathBuf)> {
    for n in (0..=127u32).rev() {
        if Path::new(&format!("/sys/block/md{n}")).exists() {
            continue;
        }
        if std::fs::write("/sys/module/md_mod/parameters/new_array", format!("md{n}")).is_err() {
            continue;
        }
        let dev = PathBuf::from(format!("/dev/md{n}"));
        let t = Instant::now();
        while !dev.exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !dev.exists() {
            // No devtmpfs: the node is made here.
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
            nix::sys::stat::mknod(
                &dev,
                nix::sys::stat::SFlag::S_IFBLK,
                mode,
                nix::sys::stat::makedev(9, n as u64),
            )
            .with_context(|| format!("creating {}", dev.display()))?;
        }
        return Ok((n, dev));
    }
    bail!("no free MD array device (md0..md127 all exist)")
}

fn start(p: Plan) -> Result<Array> {
    let (_, dev) = new_array()?;
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dev)
        .with_context(|| format!("opening {}", dev.display()))?;
    let info = ArrayInfo { major_version: 1, minor_version: p.minor_version as i32, ..Default::default() };
    // SAFETY: the argument is a valid mdu_array_info_t the kernel only reads.
    unsafe { md_set_array_info(fd.as_raw_fd(), &info) }
        .with_context(|| format!("{}: SET_ARRAY_INFO", dev.display()))?;
    for m in &p.members {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&m.dev).with_context(|| format!("stat {}", m.dev.display()))?.rdev();
        let d = DiskInfo {
            major: nix::sys::stat::major(rdev) as i32,
            minor: nix::sys::stat::minor(rdev) as i32,
            ..Default::default()
        };
        // SAFETY: as above, a valid mdu_disk_info_t.
        unsafe { md_add_new_disk(fd.as_raw_fd(), &d) }
            .with_context(|| format!("{}: adding member {}", dev.display(), m.dev.display()))?;
    }
    // SAFETY: as above; the parameters are unused for persistent superblocks.
    if let Err(e) = unsafe { md_run_array(fd.as_raw_fd(), &Param::default()) } {
        // SAFETY: STOP_ARRAY takes no argument; it releases the members again.
        let _ = unsafe { md_stop_array(fd.as_raw_fd()) };
        return Err(e).with_context(|| format!("{}: RUN_ARRAY", dev.display()));
    }
    Ok(Array { dev, plan: p, fd })
}

/// Starts every RAID1 array whose members are among `found`. An array that cannot be started
/// is named in `failed`; its members are never mounted on their own.
pub fn assemble(found: &[Member]) -> Assembled {
    let mut out = Assembled::default();
    if found.is_empty() {
        return out;
    }
    if let Err(e) = ensure_driver() {
        out.failed.push(format!("{e:#}"));
        return out;
    }
    for p in plan(found) {
        let started = p.and_then(|p| {
            let (uuid, degraded, left) = (p.uuid.clone(), p.degraded, p.left_out.join("; "));
            let a = start(p).with_context(|| format!("array {uuid}"))?;
            log::info!(
                "md: started array {uuid} ({}) as {} with {}{}{}",
                a.plan.name,
                a.dev.display(),
                a.plan.members.iter().map(|m| m.dev.display().to_string()).collect::<Vec<_>>().join(", "),
                if degraded { ", degraded" } else { "" },
                if left.is_empty() { String::new() } else { format!("; left out: {left}") }
            );
            Ok(a)
        });
        match started {
            Ok(a) => out.arrays.push(a),
            Err(e) => {
                log::warn!("md: {e:#}");
                out.failed.push(format!("{e:#}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(dev: &str, uuid: u8, role: u32, events: u64) -> Member {
        let sb = md::build(4096, [uuid; 16], "host:0", 1, 2, role, 1 << 20, 1 << 20);
        let mut mem = vec![0u8; 4 << 20];
        mem[4096..4096 + md::SB_LEN].copy_from_slice(&sb);
        let mut s = md::read(&mem, 0, 4 << 20).unwrap().unwrap();
        s.events = events;
        Member { dev: dev.into(), sb: s }
    }

    #[test]
    fn members_are_grouped_by_array_and_stale_ones_left_out() {
        let found = [m("/dev/vda2", 1, 0, 9), m("/dev/vdc1", 2, 0, 1), m("/dev/vdb2", 1, 1, 9)];
        let plans = plan(&found);
        assert_eq!(plans.len(), 2);
        let a = plans[0].as_ref().unwrap();
        assert_eq!(
            a.members.iter().map(|m| m.dev.to_str().unwrap()).collect::<Vec<_>>(),
            ["/dev/vda2", "/dev/vdb2"]
        );
        assert!(!a.degraded);
        let b = plans[1].as_ref().unwrap();
        assert!(b.degraded, "one of two members is a degraded array");
        // A member that missed writes (fewer events) is never started with the others.
        let plans = plan(&[m("/dev/vda2", 1, 0, 9), m("/dev/vdb2", 1, 1, 7)]);
        let a = plans[0].as_ref().unwrap();
        assert_eq!(a.members.len(), 1);
        assert!(a.degraded && a.left_out[0].contains("stale (7 events, the array has 9)"), "{a:?}");
        // Two members claiming one role: the second is left out.
        let plans = plan(&[m("/dev/vda2", 1, 0, 9), m("/dev/vdb2", 1, 0, 9)]);
        assert!(plans[0].as_ref().unwrap().left_out[0].contains("role 0 taken"));
    }

    #[test]
    fn other_levels_are_not_started() {
        let mut r5 = m("/dev/vda2", 1, 0, 1);
        r5.sb.level = 5;
        let e = plan(&[r5]).remove(0).unwrap_err();
        assert!(format!("{e:#}").contains("RAID level 5 is not assembled"), "{e:#}");
    }

    #[test]
    fn aliases_follow_mdadm_names() {
        let p = plan(&[m("/dev/vda2", 1, 0, 1)]).remove(0).unwrap();
        let a = Array { dev: "/dev/md127".into(), plan: p, fd: std::fs::File::open("/dev/null").unwrap() };
        assert_eq!(a.aliases(), ["/dev/md127", "/dev/md/0", "/dev/md0"]);
    }
}
