//! Documentation checks: every module opens with a `//!` comment that says
//! what it is for, and every path ARCHITECTURE.md's map names exists.

use crate::source::{self, Crate};

/// The map checked for stale paths, relative to the workspace root.
pub const MAP: &str = "ARCHITECTURE.md";

/// Every source file's first line is a `//!` comment.
pub fn check_module_docs(crates: &[Crate], errors: &mut Vec<String>) -> Result<(), String> {
    for file in crates.iter().flat_map(|c| &c.files) {
        let text = source::read(file)?;
        if !text.lines().next().is_some_and(|l| l.starts_with("//!")) {
            errors.push(format!("{file}: a module opens with a `//!` comment that says what it is for"));
        }
    }
    Ok(())
}

/// Every backticked repository path in the map exists: a word in backticks
/// that contains a `/`, has no spaces or `{`, and names a file by a known
/// extension or a folder by a trailing `/`.
pub fn check_map_paths(errors: &mut Vec<String>) -> Result<(), String> {
    let root = source::root();
    let text = source::read(MAP)?;
    for path in backticked_paths(&text) {
        if !root.join(&path).exists() {
            errors.push(format!("{MAP} names `{path}`, which does not exist"));
        }
    }
    Ok(())
}

const EXTENSIONS: &[&str] = &[".rs", ".md", ".toml", ".yml", ".yaml", ".sql", ".html", ".json", ".proto", ".py", ".sh"];

fn backticked_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.contains('/') && !w.contains([' ', '{', '*', '<', ':', '$', '=']) && !w.starts_with('/') && !w.starts_with('.'))
        .filter(|w| w.ends_with('/') || EXTENSIONS.iter().any(|x| w.ends_with(x)))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_words_in_backticks() {
        let text = "see `engine/src/limits.rs` and `gateway/` but not `GET /api/x` or `a/b` or `/usher.v1.X/Y`";
        assert_eq!(super::backticked_paths(text), ["engine/src/limits.rs", "gateway/"]);
    }
}
