//! `ferry-init`: PID 1 of the ferry appliance. Run as PID 1 it boots the appliance
//! ([`pid1::run`]); run as `modprobe` it loads modules for the kernel; anywhere else it offers
//! host subcommands (see [`cli`]).

use ferry_init::{cli, kmod, pid1};

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    if std::process::id() == 1 {
        pid1::run();
    }
    let code = if argv0.ends_with("modprobe") {
        kmod::modprobe_main(std::env::args().skip(1).collect())
    } else {
        cli::main()
    };
    std::process::exit(code);
}
