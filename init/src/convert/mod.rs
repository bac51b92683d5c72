//! Offline conversion of a migrated Linux system so it boots on KVM/virtio. (In progress: the
//! repartitioning stage is here; inspection, fixes, initramfs and bootloader follow.)

pub mod netcfg;
pub mod repart;
pub mod rewrite;

#[cfg(test)]
mod tests;
