//! Live sources: passes over a mounted, changing source must see what is on the device (not
//! stale cached pages of the whole-disk device), and `--freeze` must thaw on every exit path.

mod common;
use common::*;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A GPT image with one ext4 partition, mounted through an offset loop device, plus a second
/// loop device over the whole image held open (as a mounted partition holds its disk open on a
/// real server). The source of the passes is the whole-disk device.
struct LiveDisk {
    img: PathBuf,
    whole: Loop,
    _hold: File,
    mnt: Option<Mnt>,
    _part: Loop,
}

fn live_disk(dir: &Path) -> LiveDisk {
    let img = dir.join("src.img");
    sh(&format!("truncate -s 192M {0} && sgdisk -n 1:2048:0 -t 1:8300 {0} >/dev/null", img.display()));
    let (start, size) = partitions(&img)[0];
    let part = Loop::new(&img, start, size);
    sh(&format!("mkfs.ext4 -q -F {}", part.0));
    let mnt = Mnt::new(&part.0, &dir.join("m"));
    std::fs::write(mnt.0.join("big"), prng(1, 24 * MIB as usize)).unwrap();
    fill(&mnt.0.join("tree"), 2, 16);
    sh("sync");
    let whole = Loop::new(&img, 0, 192 * MIB);
    let hold = File::open(&whole.0).unwrap();
    LiveDisk { img, whole, _hold: hold, mnt: Some(mnt), _part: part }
}

/// Overwrites 8 MiB in the middle of `big` in place, through the mounted filesystem.
fn overwrite_in_place(m: &Path, seed: u64) {
    let new = m.parent().unwrap().join(format!("new{seed}"));
    std::fs::write(&new, prng(seed, 8 * MIB as usize)).unwrap();
    sh(&format!(
        "dd if={} of={} bs=1M seek=8 count=8 conv=notrunc,fsync status=none",
        new.display(),
        m.join("big").display()
    ));
}

fn second_pass_sees_the_write(freeze: bool) {
    let t = tempfile::tempdir().unwrap();
    let mut d = live_disk(t.path());
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 192 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let src = Path::new(&d.whole.0).to_path_buf();
    let mut o = opts(r.addr, &[(&src, "")]);
    o.finalize = false;
    o.verify = false;
    send(&o).unwrap();
    overwrite_in_place(&d.mnt.as_ref().unwrap().0, 77);
    o.finalize = true;
    o.verify = true;
    o.freeze = freeze;
    let rep = send(&o).unwrap();
    assert_eq!(rep.disks[0].mode, "Delta");
    // Where `big` lives on the disk, the target must hold its new content (the filesystem may
    // write elsewhere on its own after the pass: journal, lazy inode-table init, unmount).
    let mut want = prng(1, 24 * MIB as usize);
    want[8 * MIB as usize..16 * MIB as usize].copy_from_slice(&prng(77, 8 * MIB as usize));
    let part_start = partitions(&d.img)[0].0;
    let tgt_file = File::open(&tgt).unwrap();
    let mut checked = 0;
    for (logical, physical, len) in file_extents(&d.mnt.as_ref().unwrap().0.join("big")) {
        let mut got = vec![0u8; len as usize];
        tgt_file.read_exact_at(&mut got, part_start + physical).unwrap();
        let w = &want[logical as usize..(logical + len) as usize];
        assert!(got == w, "the target's copy of big differs at file offset {logical} (disk {physical})");
        checked += len;
    }
    assert_eq!(checked, 24 * MIB);
    drop(d.mnt.take());
}

/// (logical byte, physical byte within the filesystem, length) of a file's extents.
fn file_extents(path: &Path) -> Vec<(u64, u64, u64)> {
    let out = sh(&format!("filefrag -v {}", path.display()));
    let bs: u64 = out
        .split(" blocks of ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("filefrag block size");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l
                .split(|c: char| c == ':' || c == '.' || c.is_whitespace())
                .filter(|x| !x.is_empty())
                .collect();
            // ext logical_start logical_end physical_start physical_end length ...
            let n: Vec<u64> = f.iter().take(6).map(|x| x.parse().ok()).collect::<Option<_>>()?;
            (n.len() == 6).then(|| (n[1] * bs, n[3] * bs, n[5] * bs))
        })
        .collect()
}

#[test]
fn delta_pass_sees_writes_through_a_mounted_partition() {
    second_pass_sees_the_write(false);
}

#[test]
fn frozen_final_pass_sees_writes_through_a_mounted_partition() {
    second_pass_sees_the_write(true);
}

/// SIGINT while the filesystem is frozen: ferry must thaw it before it exits, so a write to the
/// mount completes within 5 s.
#[test]
fn sigint_during_a_frozen_pass_thaws() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 128M {0} && mkfs.ext4 -q -F {0}", src.display()));
    let dev = Loop::new(&src, 0, 128 * MIB);
    let m = Mnt::new(&dev.0, &t.path().join("m"));
    fill(&m.0, 3, 48);
    sh("sync");
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 130 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["send", "--to", &r.addr.to_string(), "--token", TOKEN, "--freeze", "--bwlimit", "20"])
        .args(["--compress", "0", "--disk", &dev.0])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains("froze") => break,
            Ok(_) => {}
            Err(e) => panic!("ferry never froze the source: {e}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "an interrupted send must not succeed");
    let (dir, (done_tx, done_rx)) = (m.0.clone(), std::sync::mpsc::channel());
    std::thread::spawn(move || {
        std::fs::write(dir.join("after-sigint"), b"written").unwrap();
        File::open(dir.join("after-sigint")).unwrap().sync_all().unwrap();
        let _ = done_tx.send(());
    });
    let ok = done_rx.recv_timeout(Duration::from_secs(5)).is_ok();
    if !ok {
        // Leave the machine usable whatever happened.
        let _ = Command::new("fsfreeze").arg("-u").arg(&m.0).status();
        let _ = done_rx.recv_timeout(Duration::from_secs(5));
    }
    assert!(ok, "a write to the mount did not complete within 5 s of SIGINT: the filesystem stayed frozen");
}

/// btrfs mounts carry an anonymous device number: `--freeze` must find them by their member
/// devices (a loop device over the source image here) and freeze them.
#[test]
fn freeze_finds_btrfs_on_the_source() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 256M {0} && mkfs.btrfs -q -f {0}", src.display()));
    let dev = Loop::new(&src, 0, 256 * MIB);
    let m = Mnt::new(&dev.0, &t.path().join("m"));
    fill(&m.0, 5, 8);
    sh("sync");
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 260 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let mut o = opts(r.addr, &[(Path::new(&dev.0), "")]);
    o.freeze = true;
    let rep = send(&o).unwrap();
    let point = m.0.display().to_string();
    assert_eq!(rep.frozen, vec![point.clone()], "{:?}", rep.consistency_problems);
    assert_eq!(serde_json::to_value(rep.consistency).unwrap(), "frozen");
    // Thawed afterwards: a write completes.
    std::fs::write(m.0.join("after"), b"x").unwrap();
    // Without --freeze the same source is reported live.
    let mut o = opts(r.addr, &[(Path::new(&dev.0), "")]);
    o.finalize = false;
    let rep = send(&o).unwrap();
    assert_eq!(serde_json::to_value(rep.consistency).unwrap(), "live");
    drop(m);
}

/// A filesystem mounted in another mount namespace cannot be seen, so not frozen: the pass
/// must say it is not crash-consistent, and why.
#[test]
fn a_mount_ferry_cannot_see_makes_the_pass_not_crash_consistent() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src.img");
    sh(&format!("truncate -s 64M {0} && mkfs.ext4 -q -F {0}", src.display()));
    let dev = Loop::new(&src, 0, 64 * MIB);
    let mnt = t.path().join("hidden");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut hidden = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount {} {} && echo mounted && exec sleep 60", dev.0, mnt.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(hidden.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert_eq!(line.trim(), "mounted");
    let tgt = t.path().join("tgt.img");
    garbage(&tgt, 64 * MIB);
    let r = receiver(&[&tgt], &t.path().join("state"), None);
    let mut o = opts(r.addr, &[(Path::new(&dev.0), "")]);
    o.freeze = true;
    let rep = send(&o);
    let _ = hidden.kill();
    let _ = hidden.wait();
    let rep = rep.unwrap();
    assert_eq!(serde_json::to_value(rep.consistency).unwrap(), "not-crash-consistent");
    assert!(
        rep.consistency_problems.iter().any(|p| p.contains("cannot see")),
        "{:?}",
        rep.consistency_problems
    );
}
