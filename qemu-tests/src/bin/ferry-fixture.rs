//! Prints the path of a cached test system, building it first if needed:
//! `ferry-fixture debian-xen SUITE SIZE_MIB PROFILE` (profiles: gpt-bios-ext4, gpt-uefi-xfs,
//! mbr-lvm).

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ferry-fixture debian-xen SUITE SIZE_MIB gpt-bios-ext4|gpt-uefi-xfs|mbr-lvm";
    let r = match a.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["debian-xen", suite, size, profile] => size
            .parse()
            .map_err(|_| anyhow::anyhow!("SIZE_MIB must be a number, got {size:?}"))
            .and_then(|s| ferry_qemu_tests::fixture::debian_xen(suite, s, profile)),
        _ => Err(anyhow::anyhow!(usage)),
    };
    match r {
        Ok(p) => println!("{}", p.display()),
        Err(e) => {
            eprintln!("ferry-fixture: {e:#}");
            std::process::exit(1);
        }
    }
}
