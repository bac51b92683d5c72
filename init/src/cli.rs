//! Host subcommands of `ferry-init` (when it is not PID 1).

use argh::FromArgs;
use ferry_convert::nics::Nics;

/// ferry-init: the ferry appliance's PID 1; on a normal host, these subcommands (and
/// `--version`).
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Inventory(Inventory),
    Cmdline(CmdlineCmd),
    Receive(Receive),
    Convert(Convert),
    Rehearse(Rehearse),
    ExportOci(ExportOci),
}

/// Build an OCI image of a migrated system (machine-level containerization): written into an
/// OCI layout directory and/or pushed to a registry. The disks are never changed.
#[derive(FromArgs)]
#[argh(subcommand, name = "export-oci")]
struct ExportOci {
    /// a migrated disk (image file or block device); repeat in disk order
    #[argh(option)]
    disk: Vec<String>,
    /// the OCI image layout directory to write
    #[argh(option)]
    out: Option<String>,
    /// push to REGISTRY/REPO:TAG (with skopeo; credentials in FERRY_REGISTRY_AUTH=user:password)
    #[argh(option)]
    push: Option<String>,
    /// push over plain HTTP / without verifying the registry's certificate
    #[argh(switch)]
    insecure: bool,
    /// the tag in the layout (default latest)
    #[argh(option, default = "String::from(\"latest\")")]
    tag: String,
    /// run this shell command instead of the system's init (/bin/sh -c CMD)
    #[argh(option)]
    cmd: Option<String>,
    /// layer compression: gzip (default) or zstd
    #[argh(option, default = "String::from(\"gzip\")")]
    compress: String,
    /// where overlays and mounts go (default /var/tmp/ferry-export-PID)
    #[argh(option)]
    workdir: Option<String>,
}

/// Boot migrated disks in an isolated QEMU VM through copy-on-write overlays (the disks are
/// never changed) and report whether the system comes up: exit 0 pass, 2 degraded, 3 fail.
#[derive(FromArgs)]
#[argh(subcommand, name = "rehearse")]
struct Rehearse {
    /// a migrated disk (image file in any format qemu-img reads, or a block device); repeat in
    /// disk order, the first boots
    #[argh(option)]
    disk: Vec<String>,
    /// seconds to wait for the probe's report (default 600)
    #[argh(option, default = "600")]
    timeout: u64,
    /// the VM's memory in MiB (default 1024)
    #[argh(option, default = "1024")]
    memory: u32,
    /// kvm, tcg or auto (default: KVM when a kernel starts under it here)
    #[argh(option, default = "String::from(\"auto\")")]
    accel: String,
    /// where the overlays and the console log go (default /var/tmp/ferry-rehearse-PID)
    #[argh(option)]
    workdir: Option<String>,
    /// keep the overlays afterwards
    #[argh(switch)]
    keep: bool,
    /// print the report as JSON
    #[argh(switch)]
    json: bool,
}

/// Convert a migrated Linux system on disk images (or devices) so it boots on KVM/virtio.
#[derive(FromArgs)]
#[argh(subcommand, name = "convert")]
struct Convert {
    /// a disk image or block device of the migrated system; repeat in disk order
    #[argh(option)]
    disk: Vec<String>,
    /// keep partition and filesystem sizes
    #[argh(switch)]
    no_grow: bool,
    /// the name a NIC will have in the new VM (e.g. ens3); repeat in order. Without it the
    /// NICs keep kernel names in bus order (eth0, eth1…, pinned with net.ifnames=0), which do
    /// not depend on the PCI slots of the new VM.
    #[argh(option)]
    nic: Vec<String>,
    /// where the system is mounted while converting (default /run/ferry/convert)
    #[argh(option, default = "String::from(\"/run/ferry/convert\")")]
    workdir: String,
    /// a passphrase or key file for the system's LUKS volumes (its exact bytes); repeatable
    #[argh(option)]
    luks_key_file: Vec<String>,
}

/// Receive disks from `ferry send` into block devices or image files on this host.
#[derive(FromArgs)]
#[argh(subcommand, name = "receive")]
struct Receive {
    /// ADDR:PORT to listen on (default 0.0.0.0:8703)
    #[argh(option, default = "String::from(\"0.0.0.0:8703\")")]
    listen: String,
    /// the one-time token the sender must prove it knows (or set FERRY_TOKEN)
    #[argh(option)]
    token: Option<String>,
    /// a block device or image file to write; repeat in target order
    #[argh(option)]
    target: Vec<String>,
    /// where resume state and hash logs live (default /var/lib/ferry/receive)
    #[argh(option, default = "String::from(\"/var/lib/ferry/receive\")")]
    state_dir: String,
    /// migrate into image files in DIR instead of --target: received into sparse
    /// DIR/disk-N.raw, converted, written as DIR/disk-N.FORMAT with a manifest.json
    #[argh(option)]
    image: Option<String>,
    /// with --image: the size of each disk (e.g. 20G), in disk order
    #[argh(option)]
    size: Vec<String>,
    /// with --image: raw, qcow2 (default), vmdk or vhdx; repeat for several
    #[argh(option)]
    format: Vec<String>,
    /// with --image: keep the raw staging files after the images are written
    #[argh(switch)]
    keep_raw: bool,
}

/// List the block devices that could be migration targets.
#[derive(FromArgs)]
#[argh(subcommand, name = "inventory")]
struct Inventory {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
}

/// Parse a kernel command line (default /proc/cmdline) and show the appliance config and problems.
#[derive(FromArgs)]
#[argh(subcommand, name = "cmdline")]
struct CmdlineCmd {
    /// the command line to parse instead of /proc/cmdline
    #[argh(option)]
    line: Option<String>,
    /// an embedded config file (as `ferry-image customize` writes) read under the command line
    #[argh(option)]
    config: Option<std::path::PathBuf>,
}

pub fn main() -> i32 {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("ferry-init {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let args: Args = argh::from_env();
    crate::logger::init(std::env::var_os("FERRY_DEBUG").is_some(), false);
    let r = match args.cmd {
        Cmd::Inventory(i) => inventory(i),
        Cmd::Convert(c) => convert(c),
        Cmd::Cmdline(c) => cmdline(c),
        Cmd::Receive(r) => receive(r),
        Cmd::Rehearse(r) => rehearse(r),
        Cmd::ExportOci(e) => export_oci(e),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ferry-init: {e:#}");
            1
        }
    }
}

fn inventory(a: Inventory) -> anyhow::Result<i32> {
    let disks = crate::inventory::disks(std::path::Path::new("/sys"));
    if a.json {
        println!("{}", serde_json::to_string_pretty(&disks)?);
    } else {
        println!(
            "{:<10} {:>16} {:>6} {:<7} {:<20} {:<20} {:<5} APPLIANCE",
            "NAME", "BYTES", "SECTOR", "BUS", "MODEL", "SERIAL", "RO"
        );
        for d in disks {
            println!(
                "{:<10} {:>16} {:>6} {:<7} {:<20} {:<20} {:<5} {}",
                d.name, d.size_bytes, d.logical_sector, d.bus, d.model, d.serial, d.read_only, d.appliance
            );
        }
    }
    Ok(0)
}

fn cmdline(c: CmdlineCmd) -> anyhow::Result<i32> {
    let line = match c.line {
        Some(l) => l,
        None => std::fs::read_to_string("/proc/cmdline")?,
    };
    let file = match &c.config {
        Some(p) => std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?,
        None => String::new(),
    };
    let (cfg, problems) = crate::cmdline::parse_words(crate::cmdline::layered(&file, &line));
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"config": cfg, "problems": problems}))?);
    Ok(if problems.is_empty() { 0 } else { 2 })
}

fn receive(r: Receive) -> anyhow::Result<i32> {
    use anyhow::Context;
    use ferry_replicator::receiver::{Receiver, TargetSpec};
    let token = r
        .token
        .or_else(|| std::env::var("FERRY_TOKEN").ok())
        .context("--token (or FERRY_TOKEN) is required")?;
    let targets = match &r.image {
        Some(dir) => {
            anyhow::ensure!(r.target.is_empty(), "--image and --target exclude each other");
            let sizes =
                r.size.iter().map(|s| crate::to_image::parse_size(s)).collect::<anyhow::Result<Vec<_>>>()?;
            // Conversion mounts the received system: in a namespace of our own.
            private_mounts()?;
            crate::to_image::staging(std::path::Path::new(dir), &sizes)?
        }
        None => {
            anyhow::ensure!(!r.target.is_empty(), "at least one --target (or --image DIR) is required");
            anyhow::ensure!(r.size.is_empty() && r.format.is_empty(), "--size and --format go with --image");
            r.target
                .iter()
                .map(|t| {
                    let p = std::path::PathBuf::from(t);
                    let name =
                        p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| t.clone());
                    TargetSpec { path: p, name, serial: String::new() }
                })
                .collect()
        }
    };
    let mut rx = Receiver::new(token, targets, r.state_dir.into())?;
    if let Some(dir) = &r.image {
        let formats = if r.format.is_empty() { vec!["qcow2".to_string()] } else { r.format.clone() };
        let job = crate::to_image::Job {
            dir: dir.into(),
            formats: formats
                .iter()
                .map(|f| crate::to_image::Format::parse(f))
                .collect::<anyhow::Result<_>>()?,
            keep_raw: r.keep_raw,
            status: rx.status.clone(),
        };
        rx.finalize = Some(Box::new(move |targets, handover| {
            let paths: Vec<std::path::PathBuf> = targets.iter().map(|t| t.path.clone().into()).collect();
            job.finalize(&paths, handover)
        }));
    }
    let listener =
        std::net::TcpListener::bind(&r.listen).with_context(|| format!("listening on {}", r.listen))?;
    eprintln!(
        "ferry-init: receiving on {} (TLS fingerprint {})",
        listener.local_addr()?,
        rx.identity.fingerprint
    );
    rx.serve(&listener)?;
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    eprintln!("ferry-init: finalized pass received; peak memory {} KiB", ru.max_rss());
    Ok(0)
}

/// Host mode mounts the migrated system in a mount namespace of its own, so nothing it mounts
/// (or a guest's fstab could make it mount) is visible on the host, and every mount goes away
/// with the process.
fn private_mounts() -> anyhow::Result<()> {
    use anyhow::Context;
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("creating a private mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("making mounts private")?;
    Ok(())
}

fn rehearse(r: Rehearse) -> anyhow::Result<i32> {
    use crate::rehearse::{self, qemu::Accel};
    let accel = match r.accel.as_str() {
        "auto" => None,
        "kvm" => Some(Accel::Kvm),
        "tcg" => Some(Accel::Tcg),
        other => anyhow::bail!("--accel {other:?}: expected kvm, tcg or auto"),
    };
    anyhow::ensure!((128..=65536).contains(&r.memory), "--memory {}: expected 128 to 65536 MiB", r.memory);
    private_mounts()?;
    let o = rehearse::Options {
        disks: r.disk.iter().map(Into::into).collect(),
        workdir: r
            .workdir
            .map(Into::into)
            .unwrap_or_else(|| format!("/var/tmp/ferry-rehearse-{}", std::process::id()).into()),
        timeout: std::time::Duration::from_secs(r.timeout),
        memory_mb: r.memory,
        accel,
        keep: r.keep,
    };
    let rep = rehearse::run(&o)?;
    if r.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        print!("{}", rehearse::table(&rep));
    }
    Ok(rep.verdict.code())
}

fn export_oci(e: ExportOci) -> anyhow::Result<i32> {
    use crate::oci::{self, layer::Compression};
    let compression = match e.compress.as_str() {
        "gzip" => Compression::Gzip,
        "zstd" => Compression::Zstd,
        other => anyhow::bail!("--compress {other:?}: expected gzip or zstd"),
    };
    anyhow::ensure!(
        !e.tag.is_empty()
            && e.tag.len() <= 128
            && e.tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "--tag {:?}: letters, digits, '.', '_' and '-', at most 128",
        e.tag
    );
    private_mounts()?;
    let o = oci::Options {
        disks: e.disk.iter().map(Into::into).collect(),
        out: e.out.map(Into::into),
        push: e.push,
        insecure: e.insecure,
        tag: e.tag,
        cmd: e.cmd.map(|c| vec!["/bin/sh".to_string(), "-c".to_string(), c]).unwrap_or_default(),
        compression,
        workdir: e
            .workdir
            .map(Into::into)
            .unwrap_or_else(|| format!("/var/tmp/ferry-export-{}", std::process::id()).into()),
    };
    let rep = oci::run(&o)?;
    println!("{}", serde_json::to_string_pretty(&rep)?);
    Ok(0)
}

fn convert(c: Convert) -> anyhow::Result<i32> {
    anyhow::ensure!(!c.disk.is_empty(), "at least one --disk is required");
    let disks: Vec<std::path::PathBuf> = c.disk.iter().map(Into::into).collect();
    private_mounts()?;
    let nics = if c.nic.is_empty() { Nics::Kernel } else { Nics::Names(c.nic) };
    let luks_keys = c
        .luks_key_file
        .iter()
        .map(|p| ferry_convert::crypt::read_key_file(p.as_ref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        luks_keys.len() <= ferry_convert::crypt::MAX_KEYS,
        "at most {} --luks-key-file",
        ferry_convert::crypt::MAX_KEYS
    );
    let opts = ferry_convert::Options {
        grow: !c.no_grow,
        workdir: c.workdir.into(),
        nics,
        hooks: Vec::new(),
        luks_keys,
    };
    let rep = ferry_convert::run(&disks, &mut ferry_convert::machine::Host::default(), &opts);
    println!("{}", serde_json::to_string_pretty(&rep)?);
    Ok(if rep.ok { 0 } else { 1 })
}
