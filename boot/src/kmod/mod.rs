//! Kernel module database: parses `modules.dep`, `modules.alias`, `modules.softdep` and
//! `modules.builtin` of one kernel, matches device modaliases against the aliases, and resolves
//! a module to the ordered list of files to load (dependencies first, softdeps around).

mod load;

pub use load::{modprobe_main, Loader};

use anyhow::{Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Module names are compared with `-` and `_` treated alike, as the kernel does.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path like `kernel/drivers/block/xen-blkfront.ko.xz`.
pub fn name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

#[derive(Debug, Default, Clone)]
pub struct Softdep {
    pub pre: Vec<String>,
    pub post: Vec<String>,
}

/// Everything depmod wrote about one kernel's modules.
#[derive(Debug, Default)]
pub struct ModuleDb {
    pub dir: PathBuf,
    /// module name → (relative path, dependency names)
    pub deps: BTreeMap<String, (String, Vec<String>)>,
    pub aliases: Vec<(glob::Pattern, String)>,
    pub softdeps: BTreeMap<String, Softdep>,
    pub builtin: BTreeSet<String>,
}

impl ModuleDb {
    /// Reads the database in `dir` (e.g. `/lib/modules/6.1.0-26-amd64`).
    pub fn open(dir: &Path) -> Result<Self> {
        let read = |f: &str| -> Result<String> {
            let p = dir.join(f);
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let optional = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let mut db = Self::parse(
            &read("modules.dep")?,
            &optional("modules.alias"),
            &optional("modules.softdep"),
            &optional("modules.builtin"),
        )?;
        db.dir = dir.to_path_buf();
        Ok(db)
    }

    pub fn parse(dep: &str, alias: &str, softdep: &str, builtin: &str) -> Result<Self> {
        let mut db = ModuleDb::default();
        for (n, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let (path, rest) = line
                .split_once(':')
                .with_context(|| format!("modules.dep line {}: no ':' in {line:?}", n + 1))?;
            let deps = rest.split_whitespace().map(name_of).collect();
            db.deps.insert(name_of(path), (path.to_string(), deps));
        }
        for line in alias.lines() {
            let mut w = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(module)) = (w.next(), w.next(), w.next()) {
                if let Ok(p) = glob::Pattern::new(pat) {
                    db.aliases.push((p, normalize(module)));
                }
            }
        }
        for line in softdep.lines() {
            let mut w = line.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(module) = w.next() else { continue };
            let sd = db.softdeps.entry(normalize(module)).or_default();
            let mut post = false;
            for word in w {
                match word {
                    "pre:" => post = false,
                    "post:" => post = true,
                    m if post => sd.post.push(normalize(m)),
                    m => sd.pre.push(normalize(m)),
                }
            }
        }
        db.builtin = builtin.lines().filter(|l| !l.trim().is_empty()).map(name_of).collect();
        Ok(db)
    }

    /// Module names whose alias pattern matches `modalias` (sorted, no duplicates).
    pub fn lookup_alias(&self, modalias: &str) -> Vec<String> {
        let set: BTreeSet<&String> =
            self.aliases.iter().filter(|(p, _)| p.matches(modalias)).map(|(_, m)| m).collect();
        set.into_iter().cloned().collect()
    }

    /// Resolves a module name or alias (`fs-xfs`) to module names.
    pub fn resolve_name(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.deps.contains_key(&n) || self.builtin.contains(&n) {
            return vec![n];
        }
        self.lookup_alias(name)
    }

    /// The modules to load for `name`, in load order: softdep pre, dependencies (deepest first),
    /// the module, softdep post. Builtin modules are left out; unknown names are an error.
    pub fn load_order(&self, name: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&normalize(name), &mut seen, &mut out, 0)?;
        Ok(out)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
        depth: usize,
    ) -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        anyhow::ensure!(depth < 64, "module dependency chain too deep at {name}");
        if self.builtin.contains(name) {
            return Ok(());
        }
        let (_, deps) = self
            .deps
            .get(name)
            .with_context(|| format!("module {name} is not in {}/modules.dep", self.dir.display()))?;
        let soft = self.softdeps.get(name).cloned().unwrap_or_default();
        for pre in &soft.pre {
            // A softdep is a wish, not a requirement: skip ones this kernel lacks.
            if self.deps.contains_key(pre) {
                self.visit(pre, seen, out, depth + 1)?;
            }
        }
        for d in deps {
            self.visit(d, seen, out, depth + 1)?;
        }
        out.push(name.to_string());
        for post in &soft.post {
            if self.deps.contains_key(post) {
                self.visit(post, seen, out, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Relative path of a module file.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.deps.get(name).map(|(p, _)| p.as_str())
    }
}

#[cfg(test)]
mod tests;
