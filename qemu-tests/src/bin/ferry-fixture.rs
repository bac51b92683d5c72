//! Prints the path of a cached test system, building it first if needed:
//! `ferry-fixture debian-xen SUITE SIZE_MIB`.

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let r = match a.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["debian-xen", suite, size] => size
            .parse()
            .map_err(|_| anyhow::anyhow!("SIZE_MIB must be a number, got {size:?}"))
            .and_then(|s| ferry_qemu_tests::fixture::debian_xen(suite, s)),
        _ => Err(anyhow::anyhow!("usage: ferry-fixture debian-xen SUITE SIZE_MIB")),
    };
    match r {
        Ok(p) => println!("{}", p.display()),
        Err(e) => {
            eprintln!("ferry-fixture: {e:#}");
            std::process::exit(1);
        }
    }
}
