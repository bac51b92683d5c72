//! `ferry`: the source-side CLI. Sending disks arrives with the replication work.

use argh::FromArgs;

/// ferry: move a Linux server onto a fresh KVM virtual machine.
#[derive(FromArgs)]
struct Args {
    /// print the version
    #[argh(switch)]
    version: bool,
}

fn main() {
    let a: Args = argh::from_env();
    if a.version {
        println!("ferry {}", env!("CARGO_PKG_VERSION"));
    }
}
