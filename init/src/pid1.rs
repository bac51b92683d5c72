//! The appliance's boot pipeline as PID 1: early mounts → command line → logging → drivers
//! (coldplug) → network → status endpoint → job → `ferry.after`. PID 1 never exits: on a fatal
//! error it reports it on the console and in /status and stays reachable.

use crate::cmdline::{self, After, Config};
use crate::status::{Phase, Shared, State};
use crate::{coldplug, inventory, kmod, mounts, net, reaper, status};
use anyhow::Context;
use ferry_replicator::receiver::{Receiver, TargetSpec};
use std::net::TcpListener;
use std::time::Duration;

pub fn run() -> ! {
    let mut early = mounts::early();
    let line = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let file = std::fs::read_to_string(cmdline::CONFIG_FILE).unwrap_or_default();
    let (cfg, problems) = cmdline::parse_words(cmdline::layered(&file, &line));
    crate::logger::init(cfg.debug, true);
    ferry_convert::modules::set_loader(|m| kmod::Loader::for_running_kernel()?.ensure(m).map(drop));
    log::info!(
        "ferry-init {} starting; cmdline: {}",
        env!("CARGO_PKG_VERSION"),
        cmdline::redact(line.trim())
    );
    if !file.is_empty() {
        // Keys only: the file may hold the token.
        let keys: Vec<String> = cmdline::layered(&file, "")
            .iter()
            .map(|w| w.split('=').next().unwrap_or_default().to_string())
            .collect();
        log::info!(
            "settings embedded in {} (the command line overrides them): {}",
            cmdline::CONFIG_FILE,
            keys.join(" ")
        );
    }
    early.extend(problems);
    let shared: Shared = Default::default();
    {
        let mut s = shared.lock().unwrap();
        s.config = Some(cfg.clone());
        s.phase = Phase::Boot;
    }
    for p in early {
        State::problem(&shared, p);
    }
    reaper::start();
    let s2 = shared.clone();
    let result = std::panic::catch_unwind(move || boot(&cfg, &s2));
    let after = match result {
        Ok(Ok(after)) => after,
        Ok(Err(e)) => {
            log::error!("fatal: {e:#}");
            State::problem(&shared, format!("fatal: {e:#}"));
            State::set_phase(&shared, Phase::Failed);
            After::Wait
        }
        Err(_) => {
            State::problem(&shared, "fatal: the appliance pipeline panicked (see console)".into());
            State::set_phase(&shared, Phase::Failed);
            After::Wait
        }
    };
    finish(after)
}

fn boot(cfg: &Config, shared: &Shared) -> anyhow::Result<After> {
    let security = crate::secure::probe();
    log::info!(
        "firmware: {}, secure boot {}, lockdown {}",
        if security.uefi { "UEFI" } else { "BIOS" },
        if security.secure_boot { "on" } else { "off" },
        security.lockdown.as_deref().unwrap_or("unknown")
    );
    shared.lock().unwrap().security = security;
    State::set_phase(shared, Phase::Drivers);
    let loader = kmod::Loader::for_running_kernel()?;
    let mut problems = Vec::new();
    let loaded = coldplug::run(&loader, std::path::Path::new("/sys"), &mut problems);
    shared.lock().unwrap().modules_loaded = loaded;
    for p in problems {
        State::problem(shared, p);
    }
    check_entropy(shared);

    // The status endpoint first when it listens on every address: it answers whatever the
    // network configuration or the receiver below waits for.
    let early_status = cfg.status.ip().is_unspecified();
    if early_status {
        status::serve(cfg.status, shared.clone())?;
    }
    State::set_phase(shared, Phase::Network);
    for p in net::configure(&cfg.ip) {
        State::problem(shared, p);
    }
    for l in net::links() {
        log::info!("network: {} {} {}", l.name, l.mac, l.addresses.join(" "));
    }
    if !early_status {
        status::serve(cfg.status, shared.clone())?;
    }
    shared.lock().unwrap().ready_uptime_s = Some(crate::sysinfo::uptime());
    State::set_phase(shared, Phase::Ready);
    log::info!("ready");
    job(cfg, shared)
}

/// The appliance's job: receive the disks (`ferry.token` required), then follow `ferry.after`.
/// With `ferry.idle`, the job ends when no sender has connected for that long.
fn job(cfg: &Config, shared: &Shared) -> anyhow::Result<After> {
    if let Some(idle) = cfg.idle_s {
        let (shared, after) = (shared.clone(), cfg.after);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(idle));
            let rx = shared.lock().unwrap().receiver.clone();
            if rx.is_none_or(|r| r.lock().unwrap().sessions == 0) {
                State::set_phase(&shared, Phase::IdleTimeout);
                log::info!("no sender within ferry.idle={idle}s; the job ends");
                finish(after);
            }
        });
    }
    let token = match cfg.token.clone() {
        Some(t) => t,
        None => generated_token(shared)?,
    };
    let discover = || -> Vec<TargetSpec> {
        inventory::disks(std::path::Path::new("/sys"))
            .into_iter()
            .filter(|d| !d.read_only && !d.appliance && d.size_bytes > 0)
            .map(|d| TargetSpec { path: d.path.into(), name: d.name, serial: d.serial })
            .collect()
    };
    if discover().is_empty() {
        State::problem(shared, "no writable target disk yet: attach one before sending".into());
    }
    let mut rx = Receiver::new(token, Vec::new(), "/run/ferry".into())?;
    rx.discover = Some(Box::new(discover));
    let (sh, grow, convert) = (shared.clone(), cfg.grow, cfg.convert);
    rx.finalize = Some(Box::new(move |targets, handover| {
        if !convert {
            return ferry_replicator::receiver::Finalized {
                ok: true,
                report: serde_json::json!({ "note": "data complete; not converted (ferry.convert=no)" }),
            };
        }
        State::set_phase(&sh, Phase::Converting);
        let disks: Vec<std::path::PathBuf> = targets.iter().map(|t| t.path.clone().into()).collect();
        let opts = ferry_convert::Options {
            grow,
            workdir: "/run/ferry/convert".into(),
            nics: ferry_convert::nics::Nics::Kernel,
            hooks: handover.hooks.clone(),
            luks_keys: handover.luks_keys.clone(),
        };
        let rep = std::panic::catch_unwind(|| {
            ferry_convert::run(&disks, &mut ferry_convert::machine::Appliance, &opts)
        })
        .unwrap_or_else(|_| ferry_convert::Report {
            error: Some("the converter panicked (see the console)".into()),
            ..Default::default()
        });
        let done = ferry_replicator::receiver::Finalized {
            ok: rep.ok,
            report: serde_json::to_value(&rep).unwrap_or_default(),
        };
        {
            let mut st = sh.lock().unwrap();
            if let Some(e) = &rep.error {
                st.problems.push(format!("conversion: {e}"));
            }
            st.conversion = Some(rep);
        }
        State::set_phase(&sh, if done.ok { Phase::Converted } else { Phase::ConversionFailed });
        done
    }));
    shared.lock().unwrap().receiver = Some(rx.status.clone());
    let listener = TcpListener::bind(cfg.listen).with_context(|| format!("listening on {}", cfg.listen))?;
    State::set_phase(shared, Phase::Receiving);
    rx.serve(&listener)?;
    let failed = shared.lock().unwrap().phase == Phase::ConversionFailed;
    if failed {
        // Stay reachable so the operator can read /status; never power off a failed job.
        return Ok(After::Wait);
    }
    State::set_phase(shared, Phase::Done);
    Ok(cfg.after)
}

/// No `ferry.token`: make a 128-bit one (waiting for the kernel's RNG if need be) and show it
/// on the console only — never in the log, `dmesg` or /status.
fn generated_token(shared: &Shared) -> anyhow::Result<String> {
    State::set_phase(shared, Phase::MakingToken);
    let t = ferry_boot::token::generate()?;
    eprintln!("\n\n    ferry: no ferry.token was given; this appliance's token is:\n\n        {t}\n\n");
    log::info!("no ferry.token given: generated one, shown on the console only");
    shared.lock().unwrap().token_generated = true;
    Ok(t)
}

/// Without a hardware RNG the kernel's CRNG may never initialise under emulation, and anything
/// that needs random numbers (TLS keys) would hang: report it.
fn check_entropy(shared: &Shared) {
    let mut b = [0u8; 1];
    // SAFETY: writes one byte into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 1, libc::GRND_NONBLOCK) };
    if n != 1 {
        State::problem(
            shared,
            "the kernel's random number generator is not ready; add a virtio-rng device".into(),
        );
    }
}

fn finish(after: After) -> ! {
    nix::unistd::sync();
    let mode = match after {
        After::Poweroff => Some(nix::sys::reboot::RebootMode::RB_POWER_OFF),
        After::Reboot => Some(nix::sys::reboot::RebootMode::RB_AUTOBOOT),
        After::Wait => None,
    };
    if let Some(m) = mode {
        log::info!("job done: {after:?}");
        std::thread::sleep(Duration::from_millis(200));
        let Err(e) = nix::sys::reboot::reboot(m);
        log::error!("{after:?} failed: {e}");
    }
    log::info!("waiting (ferry.after=wait or a failure); the status endpoint stays up");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
