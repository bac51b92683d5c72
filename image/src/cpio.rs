//! A reproducible cpio (newc) archive: entries are written sorted by path with fixed owners,
//! times and inode numbers, so the same inputs always give the same bytes.

use anyhow::Result;
use std::collections::BTreeMap;
use std::io::Write;

pub enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

impl Archive {
    /// Adds a node; parent directories are created implicitly.
    pub fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for comp in path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries.entry(parent.clone()).or_insert(Node::Dir);
        }
        self.entries.insert(path, node);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add(path, Node::File { data, mode });
    }

    pub fn write<W: Write>(&self, mut w: W) -> Result<W> {
        for (ino, (path, node)) in self.entries.iter().enumerate() {
            let b = cpio::newc::Builder::new(path).ino(ino as u32 + 1).uid(0).gid(0).mtime(0);
            let (b, body): (_, &[u8]) = match node {
                Node::Dir => (b.mode(0o040755).nlink(2), &[]),
                Node::File { data, mode } => (b.mode(0o100000 | mode).nlink(1), data),
                Node::Symlink(t) => (b.mode(0o120777).nlink(1), t.as_bytes()),
                Node::CharDev { major, minor } => {
                    (b.mode(0o020600).nlink(1).rdev_major(*major).rdev_minor(*minor), &[])
                }
            };
            let mut wr = b.write(w, u32::try_from(body.len())?);
            wr.write_all(body)?;
            w = wr.finish()?;
        }
        Ok(cpio::newc::trailer(w)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_implicit_and_output_is_stable() {
        let mut a = Archive::default();
        a.file("/lib/modules/x/a.ko", b"abc".to_vec(), 0o644);
        a.add("/sbin/modprobe", Node::Symlink("/init".into()));
        a.add("/dev/console", Node::CharDev { major: 5, minor: 1 });
        let one = a.write(Vec::new()).unwrap();
        let two = a.write(Vec::new()).unwrap();
        assert_eq!(one, two);
        let names: Vec<&String> = a.entries.keys().collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "lib",
                "lib/modules",
                "lib/modules/x",
                "lib/modules/x/a.ko",
                "sbin",
                "sbin/modprobe"
            ]
        );
        // Read it back with the same crate.
        let mut r = std::io::Cursor::new(one);
        let mut seen = Vec::new();
        loop {
            let e = cpio::newc::Reader::new(&mut r).unwrap();
            if e.entry().is_trailer() {
                break;
            }
            seen.push((e.entry().name().to_string(), e.entry().mtime(), e.entry().rdev_major()));
            e.finish().unwrap();
        }
        assert_eq!(seen.len(), 8);
        assert!(seen.iter().all(|s| s.1 == 0));
        assert_eq!(seen[1], ("dev/console".to_string(), 0, 5));
    }
}
