//! The appliance's boot media (`ferry-image iso`, `disk`, `pxe`, `customize`):
//! - built on the host: reproducible, within size goals, with a FAT that `fsck.fat -n` passes
//!   and GPTs that `sgdisk -v` passes;
//! - booted under QEMU (TCG) to the receiving appliance answering `/status` from the host: the
//!   ISO from a CD under SeaBIOS and OVMF and written raw to a disk (the USB case) under both;
//!   the disk image (qcow2 and raw) under SeaBIOS and OVMF; the PXE bundle through iPXE, GRUB's
//!   BIOS PXE program and the signed UEFI chain (shim, Debian's signed network GRUB), each with a
//!   per-MAC entry;
//! - under Secure Boot (OVMF with Microsoft's keys enrolled): the ISO from a CD boots through
//!   shim and Debian's signed GRUB and kernel to an appliance that reports `secure_boot: true`
//!   and lockdown `integrity` with its modules loaded, and an unsigned GRUB in the same place is
//!   refused by the firmware; `scripts/matrix` also boots the ISO as a disk, the disk image and
//!   UEFI PXE that way and migrates the Debian 12 system into the appliance booted so;
//! - a customized ISO uses its embedded token: `ferry send` with it is accepted, the token
//!   embedded before it is refused; the appliance's own boot disk is never a target.

use ferry_qemu_tests::{binary, ferry_image, free_port, run, sparse_file, Bus, Disk, Vm, VmBuilder};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const OLD_TOKEN: &str = "media-old-token";
const NEW_TOKEN: &str = "media-new-token";

fn image(args: &[&str]) {
    run(Command::new(ferry_image()).args(args)).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Boots `b` (with a blank target disk) to the receiving phase; checks what every medium must
/// give and returns the VM, its /status and the status port.
fn boot(b: VmBuilder, target: &Path, what: &str) -> (Vm, Value, u16) {
    let (status, data) = (free_port(), free_port());
    let mut vm = b
        .disk(Disk::new(target, Bus::Virtio, "TARGET0"))
        .forward(status, "", 8080)
        .forward(data, "", 8703)
        .start()
        .unwrap();
    let st = vm.wait_phase(status, "receiving", Duration::from_secs(300)).unwrap();
    eprintln!("boot-to-receiving {what}: {:.1} s (QEMU start to /status)", vm.elapsed().as_secs_f64());
    assert_eq!(st["config"]["token_set"], true, "{what}: no embedded token: {st:#}");
    let disks = st["disks"].as_array().unwrap();
    let t = disks.iter().find(|d| d["serial"] == "TARGET0").expect("target disk listed");
    assert_eq!(t["appliance"], false, "{what}: {t:#}");
    (vm, st, data)
}

fn send(port: u16, token: &str, src: &Path) -> std::process::Output {
    Command::new(binary("ferry"))
        .args(["send", "--to", &format!("127.0.0.1:{port}"), "--token", token])
        .arg("--disk")
        .arg(format!("{}=TARGET0", src.display()))
        .output()
        .unwrap()
}

struct Media {
    _dir: tempfile::TempDir,
    iso: PathBuf,
    disk_qcow2: PathBuf,
    disk_raw: PathBuf,
    pxe: PathBuf,
}

/// The media, built and customized the way an operator would.
fn media() -> Media {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    image(&["iso", "--out", s(&p("base.iso")), "--timeout", "1"]);
    // Embedded twice: the second token replaces the first.
    image(&["customize", "--in", s(&p("base.iso")), "--out", s(&p("old.iso")), "--token", OLD_TOKEN]);
    image(&[
        "customize",
        "--in",
        s(&p("old.iso")),
        "--out",
        s(&p("new.iso")),
        "--token",
        NEW_TOKEN,
        "--after",
        "wait",
        "--cmdline",
        "ferry.convert=no",
    ]);
    image(&["disk", "--out", s(&p("base.qcow2")), "--format", "qcow2", "--timeout", "1"]);
    image(&["customize", "--in", s(&p("base.qcow2")), "--out", s(&p("disk.qcow2")), "--token", NEW_TOKEN]);
    image(&["disk", "--out", s(&p("base.img")), "--timeout", "1"]);
    image(&["customize", "--in", s(&p("base.img")), "--out", s(&p("disk.img")), "--token", NEW_TOKEN]);
    image(&["pxe", "--out", s(&p("pxe")), "--host", &format!("52:54:00:12:34:56=ferry.token={NEW_TOKEN}")]);
    Media {
        iso: p("new.iso"),
        disk_qcow2: p("disk.qcow2"),
        disk_raw: p("disk.img"),
        pxe: p("pxe"),
        _dir: dir,
    }
}

#[test]
fn media_are_reproducible_small_and_clean() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n);
    for (i, name) in ["a", "b"].iter().enumerate() {
        image(&["iso", "--out", s(&p(&format!("{name}.iso")))]);
        image(&["disk", "--out", s(&p(&format!("{name}.img")))]);
        image(&["disk", "--out", s(&p(&format!("{name}.qcow2"))), "--format", "qcow2"]);
        image(&[
            "customize",
            "--in",
            s(&p(&format!("{name}.iso"))),
            "--out",
            s(&p(&format!("{name}c.iso"))),
            "--token",
            OLD_TOKEN,
        ]);
        if i == 1 {
            for ext in ["iso", "img", "qcow2", "iso"] {
                let (x, y) = (
                    std::fs::read(p(&format!("a.{ext}"))).unwrap(),
                    std::fs::read(p(&format!("b.{ext}"))).unwrap(),
                );
                assert!(x == y, "two builds of the .{ext} differ");
            }
            assert!(
                std::fs::read(p("ac.iso")).unwrap() == std::fs::read(p("bc.iso")).unwrap(),
                "customized ISOs differ"
            );
        }
    }
    let iso_len = std::fs::metadata(p("a.iso")).unwrap().len();
    assert!(iso_len <= 40 * MIB, "the ISO is {iso_len} bytes; the goal is 40 MiB");
    // Every FAT passes fsck.fat -n; every GPT passes sgdisk -v.
    for img in ["a.iso", "a.img", "ac.iso"] {
        let v = run(Command::new("sgdisk").arg("-v").arg(p(img))).unwrap();
        assert!(v.contains("No problems found"), "{img}: {v}");
        let info = run(Command::new("sgdisk").arg("-p").arg(p(img))).unwrap();
        let esp =
            info.lines().find(|l| l.contains(" EF00 ")).unwrap_or_else(|| panic!("{img}: no ESP in {info}"));
        let f: Vec<u64> = esp.split_whitespace().take(3).map(|x| x.parse().unwrap()).collect();
        let data = std::fs::read(p(img)).unwrap();
        std::fs::write(p("esp"), &data[(f[1] * 512) as usize..((f[2] + 1) * 512) as usize]).unwrap();
        run(Command::new("fsck.fat").arg("-n").arg(p("esp"))).unwrap();
    }
    // A PXE directory: settings into its initramfs, kernel parameters onto every menu.
    image(&["pxe", "--out", s(&p("pxe")), "--host", "52:54:00:00:00:01=ferry.after=wait"]);
    image(&[
        "customize",
        "--in",
        s(&p("pxe")),
        "--out",
        s(&p("pxe2")),
        "--cmdline",
        &format!("ferry.token={NEW_TOKEN} nomodeset"),
    ]);
    for f in [
        "boot.ipxe",
        "pxelinux.cfg/default",
        "pxelinux.cfg/01-52-54-00-00-00-01",
        "grub.cfg",
        "grub.cfg-01-52-54-00-00-00-01",
    ] {
        let text = std::fs::read_to_string(p("pxe2").join(f)).unwrap();
        let kernel_lines: Vec<&str> = text
            .lines()
            .filter(|l| matches!(l.split_whitespace().next(), Some("kernel" | "APPEND" | "linux")))
            .collect();
        assert!(
            !kernel_lines.is_empty() && kernel_lines.iter().all(|l| l.ends_with(" nomodeset")),
            "{f}: {text}"
        );
        assert!(!text.contains(NEW_TOKEN), "{f}: the token belongs in the initramfs, not on a menu");
    }
    let initrd = std::fs::read(p("pxe2/initramfs.img")).unwrap();
    let tail = String::from_utf8_lossy(&initrd[initrd.len() - 1024..]).into_owned();
    assert!(tail.contains(&format!("\nferry.token={NEW_TOKEN}\n")), "{tail}");
    assert_eq!(std::fs::read(p("pxe/grub.0")).unwrap(), std::fs::read(p("pxe2/grub.0")).unwrap());

    // Refusals name the file and what was expected.
    let out = Command::new(ferry_image())
        .args(["customize", "--in", "/etc/hostname", "--out", s(&p("x")), "--token", NEW_TOKEN])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/hostname: not a ferry artifact"), "{out:?}");
    assert!(!p("x").exists());
}

#[test]
fn media_boot_on_bios_and_uefi() {
    let m = media();
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target.img");
    sparse_file(&target, 300 * MIB).unwrap();

    // ISO on a CD under SeaBIOS, and the token test: the replaced token is refused, the embedded
    // one accepted; the ISO's embedded ferry.after=wait and ferry.convert=no are in force.
    let (vm, st, data) = boot(VmBuilder::new("iso-bios").cdrom(&m.iso), &target, "ISO, CD, SeaBIOS");
    assert_eq!(st["config"]["after"], "wait", "{st:#}");
    assert_eq!(st["config"]["convert"], false, "{st:#}");
    assert!(vm.serial().contains("settings embedded in /etc/ferry/config"), "no embedded settings logged");
    let src = t.path().join("source.img");
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&src).arg("64M")).unwrap();
    let old = send(data, OLD_TOKEN, &src);
    assert!(!old.status.success(), "the replaced token was accepted");
    assert!(String::from_utf8_lossy(&old.stderr).contains("authentication failed"), "{old:?}");
    let new = send(data, NEW_TOKEN, &src);
    assert!(new.status.success(), "the embedded token was refused: {}", String::from_utf8_lossy(&new.stderr));
    drop(vm);

    boot(VmBuilder::new("iso-uefi").uefi().cdrom(&m.iso), &target, "ISO, CD, OVMF");
    // The USB case: the ISO written raw to a disk, the first disk. It is marked as the
    // appliance's own and not offered as a target.
    for uefi in [false, true] {
        let usb = t.path().join("usb.img");
        std::fs::copy(&m.iso, &usb).unwrap();
        let mut b = VmBuilder::new("iso-usb").disk(Disk::new(&usb, Bus::Virtio, "USB"));
        if uefi {
            b = b.uefi();
        }
        let what = if uefi { "ISO as a disk, OVMF" } else { "ISO as a disk, SeaBIOS" };
        let (_vm, st, _) = boot(b, &target, what);
        let d = st["disks"].as_array().unwrap().iter().find(|d| d["serial"] == "USB").cloned().unwrap();
        assert_eq!(d["appliance"], true, "{what}: {d:#}");
    }

    // The disk image: qcow2 under SeaBIOS, raw under OVMF.
    for (img, uefi, what) in
        [(&m.disk_qcow2, false, "disk image (qcow2), SeaBIOS"), (&m.disk_raw, true, "disk image (raw), OVMF")]
    {
        let mut b = VmBuilder::new("disk-image").disk(Disk::new(img, Bus::Virtio, "APPLIANCE"));
        if uefi {
            b = b.uefi();
        }
        let (_vm, st, _) = boot(b, &target, what);
        let d = st["disks"].as_array().unwrap().iter().find(|d| d["serial"] == "APPLIANCE").cloned().unwrap();
        assert_eq!(d["appliance"], true, "{what}: {d:#}");
    }

    // PXE: iPXE fetches boot.ipxe over TFTP and jumps to this NIC's MAC entry; GRUB's network
    // programs read grub.cfg-01-<mac>. Only the per-MAC entries carry the token.
    boot(VmBuilder::new("pxe").tftp(&m.pxe, "boot.ipxe"), &target, "PXE, iPXE script, SeaBIOS");
    boot(VmBuilder::new("pxe-grub").tftp(&m.pxe, "grub.0"), &target, "PXE, GRUB (grub.0), SeaBIOS");
    boot(
        VmBuilder::new("pxe-uefi").uefi().tftp(&m.pxe, "bootx64.efi"),
        &target,
        "PXE, shim (bootx64.efi) and signed GRUB, OVMF",
    );
}

/// Boots `b` under Secure Boot to the receiving appliance and checks it says so: Secure Boot on,
/// the kernel locked down, its (signed) modules loaded without a problem.
fn boot_secure(b: VmBuilder, target: &Path, what: &str) -> (Vm, u16) {
    let (vm, st, data) = boot(b.secure_boot(), target, what);
    assert_eq!(
        (st["uefi"].as_bool(), st["secure_boot"].as_bool(), st["lockdown"].as_str()),
        (Some(true), Some(true), Some("integrity")),
        "{what}: {st:#}"
    );
    assert!(!st["modules_loaded"].as_array().unwrap().is_empty(), "{what}: no module loaded: {st:#}");
    let problems = st["problems"].to_string();
    assert!(!problems.contains("module"), "{what}: {problems}");
    (vm, data)
}

/// The representative Secure Boot case for `./scripts/test`: the ISO on a CD, and the negative
/// control — the same firmware refuses an unsigned GRUB where shim was.
#[test]
fn secure_boot_iso_and_an_unsigned_grub_refused() {
    let m = media();
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target.img");
    sparse_file(&target, 300 * MIB).unwrap();
    boot_secure(VmBuilder::new("sb-iso").cdrom(&m.iso), &target, "ISO, CD, Secure Boot");

    // An unsigned GRUB (grub-mkimage, as ferry's media had before) as BOOTX64.EFI of the disk
    // image: the firmware must not start it, so the appliance never answers.
    let img = t.path().join("unsigned.img");
    std::fs::copy(&m.disk_raw, &img).unwrap();
    let grub = t.path().join("BOOTX64.EFI");
    run(Command::new("grub-mkimage")
        .args(["-O", "x86_64-efi", "-p", "/boot/grub", "-o"])
        .arg(&grub)
        .args(["normal", "linux", "search", "part_gpt", "fat"]))
    .unwrap();
    let esp_start = {
        let info = run(Command::new("sgdisk").arg("-i").arg("2").arg(&img)).unwrap();
        let first = info.lines().find(|l| l.starts_with("First sector")).unwrap();
        first.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap() * 512
    };
    run(Command::new("mcopy")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@{esp_start}", img.display()))
        .arg(&grub)
        .arg("::/EFI/BOOT/BOOTX64.EFI"))
    .unwrap();
    let status = free_port();
    let mut vm = VmBuilder::new("sb-unsigned")
        .secure_boot()
        .disk(Disk::new(&img, Bus::Virtio, "APPLIANCE"))
        .disk(Disk::new(&target, Bus::Virtio, "TARGET0"))
        .forward(status, "", 8080)
        .start()
        .unwrap();
    // OVMF's boot manager says why it did not start the boot option.
    let refused = vm.wait_serial("Access Denied", Duration::from_secs(150));
    let serial = vm.serial();
    assert!(refused.is_ok(), "no refusal from the firmware:\n{serial}");
    assert!(vm.wait_phase(status, "ready", Duration::from_secs(5)).is_err(), "the appliance answered");
    assert!(!serial.contains("ferry: "), "the appliance started: {serial}");
}

/// Every medium under Secure Boot, and a whole migration into the appliance booted so.
#[test]
#[ignore = "matrix: scripts/matrix runs it (the ISO stands for the media in scripts/test)"]
fn secure_boot_every_medium_and_a_migration() {
    let m = media();
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("target.img");
    sparse_file(&target, 300 * MIB).unwrap();
    let usb = t.path().join("usb.img");
    std::fs::copy(&m.iso, &usb).unwrap();
    boot_secure(
        VmBuilder::new("sb-usb").disk(Disk::new(&usb, Bus::Virtio, "USB")),
        &target,
        "ISO as a disk, Secure Boot",
    );
    boot_secure(VmBuilder::new("sb-pxe").tftp(&m.pxe, "bootx64.efi"), &target, "PXE, shim, Secure Boot");

    // The disk image, then the Debian 12 Xen guest sent into it, converted under lockdown.
    let big = t.path().join("big.img");
    sparse_file(&big, 3072 * MIB).unwrap();
    let src = t.path().join("source.img");
    ferry_qemu_tests::fixture::copy(
        &ferry_qemu_tests::fixture::debian_xen("bookworm", 2048, "gpt-bios-ext4").unwrap(),
        &src,
    )
    .unwrap();
    let (vm, data) = boot_secure(
        VmBuilder::new("sb-disk").memory(1536).disk(Disk::new(&m.disk_raw, Bus::Virtio, "APPLIANCE")),
        &big,
        "disk image, Secure Boot",
    );
    let out = Command::new(binary("ferry"))
        .args(["send", "--json", "--to", &format!("127.0.0.1:{data}"), "--token", NEW_TOKEN])
        .arg("--disk")
        .arg(format!("{}=TARGET0", src.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), vm.serial());
    let report: Value =
        serde_json::from_str(stdout.lines().rfind(|l| l.contains("\"report\"")).unwrap()).unwrap();
    let conv = &report["report"]["receiver_report"];
    assert_eq!(conv["ok"], true, "conversion under Secure Boot: {conv:#}");
}
