//! The disks being converted and their partition devices. In the appliance the kernel scans
//! partition tables (BLKRRPART) and partitions appear as `/dev/vda1`…; on a host (`ferry-init
//! convert --disk IMG`) there may be no partition scanning at all, so each partition of an image
//! gets a loop device of its own (`losetup -o START --sizelimit SIZE`), detached on drop.

use crate::cmd;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A loop device; detached when dropped.
#[derive(Debug)]
pub struct Loop(pub PathBuf);

impl Loop {
    pub fn attach(file: &Path, offset: u64, size: u64) -> Result<Self> {
        let f = file.display().to_string();
        let out = cmd::run(
            None,
            &["losetup", "--show", "-f", "-o", &offset.to_string(), "--sizelimit", &size.to_string(), &f],
        )?;
        Ok(Loop(PathBuf::from(out.trim())))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let d = self.0.display().to_string();
        if let Err(e) = cmd::run(None, &["losetup", "-d", &d]) {
            log::warn!("detaching {d}: {e:#}");
        }
    }
}

pub struct Disks {
    pub paths: Vec<PathBuf>,
    /// Host mode: loop devices per partition, per disk.
    loops: Option<Vec<Vec<(u32, Loop)>>>,
}

impl Disks {
    pub fn kernel(paths: &[PathBuf]) -> Self {
        Disks { paths: paths.to_vec(), loops: None }
    }

    pub fn loops(paths: &[PathBuf]) -> Self {
        Disks { paths: paths.to_vec(), loops: Some(Vec::new()) }
    }

    pub fn host_mode(&self) -> bool {
        self.loops.is_some()
    }

    /// Makes the partition devices match the partition tables on disk.
    pub fn refresh(&mut self) -> Result<()> {
        match &mut self.loops {
            None => {
                for d in &self.paths {
                    super::probe::reread(d, 1)?;
                }
            }
            Some(loops) => {
                loops.clear();
                for d in &self.paths {
                    let f = std::fs::File::open(d).with_context(|| format!("opening {}", d.display()))?;
                    let mut v = Vec::new();
                    for (n, start, end) in ferry_replicator::layout::partitions(&f) {
                        v.push((n, Loop::attach(d, start, end - start)?));
                    }
                    loops.push(v);
                }
            }
        }
        Ok(())
    }

    /// Lets go of the partition devices (before the tables change).
    pub fn release(&mut self) {
        if let Some(l) = &mut self.loops {
            l.clear();
        }
    }

    /// Partition devices of disk `i`, by number.
    pub fn partitions(&self, i: usize) -> Vec<(u32, PathBuf)> {
        match &self.loops {
            None => super::probe::partitions_of(&self.paths[i]),
            Some(l) => {
                l.get(i).map(|v| v.iter().map(|(n, lp)| (*n, lp.0.clone())).collect()).unwrap_or_default()
            }
        }
    }
}
