//! What the ferry appliance (PID 1, `ferry-init`) and the image that carries it (`ferry-image`)
//! agree on, with nothing of either's machinery: the kernel module database (`kmod`: the image
//! takes the closure of the modules it ships, PID 1 loads them), the settings syntax (`cmdline`:
//! kernel parameters over the embedded `/etc/ferry/config`), the boot medium's marks (`medium`),
//! the one-time token (`token`), and calendar dates of Unix times (`civil`).

pub mod civil;
pub mod cmdline;
pub mod kmod;
pub mod medium;
pub mod token;
