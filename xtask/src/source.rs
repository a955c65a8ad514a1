//! Reading the workspace's Rust sources for the text checks: which files
//! belong to which crate, and which of their lines are not test code.
//!
//! The checks read rustfmt's output (`cargo fmt --check` runs first in
//! `scripts/test`), so a closing brace at an item's own indent ends it. That
//! is why a line scanner is enough here: `syn` with span locations would
//! switch on `proc-macro2/span-locations` for every proc macro in the build.

use std::path::{Path, PathBuf};

/// One crate of the workspace: its directory relative to the root and its
/// source files (`src/**/*.rs`), sorted.
pub struct Crate {
    /// Relative to the workspace root, e.g. `gateway`.
    pub dir: String,
    /// Relative to the workspace root, e.g. `gateway/src/app.rs`.
    pub files: Vec<String>,
}

/// The workspace root (the parent of this crate's directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Every crate directory named in the root `Cargo.toml`'s `members`.
pub fn crates() -> Result<Vec<Crate>, String> {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).map_err(|e| format!("reading Cargo.toml: {e}"))?;
    let members =
        manifest.lines().find_map(|l| l.trim().strip_prefix("members = [")).ok_or("Cargo.toml has no one-line `members = [...]`")?;
    let mut out = Vec::new();
    for dir in members.trim_end_matches(']').split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty()) {
        let mut files = Vec::new();
        walk(&root, &root.join(dir).join("src"), &mut files)?;
        files.sort();
        out.push(Crate { dir: dir.to_owned(), files });
    }
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for e in entries {
        let path = e.map_err(|e| format!("reading {}: {e}", dir.display()))?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The file's text (relative to the root).
pub fn read(file: &str) -> Result<String, String> {
    std::fs::read_to_string(root().join(file)).map_err(|e| format!("reading {file}: {e}"))
}

/// The lines that are not test code: a `#[cfg(test)]` item (a `mod` or a
/// `fn`) is blanked up to its closing brace at its own indent, so line
/// numbers stay true. Files named `tests.rs` are test modules as a whole.
pub fn non_test_lines(file: &str, text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if file.ends_with("/tests.rs") {
        return vec![String::new(); lines.len()];
    }
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            let indent = indent_of(&lines[i]);
            let close = format!("{}}}", " ".repeat(indent));
            let mut j = i + 1;
            // A one-line item (`mod tests;`) ends on its own line.
            let one_line = lines.get(j).is_some_and(|l| l.trim_end().ends_with(';'));
            while !one_line && j < lines.len() && lines[j].trim_end() != close {
                j += 1;
            }
            let last = j.min(lines.len() - 1);
            for l in &mut lines[i..=last] {
                l.clear();
            }
            i = j;
        }
        i += 1;
    }
    lines
}

/// Leading spaces.
pub fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}
