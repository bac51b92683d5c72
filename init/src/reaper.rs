//! Zombie reaping for PID 1. Orphans re-parented to us are reaped; children our own code started
//! (registered by `ferry_convert::cmd`, see [`ferry_convert::cmd::is_owned`]) are left for
//! their spawner's `wait`.

use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
use std::time::Duration;

use ferry_convert::cmd::is_owned as owned;

pub fn start() {
    let _ = std::thread::Builder::new().name("reaper".into()).spawn(|| loop {
        // Peek without reaping, so a spawner's own wait still finds its child.
        match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(st) => {
                let Some(pid) = st.pid() else { continue };
                if owned(pid.as_raw()) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                // A spawner registers right after fork: give it a moment before reaping.
                std::thread::sleep(Duration::from_millis(100));
                if !owned(pid.as_raw()) {
                    let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    });
}
