//! Helpers of the root tests: a shell runner that fails the test with its stderr, and a loop
//! device detached when dropped.
#![allow(dead_code)]

use std::process::Command;

pub fn sh(c: &str) -> String {
    let out = Command::new("bash").arg("-c").arg(c).output().unwrap();
    assert!(out.status.success(), "{c}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device (its path); detached when dropped.
pub struct Loop(pub String);

impl Loop {
    pub fn attach(img: &std::path::Path) -> Loop {
        Loop(sh(&format!("losetup --show -f {}", img.display())))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}
