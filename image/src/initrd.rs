//! Settings embedded in an appliance initramfs: `ferry-image build` writes one zstd-compressed
//! cpio; `customize` appends a small uncompressed cpio holding `/etc/ferry/config` (the kernel
//! unpacks concatenated archives in order). Customizing again replaces that archive, merging the
//! old settings under the new ones, so the file never grows.

use crate::cpio::{Archive, Node};
use anyhow::{bail, Context, Result};
use ferry_boot::cmdline;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const CONFIG_PATH: &str = "etc/ferry/config";

/// Byte length of the appliance archive proper (its zstd frames) and the embedded config text,
/// if any. `what` names the file in errors.
pub fn split(initrd: &[u8], what: &str) -> Result<(usize, Option<String>)> {
    if !initrd.starts_with(&ZSTD_MAGIC) {
        bail!("{what} is not a ferry appliance initramfs: expected a zstd frame at offset 0");
    }
    let mut pos = 0;
    while initrd[pos..].starts_with(&ZSTD_MAGIC) {
        let n = zstd::zstd_safe::find_frame_compressed_size(&initrd[pos..])
            .map_err(|c| anyhow::anyhow!("{what}: damaged zstd frame at offset {pos} (code {c})"))?;
        pos += n;
    }
    let base = pos;
    while initrd.get(pos) == Some(&0) {
        pos += 1;
    }
    if pos == initrd.len() {
        return Ok((base, None));
    }
    match read_config(&initrd[pos..]) {
        Some(text) => Ok((base, Some(text))),
        None => bail!(
            "{what}: unexpected data at offset {pos} after the compressed archive; expected nothing or \
             the config archive `ferry-image customize` writes"
        ),
    }
}

/// The config file of an uncompressed cpio that holds nothing else (plus its directories).
fn read_config(data: &[u8]) -> Option<String> {
    let mut r = std::io::Cursor::new(data);
    let mut text = None;
    loop {
        let mut e = cpio::newc::Reader::new(&mut r).ok()?;
        if e.entry().is_trailer() {
            break;
        }
        let name = e.entry().name().to_string();
        if name == CONFIG_PATH {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).ok()?;
            text = Some(s);
        } else if name != "etc" && name != "etc/ferry" {
            return None;
        }
        e.finish().ok()?;
    }
    text
}

/// A word as the command-line splitter reads it back (quoted when it holds whitespace).
fn quoted(w: &str) -> String {
    if w.contains(char::is_whitespace) {
        format!("\"{w}\"")
    } else {
        w.to_string()
    }
}

/// The settings text after merging `words` over `old` (per key; a new `ip=` replaces all old).
pub fn merged(old: &str, words: &[String]) -> String {
    let line: Vec<String> = words.iter().map(|w| quoted(w)).collect();
    let all = cmdline::layered(old, &line.join(" "));
    // Keep the last word of each ferry.* key; every ip= (they add interfaces).
    let key = |w: &str| w.split('=').next().unwrap_or_default().to_string();
    let mut out: Vec<String> = Vec::new();
    for w in all {
        if w.starts_with("ferry.") {
            out.retain(|o| key(o) != key(&w));
        }
        out.push(w);
    }
    let mut text = format!(
        "# ferry appliance settings, written by ferry-image customize.\n# The kernel command line overrides them ({}).\n",
        cmdline::CONFIG_FILE
    );
    for w in out {
        text.push_str(&quoted(&w));
        text.push('\n');
    }
    text
}

/// The initramfs with `words` merged into its embedded settings.
pub fn customize(initrd: &[u8], words: &[String], what: &str) -> Result<Vec<u8>> {
    let (base, old) = split(initrd, what)?;
    let text = merged(old.as_deref().unwrap_or_default(), words);
    let (_, problems) = cmdline::parse_words(cmdline::layered(&text, ""));
    if !problems.is_empty() {
        bail!("the settings for {what} are not valid: {}", problems.join("; "));
    }
    let mut ar = Archive::default();
    ar.add("etc", Node::Dir);
    ar.add("etc/ferry", Node::Dir);
    ar.file(CONFIG_PATH, text.into_bytes(), 0o600);
    let mut out = initrd[..base].to_vec();
    // The kernel looks for an uncompressed archive at 4-byte aligned offsets and skips zeros.
    out.resize(base.next_multiple_of(4), 0);
    ar.write(out).context("writing the config archive")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<u8> {
        let mut ar = Archive::default();
        ar.file("init", b"#!/bin/sh\n".to_vec(), 0o755);
        zstd::bulk::compress(&ar.write(Vec::new()).unwrap(), 3).unwrap()
    }

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn embeds_replaces_and_merges() {
        let b = base();
        assert_eq!(split(&b, "x").unwrap(), (b.len(), None));
        let one = customize(&b, &words("ferry.token=first-token ferry.after=wait ip=dhcp"), "x").unwrap();
        assert_eq!(&one[..b.len()], &b[..]);
        assert_eq!(one.len() % 4, 0);
        let (n, text) = split(&one, "x").unwrap();
        assert_eq!(n, b.len());
        let text = text.unwrap();
        assert!(text.contains("\nferry.token=first-token\nferry.after=wait\nip=dhcp\n"), "{text}");
        // Again: the token changes, after stays, the old ip= is replaced; no second archive.
        let two =
            customize(&one, &words("ferry.token=second-token ip=10.0.0.9::10.0.0.1:24::eth0:none"), "x")
                .unwrap();
        let text = split(&two, "x").unwrap().1.unwrap();
        assert!(!text.contains("first-token") && text.contains("ferry.token=second-token"), "{text}");
        assert!(text.contains("ferry.after=wait") && !text.contains("ip=dhcp"), "{text}");
        assert_eq!(
            two[b.len()..].windows(6).filter(|w| w == b"070701").count(),
            4,
            "one archive of 3 entries + trailer"
        );
        // The appliance reads what was written.
        let (c, p) = cmdline::parse_words(cmdline::layered(&text, ""));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.token.as_deref(), Some("second-token"));
    }

    #[test]
    fn refuses_bad_input_and_bad_settings() {
        let b = base();
        let e = customize(b"070701...", &[], "img").unwrap_err().to_string();
        assert!(e.contains("img is not a ferry appliance initramfs"), "{e}");
        let mut junk = b.clone();
        junk.extend_from_slice(b"\x1f\x8bgzip");
        let e = customize(&junk, &[], "img").unwrap_err().to_string();
        assert!(e.contains(&format!("offset {}", b.len())), "{e}");
        let e = customize(&b, &words("ferry.token=short"), "img").unwrap_err().to_string();
        assert!(e.contains("at least 8"), "{e}");
    }
}
