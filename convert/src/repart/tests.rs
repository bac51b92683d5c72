use super::*;
use std::process::Command;

fn sh(cmd: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sgdisk_info(img: &str, n: u32) -> String {
    sh(&format!("sgdisk -i {n} {img}"))
}

#[test]
fn gpt_relocation_keeps_slots_and_is_clean() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("d.img").display().to_string();
    // Slots 1, 3 and 5 (gaps on purpose), names and types; ext4 in the last one.
    sh(&format!(
        "truncate -s 100M {img} && sgdisk -n1:2048:+1M -t1:ef02 -c1:bios -n3:0:+20M -t3:8200 -c3:swap -n5:0:0 -t5:8300 -c5:root {img} >/dev/null"
    ));
    let p5 = sh(&format!("sgdisk -i 5 {img}"));
    let start5: u64 = p5
        .lines()
        .find(|l| l.starts_with("First sector"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    sh(&format!("dd if=/dev/zero of={img}.fs bs=1M count=1 status=none && truncate -s 60M {img}.fs && mkfs.ext4 -q -F {img}.fs && dd if={img}.fs of={img} bs=512 seek={start5} conv=notrunc status=none"));
    sh(&format!("printf '\\xfa\\xeb' | dd of={img} bs=1 seek=0 conv=notrunc status=none"));
    let before: Vec<String> = [1, 3, 5].iter().map(|n| sgdisk_info(&img, *n)).collect();
    // Copy onto a larger disk.
    sh(&format!("truncate -s 300M {img}"));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let r = repartition(&mut f, true).unwrap();
    assert!(r.changed);
    let g = r.grown.unwrap();
    assert_eq!(g.number, 5);
    assert_eq!(g.new_end, 300 * 1024 * 1024 - 33 * 512);
    let v = sh(&format!("sgdisk -v {img}"));
    assert!(v.contains("No problems found"), "{v}");
    for (n, b) in [1, 3, 5].iter().zip(&before) {
        let a = sgdisk_info(&img, *n);
        let keep = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("Last sector") && !l.starts_with("Partition size"))
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(keep(&a), keep(b), "slot {n} changed");
    }
    assert!(sgdisk_info(&img, 2).contains("does not exist"));
    // Boot code in the MBR survives.
    let head = std::fs::read(&img).unwrap();
    assert_eq!(&head[..2], &[0xfa, 0xeb]);
    assert_eq!(head[450], 0xee);
    // Idempotent.
    let again = repartition(&mut f, true).unwrap();
    assert!(!again.changed && again.grown.is_none(), "{again:?}");
}

#[test]
fn gpt_grows_a_btrfs_last() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("d.img").display().to_string();
    sh(&format!("truncate -s 200M {img} && sgdisk -n1:2048:+1M -t1:ef02 -n2:0:0 -t2:8300 {img} >/dev/null"));
    sh(&format!(
        "truncate -s 150M {img}.fs && mkfs.btrfs -q -f {img}.fs && dd if={img}.fs of={img} bs=1M seek=2 conv=notrunc status=none && truncate -s 400M {img}"
    ));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let r = repartition(&mut f, true).unwrap();
    assert_eq!(r.grown.as_ref().map(|g| g.number), Some(2), "{r:?}");
}

#[test]
fn gpt_does_not_grow_swap_last() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("d.img").display().to_string();
    sh(&format!("truncate -s 50M {img} && sgdisk -n1:2048:+10M -n2:0:0 -t2:8200 {img} >/dev/null && truncate -s 80M {img}"));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let r = repartition(&mut f, true).unwrap();
    assert!(r.changed && r.grown.is_none());
    assert!(sh(&format!("sgdisk -v {img}")).contains("No problems found"));
}

#[test]
fn mbr_grows_the_last_logical_partition_and_its_container() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("d.img").display().to_string();
    sh(&format!("truncate -s 100M {img} && printf 'label: dos\\n,20M,83\\n,,5\\n,20M,82\\n,30M,83\\n' | sfdisk -q {img}"));
    let j: serde_json::Value = serde_json::from_str(&sh(&format!("sfdisk -J {img}"))).unwrap();
    let last_start = j["partitiontable"]["partitions"][3]["start"].as_u64().unwrap();
    sh(&format!("truncate -s 30M {img}.fs && mkfs.ext4 -q -F {img}.fs && dd if={img}.fs of={img} bs=512 seek={last_start} conv=notrunc status=none"));
    let id_before = j["partitiontable"]["id"].clone();
    sh(&format!("truncate -s 200M {img}"));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let r = repartition(&mut f, true).unwrap();
    assert_eq!(r.grown.as_ref().unwrap().number, 6);
    let j: serde_json::Value = serde_json::from_str(&sh(&format!("sfdisk -J {img}"))).unwrap();
    let p = j["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(p.len(), 4);
    let total = 200 * 2048;
    assert_eq!(p[3]["start"].as_u64().unwrap() + p[3]["size"].as_u64().unwrap(), total);
    assert_eq!(
        p[1]["start"].as_u64().unwrap() + p[1]["size"].as_u64().unwrap(),
        total,
        "extended container grew"
    );
    assert_eq!(p[2]["size"].as_u64().unwrap(), 20 * 2048, "the swap logical partition kept its size");
    assert_eq!(j["partitiontable"]["id"], id_before, "disk signature kept");
    assert!(!repartition(&mut f, true).unwrap().changed);
}

#[test]
fn gpt_does_not_grow_an_md_member_whose_superblock_sits_at_its_end() {
    // Metadata 1.0: ext4 from the member's first byte (the probe sees the filesystem), the
    // superblock 8 KiB from the end. Growing the partition would lose the array.
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("d.img").display().to_string();
    sh(&format!("truncate -s 200M {img} && sgdisk -n1:2048:+1M -t1:ef02 -n2:0:0 -t2:fd00 {img} >/dev/null"));
    let (start, len) = (2u64 << 20, (200u64 << 20) - (2 << 20) - 33 * 512);
    let at = ferry_formats::md::v10_offset(len).unwrap();
    sh(&format!("truncate -s {at} {img}.fs && mkfs.ext4 -q -F {img}.fs && dd if={img}.fs of={img} bs=1M seek=2 conv=notrunc status=none"));
    let sb = ferry_formats::md::build(at, [3; 16], "h:0", 1, 2, 0, 0, at & !65535);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&sb, start + at).unwrap();
    }
    sh(&format!("truncate -s 400M {img}"));
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(&img).unwrap();
    let r = repartition(&mut f, true).unwrap();
    assert!(r.changed && r.grown.is_none(), "{r:?}");
}
