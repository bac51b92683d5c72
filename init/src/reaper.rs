//! Zombie reaping for PID 1: every process re-parented to us is waited for.
//! (PID 1 spawns no children of its own yet; when it does, they must be exempted here.)

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::time::Duration;

pub fn start() {
    let _ = std::thread::Builder::new().name("reaper".into()).spawn(|| loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::empty())) {
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    });
}
