//! The dm-crypt table line, in the order of the kernel's dm-crypt documentation:
//! `<cipher> <key> <iv_offset> <device path> <offset> [<#opt_params> <opt_params>]`.

use crate::luks::{dm_crypt_table, Volume};
use zeroize::Zeroizing;

fn volume(sector_size: u32, size_sectors: Option<u64>) -> Volume {
    Volume {
        version: 2,
        uuid: "u".into(),
        cipher: "aes-xts-plain64".into(),
        key: Zeroizing::new((0u8..64).collect()),
        offset_sectors: 32768,
        size_sectors,
        sector_size,
        iv_tweak: 0,
    }
}

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                       202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

#[test]
fn luks_dm_crypt_table_format() {
    let (len, params) = dm_crypt_table(&volume(4096, None), "253:3", 65536);
    assert_eq!(len, 32768);
    assert_eq!(params, format!("aes-xts-plain64 {KEY_HEX} 0 253:3 32768 1 sector_size:4096"));

    let mut v = volume(512, Some(1000));
    v.iv_tweak = 7;
    let (len, params) = dm_crypt_table(&v, "8:2", 65536);
    assert_eq!(len, 1000);
    assert_eq!(params, format!("aes-xts-plain64 {KEY_HEX} 7 8:2 32768"));

    // A segment that does not fit the device maps nothing rather than past its end.
    assert_eq!(dm_crypt_table(&volume(512, Some(40000)), "8:2", 65536).0, 0);
    assert_eq!(dm_crypt_table(&volume(512, None), "8:2", 100).0, 0);
}
