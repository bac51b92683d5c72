//! Machine-level containerization: `ferry-init export-oci` turns a migrated Debian 12 disk into
//! an OCI image — the same bytes for the same disk, trimmed (empty /boot, /proc, kernel
//! modules; fstab emptied; machine-id cleared), its init as entrypoint — and pushes it to a
//! real registry (Debian's `docker-registry`, started here on localhost). `skopeo inspect` reads
//! it back from the registry; pulled again and unpacked (`umoci`), it runs a command (printing
//! the migrated system's os-release) under
//! `crun`, the OCI runtime podman uses. (Podman 4.3 itself hangs on this host's hybrid cgroup
//! layout; crun runs in a mount namespace that sees cgroup2 only.) The disk is never changed.

use ferry_qemu_tests::{binary, fixture, free_port};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(p: &Path) -> String {
    run(Command::new("sha256sum").arg(p)).split_whitespace().next().unwrap().to_string()
}

fn export(disk: &Path, t: &Path, name: &str, push: Option<&str>) -> serde_json::Value {
    let mut c = Command::new(binary("ferry-init"));
    c.args(["export-oci", "--tag", "v1", "--out"])
        .arg(t.join(name))
        .arg("--workdir")
        .arg(t.join(format!("{name}-work")));
    c.arg("--disk").arg(disk);
    if let Some(dest) = push {
        c.args(["--push", dest, "--insecure"]);
    }
    serde_json::from_str(&run(&mut c)).unwrap()
}

/// A registry on 127.0.0.1 with its storage in `dir`; killed on drop.
struct Registry(std::process::Child);
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn registry(dir: &Path, port: u16) -> Registry {
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "registry did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Registry(child)
}

#[test]
fn a_migrated_system_becomes_an_oci_image_in_a_registry_that_runs() {
    let t = tempfile::tempdir().unwrap();
    let disk = t.path().join("disk.img");
    fixture::copy(&fixture::debian_xen("bookworm", 2048, "gpt-bios-ext4").unwrap(), &disk).unwrap();
    let before = sha256(&disk);
    let port = free_port();
    let _reg = registry(t.path(), port);
    let dest = format!("127.0.0.1:{port}/ferry/web01:v1");

    let a = export(&disk, t.path(), "a", Some(&dest));
    assert_eq!(a["architecture"], "amd64");
    assert_eq!(a["pushed"], dest.as_str());
    // The same disk gives the same image.
    let b = export(&disk, t.path(), "b", None);
    assert_eq!((&a["manifest_digest"], &a["diff_id"]), (&b["manifest_digest"], &b["diff_id"]));
    assert_eq!(sha256(&disk), before, "export-oci changed the disk");

    let inspect: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))))
    .unwrap();
    assert_eq!(inspect["Digest"], a["manifest_digest"], "{inspect:#}");
    assert_eq!(inspect["Labels"]["org.opencontainers.image.title"], "Debian GNU/Linux 12 (bookworm)");
    assert!(inspect["Env"].to_string().contains("container=oci"), "{inspect:#}");
    let cfg: serde_json::Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--config", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))))
    .unwrap();
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/sbin/init"]), "{cfg:#}");
    assert_eq!(cfg["config"]["StopSignal"], "SIGRTMIN+3", "{cfg:#}");

    // Pulled back from the registry, unpacked, and run.
    let pulled = t.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:v1", pulled.display())));
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", pulled.display()))
        .arg(&bundle));
    let cfg_path = bundle.join("config.json");
    let mut rt: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    rt["process"]["args"] = serde_json::json!([
        "/bin/sh",
        "-c",
        ". /etc/os-release; echo \"os=$PRETTY_NAME\"; echo debian=$(cat /etc/debian_version) container=$container machine_id=$(wc -c </etc/machine-id) \
         boot=$(ls -A /boot | wc -l) modules=$(ls -A /lib/modules | wc -l) fstab=$(grep -vc '^#' /etc/fstab)"
    ]);
    rt["process"]["terminal"] = false.into();
    std::fs::write(&cfg_path, serde_json::to_vec(&rt).unwrap()).unwrap();
    let out = run(Command::new("unshare").args(["-m", "sh", "-c"]).arg(format!(
        "umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && \
         crun --cgroup-manager=disabled run -b {} ferry-oci-test-{}",
        bundle.display(),
        std::process::id()
    )));
    assert!(out.contains("os=Debian GNU/Linux 12 (bookworm)") && out.contains("debian=12."), "{out}");
    assert!(out.contains("container=oci machine_id=0 boot=0 modules=0 fstab=0"), "{out}");
}
