//! One QEMU guest: built with [`VmBuilder`], serial console captured to a file, killed on drop.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    /// virtio-scsi
    Scsi,
    Nvme,
    Ahci,
    /// PIIX IDE of the default machine
    Ide,
}

#[derive(Debug, Clone)]
pub struct Disk {
    pub path: PathBuf,
    pub bus: Bus,
    pub serial: String,
}

impl Disk {
    pub fn new(path: impl Into<PathBuf>, bus: Bus, serial: &str) -> Self {
        Disk { path: path.into(), bus, serial: serial.into() }
    }
}

#[derive(Default)]
pub struct VmBuilder {
    name: String,
    memory_mb: u32,
    kernel: Option<(PathBuf, PathBuf, String)>,
    disks: Vec<Disk>,
    forwards: Vec<(u16, String, u16)>,
    nic: bool,
    uefi: bool,
    secure_boot: bool,
    cdrom: Option<PathBuf>,
    tftp: Option<(PathBuf, String)>,
    no_rng: bool,
    /// PCI slot of the first NIC (the others follow); `None`: QEMU's choice.
    nic_slot: Option<u8>,
    /// More NICs, each on a user network of its own (its CIDR, e.g. `10.0.3.0/24`).
    extra_nics: Vec<String>,
}

/// OVMF firmware code and the variable store template (Debian's `ovmf` package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built for Secure Boot (SMM) and a variable store with Microsoft's keys enrolled and
/// Secure Boot enforcing.
pub const OVMF_CODE_SB: &str = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd";
pub const OVMF_VARS_SB: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

impl VmBuilder {
    pub fn new(name: &str) -> Self {
        VmBuilder { name: name.into(), memory_mb: 1024, nic: true, ..Default::default() }
    }

    /// Boots the appliance with extra kernel parameters.
    pub fn appliance(self, append: &str) -> Self {
        let a = crate::appliance();
        self.kernel(&a.join("vmlinuz"), &a.join("initramfs.img"), &format!("console=ttyS0 panic=-1 {append}"))
    }

    pub fn kernel(mut self, vmlinuz: &Path, initrd: &Path, append: &str) -> Self {
        self.kernel = Some((vmlinuz.into(), initrd.into(), append.into()));
        self
    }

    pub fn memory(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    pub fn disk(mut self, d: Disk) -> Self {
        self.disks.push(d);
        self
    }

    /// UEFI with Secure Boot enforcing and Microsoft's keys enrolled (q35 with SMM, as the
    /// Secure Boot build of OVMF requires), with a fresh copy of that variable store.
    pub fn secure_boot(mut self) -> Self {
        self.secure_boot = true;
        self.uefi()
    }

    /// UEFI firmware (OVMF) instead of SeaBIOS, with a fresh copy of the variable store.
    pub fn uefi(mut self) -> Self {
        self.uefi = true;
        self
    }

    /// Boots from this ISO in an IDE CD drive.
    pub fn cdrom(mut self, iso: &Path) -> Self {
        self.cdrom = Some(iso.into());
        self
    }

    /// Boots from the network: QEMU's user network serves `dir` over TFTP and names `bootfile`
    /// in DHCP; the NIC's iPXE ROM fetches it.
    pub fn tftp(mut self, dir: &Path, bootfile: &str) -> Self {
        self.tftp = Some((dir.into(), bootfile.into()));
        self
    }

    /// No entropy source at all: no virtio-rng device, and a CPU model without RDRAND/RDSEED.
    pub fn no_rng(mut self) -> Self {
        self.no_rng = true;
        self
    }

    /// Puts the NICs at PCI slot `slot` and the following ones, so a VM can have them where
    /// another VM had other devices.
    pub fn nic_slot(mut self, slot: u8) -> Self {
        self.nic_slot = Some(slot);
        self
    }

    /// Adds a NIC on a user network of its own (`net`, e.g. `10.0.3.0/24`), after the first.
    pub fn extra_nic(mut self, net: &str) -> Self {
        self.extra_nics.push(net.into());
        self
    }

    pub fn no_nic(mut self) -> Self {
        self.nic = false;
        self
    }

    /// Forwards host 127.0.0.1:`host` to `guest_addr:guest_port` (guest_addr "" = DHCP address).
    pub fn forward(mut self, host: u16, guest_addr: &str, guest_port: u16) -> Self {
        self.forwards.push((host, guest_addr.into(), guest_port));
        self
    }

    pub fn start(self) -> Result<Vm> {
        let lock = crate::guest_lock();
        let dir = tempfile::Builder::new().prefix(&format!("ferry-vm-{}-", self.name)).tempdir()?;
        let serial = dir.path().join("serial.log");
        let mut c = Command::new("qemu-system-x86_64");
        c.args(crate::accel::args())
            .args([
                "-m",
                &self.memory_mb.to_string(),
                "-smp",
                "1",
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()));
        if self.no_rng {
            // The last -cpu wins over the accelerator's choice.
            c.args(["-cpu", "qemu64,-rdrand,-rdseed"]);
        } else {
            c.args(["-device", "virtio-rng-pci"]);
        }
        if self.uefi {
            let (code, template) =
                if self.secure_boot { (OVMF_CODE_SB, OVMF_VARS_SB) } else { (OVMF_CODE, OVMF_VARS) };
            if self.secure_boot {
                c.args(["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]);
            }
            let vars = dir.path().join("OVMF_VARS.fd");
            std::fs::copy(template, &vars).with_context(|| format!("copying {template}"))?;
            c.arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"))
                .arg("-drive")
                .arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
        }
        if let Some((k, i, a)) = &self.kernel {
            c.arg("-kernel").arg(k).arg("-initrd").arg(i).arg("-append").arg(a);
        }
        if let Some(iso) = &self.cdrom {
            c.arg("-drive")
                .arg(format!("file={},format=raw,if=none,id=cd0,media=cdrom,readonly=on", iso.display()));
            c.args(["-device", "ide-cd,drive=cd0,bootindex=0"]);
        }
        let disk_boots = self.kernel.is_none() && self.cdrom.is_none() && self.tftp.is_none();
        let (mut scsi, mut ahci) = (false, false);
        for (n, d) in self.disks.iter().enumerate() {
            let id = format!("d{n}");
            let format = if is_qcow2(&d.path) { "qcow2" } else { "raw" };
            c.arg("-drive")
                .arg(format!("file={},format={format},if=none,id={id},cache=unsafe", d.path.display()));
            let dev = match d.bus {
                Bus::Virtio => format!("virtio-blk-pci,drive={id},serial={}", d.serial),
                Bus::Scsi => {
                    if !scsi {
                        c.args(["-device", "virtio-scsi-pci,id=scsi0"]);
                        scsi = true;
                    }
                    format!("scsi-hd,drive={id},bus=scsi0.0,serial={}", d.serial)
                }
                Bus::Nvme => format!("nvme,drive={id},serial={}", d.serial),
                Bus::Ahci => {
                    if !ahci {
                        c.args(["-device", "ahci,id=ahci0"]);
                        ahci = true;
                    }
                    format!("ide-hd,drive={id},bus=ahci0.{n},serial={}", d.serial)
                }
                Bus::Ide => format!("ide-hd,drive={id},serial={}", d.serial),
            };
            let dev = if n == 0 && disk_boots { format!("{dev},bootindex=0") } else { dev };
            c.arg("-device").arg(dev);
        }
        if self.nic {
            let mut netdev = "user,id=n0".to_string();
            for (h, ga, gp) in &self.forwards {
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{h}-{ga}:{gp}"));
            }
            let mut nic = "virtio-net-pci,netdev=n0".to_string();
            if let Some((dir, bootfile)) = &self.tftp {
                netdev.push_str(&format!(",tftp={},bootfile={bootfile}", dir.display()));
                nic.push_str(",bootindex=0");
                if self.uefi {
                    // OVMF's own network stack (EDK2's PXE, as UEFI firmware on hardware has)
                    // instead of the iPXE option ROM, whose TFTP interface gives shim no file
                    // size (shim then hashes its whole 4 MiB buffer and refuses GRUB).
                    nic.push_str(",romfile=");
                }
            }
            let at = |i: u8| self.nic_slot.map(|s| format!(",addr={:#x}", s + i)).unwrap_or_default();
            nic.push_str(&at(0));
            c.args(["-netdev", &netdev, "-device", &nic]);
            for (i, net) in self.extra_nics.iter().enumerate() {
                let id = format!("n{}", i + 1);
                c.arg("-netdev").arg(format!("user,id={id},net={net}"));
                c.arg("-device").arg(format!("virtio-net-pci,netdev={id}{}", at(i as u8 + 1)));
            }
        } else {
            c.args(["-nic", "none"]);
        }
        let stderr = std::fs::File::create(dir.path().join("qemu.stderr"))?;
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {c:?}"))?;
        Ok(Vm { child: Some(child), serial, dir, started: Instant::now(), _lock: lock, name: self.name })
    }
}

fn is_qcow2(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"QFI\xfb"
}

pub struct Vm {
    child: Option<Child>,
    serial: PathBuf,
    dir: tempfile::TempDir,
    started: Instant,
    name: String,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Vm {
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    fn tail(&self) -> String {
        let s = self.serial();
        let lines: Vec<&str> = s.lines().collect();
        let err = std::fs::read_to_string(self.dir.path().join("qemu.stderr")).unwrap_or_default();
        format!(
            "--- last serial lines of {} ---\n{}\n--- qemu stderr ---\n{err}",
            self.name,
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Waits until the serial console shows `needle`.
    pub fn wait_serial(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            if self.serial().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{}: QEMU exited ({st}) before {needle:?}\n{}", self.name, self.tail());
            }
            if t.elapsed() > timeout {
                bail!(
                    "{}: no {needle:?} on the serial console within {}s\n{}",
                    self.name,
                    timeout.as_secs(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Polls `GET /status` on a forwarded port until it answers.
    pub fn status(&mut self, port: u16, timeout: Duration) -> Result<serde_json::Value> {
        let t = Instant::now();
        loop {
            match crate::http_get(port, "/status") {
                Ok(body) => return serde_json::from_str(&body).context("parsing /status"),
                Err(e) if t.elapsed() > timeout => {
                    bail!("{}: /status never answered: {e:#}\n{}", self.name, self.tail())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    /// Polls /status until its `phase` is `phase`.
    pub fn wait_phase(&mut self, port: u16, phase: &str, timeout: Duration) -> Result<serde_json::Value> {
        let t = Instant::now();
        loop {
            let left = timeout.saturating_sub(t.elapsed());
            let st = self.status(port, left)?;
            if st["phase"] == phase {
                return Ok(st);
            }
            if t.elapsed() > timeout {
                bail!(
                    "{}: phase is {} after {}s, expected {phase}\n{}",
                    self.name,
                    st["phase"],
                    timeout.as_secs(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for QEMU to exit by itself (guest poweroff).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().context("no child")?.try_wait()? {
                return Ok(st);
            }
            if t.elapsed() > timeout {
                bail!("{}: QEMU still running after {}s\n{}", self.name, timeout.as_secs(), self.tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.tail());
        }
    }
}
