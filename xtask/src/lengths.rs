//! Function length: no function outside tests is longer than
//! [`FN_LINES_MAX`] lines (TigerBeetle's limit), except those listed in
//! `xtask/long-functions.txt`, a ratchet that may only shrink: a listed
//! function is recorded at its length (shorter: write the new length;
//! longer: refused), and one cut below the limit must leave the list.
//!
//! A function runs from its `fn` line to the closing brace at the same
//! indent (rustfmt's layout); signature lines count, doc comments do not.

use std::collections::BTreeMap;

use crate::source::{self, Crate};

/// The longest a function may be, in lines.
pub const FN_LINES_MAX: usize = 70;

/// Where the ratchet list lives, relative to the workspace root. Each line:
/// `LINES PATH NAME` (a `#` line is a comment).
pub const LIST: &str = "xtask/long-functions.txt";

/// A function longer than the limit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LongFn {
    /// Relative to the workspace root.
    pub file: String,
    pub name: String,
    pub lines: usize,
}

/// Every function over the limit in these files, in file order.
pub fn long_functions(crates: &[Crate]) -> Result<Vec<LongFn>, String> {
    let mut out = Vec::new();
    for file in crates.iter().flat_map(|c| &c.files) {
        let text = source::read(file)?;
        out.extend(scan(file, &source::non_test_lines(file, &text)));
    }
    Ok(out)
}

/// The functions over the limit in one file's lines.
fn scan(file: &str, lines: &[String]) -> Vec<LongFn> {
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        // The signature ends at the first line ending in `{` (a body),
        // `;` (a declaration, in a trait) or `}` (a one-line body).
        let Some(sig_end) = lines[start..].iter().map(|l| l.trim_end()).find(|l| l.ends_with(['{', ';', '}'])) else { continue };
        if !sig_end.ends_with('{') {
            continue;
        }
        let close = format!("{}}}", " ".repeat(source::indent_of(line)));
        let Some(end) = lines[start + 1..].iter().position(|l| l.trim_end() == close) else { continue };
        let n = end + 2;
        if n > FN_LINES_MAX {
            out.push(LongFn { file: file.to_owned(), name, lines: n });
        }
    }
    out
}

/// The name, if this line starts a function item.
fn fn_name(line: &str) -> Option<String> {
    let mut rest = line.trim_start();
    if let Some(r) = rest.strip_prefix("pub") {
        rest = r.strip_prefix(' ').or_else(|| r.strip_prefix('(').and_then(|r| r.split_once(") ").map(|(_, r)| r)))?;
    }
    for q in ["const ", "async ", "unsafe ", "extern \"C\" "] {
        rest = rest.strip_prefix(q).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// The recorded list: (file, name) → recorded lengths (a name may repeat in
/// a file, one impl each).
pub fn read_list() -> Result<BTreeMap<(String, String), Vec<usize>>, String> {
    let text = source::read(LIST)?;
    let mut out: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(n), Some(file), Some(name), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{LIST}:{}: expected `LINES PATH NAME`", i + 1));
        };
        let n = n.parse().map_err(|_| format!("{LIST}:{}: {n} is not a number", i + 1))?;
        out.entry((file.to_owned(), name.to_owned())).or_default().push(n);
    }
    for v in out.values_mut() {
        v.sort_unstable();
    }
    Ok(out)
}

/// The long functions against the list.
pub fn check(crates: &[Crate], errors: &mut Vec<String>) -> Result<(), String> {
    let list = read_list()?;
    let mut found: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for f in long_functions(crates)? {
        found.entry((f.file, f.name)).or_default().push(f.lines);
    }
    for v in found.values_mut() {
        v.sort_unstable();
    }
    for ((file, name), lengths) in &found {
        let allowed = list.get(&(file.clone(), name.clone())).cloned().unwrap_or_default();
        for (k, n) in lengths.iter().enumerate() {
            match allowed.get(k + allowed.len().saturating_sub(lengths.len())) {
                None => errors.push(format!(
                    "{file}: fn {name} is {n} lines, over the limit of {FN_LINES_MAX}: cut it by job (the list in {LIST} may only shrink)"
                )),
                Some(max) if n > max => {
                    errors.push(format!("{file}: fn {name} grew to {n} lines (listed at {max} in {LIST}): it may only shrink"))
                }
                Some(max) if n < max => errors
                    .push(format!("{file}: fn {name} is {n} lines, listed at {max} in {LIST}: write {n} there, so it cannot grow back")),
                Some(_) => {}
            }
        }
    }
    for ((file, name), lengths) in &list {
        let now = found.get(&(file.clone(), name.clone())).map_or(0, Vec::len);
        if now < lengths.len() {
            errors.push(format!("{LIST} lists fn {name} in {file}, which is no longer over {FN_LINES_MAX} lines: remove the line"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_lines_are_recognised() {
        assert_eq!(fn_name("    pub(crate) async fn claim(&self) {").as_deref(), Some("claim"));
        assert_eq!(fn_name("pub const fn new() -> X {").as_deref(), Some("new"));
        assert_eq!(fn_name("fn main() {").as_deref(), Some("main"));
        assert_eq!(fn_name("    let f = |x| x;"), None);
        assert_eq!(fn_name("// fn not_code"), None);
    }

    #[test]
    fn a_declaration_over_several_lines_has_no_body() {
        let file = "xtask/src/example.rs";
        let text = format!(
            "trait T {{\n    fn declared(\n        &self,\n    ) -> u8;\n}}\n\nfn long() {{\n{}}}\n",
            "    let _ = 1;\n".repeat(FN_LINES_MAX)
        );
        let lines = source::non_test_lines(file, &text);
        let found = scan(file, &lines);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].name.as_str(), found[0].lines), ("long", FN_LINES_MAX + 2));
    }
}
