//! Zombie reaping for PID 1. Orphans re-parented to us are reaped; children our own code started
//! (registered through [`own`] by [`crate::cmd`]) are left for their spawner's `wait`.

use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

static OWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn owned(pid: i32) -> bool {
    OWNED.lock().unwrap().as_ref().is_some_and(|s| s.contains(&pid))
}

/// Marks a child as waited for by its spawner (`true`) or releases it (`false`).
pub fn own(pid: u32, yes: bool) {
    let mut g = OWNED.lock().unwrap();
    let s = g.get_or_insert_with(HashSet::new);
    if yes {
        s.insert(pid as i32);
    } else {
        s.remove(&(pid as i32));
    }
}

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
