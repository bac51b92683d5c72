//! Host subcommands of `ferry-init` (when it is not PID 1).

use argh::FromArgs;

/// ferry-init: the ferry appliance's PID 1; on a normal host, these subcommands.
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
}

pub fn main() -> i32 {
    let args: Args = argh::from_env();
    crate::logger::init(std::env::var_os("FERRY_DEBUG").is_some(), false);
    let r = match args.cmd {
        Cmd::Inventory(i) => inventory(i),
        Cmd::Cmdline(c) => cmdline(c),
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
            "{:<10} {:>16} {:>6} {:<7} {:<20} {:<20} RO",
            "NAME", "BYTES", "SECTOR", "BUS", "MODEL", "SERIAL"
        );
        for d in disks {
            println!(
                "{:<10} {:>16} {:>6} {:<7} {:<20} {:<20} {}",
                d.name, d.size_bytes, d.logical_sector, d.bus, d.model, d.serial, d.read_only
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
    let (cfg, problems) = crate::cmdline::parse(&line);
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"config": cfg, "problems": problems}))?);
    Ok(if problems.is_empty() { 0 } else { 2 })
}
