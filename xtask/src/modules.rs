//! Module cycles: within each crate, the graph of its top-level modules
//! (`src/x.rs` or `src/x/`) by their `crate::x` paths has no cycle, except
//! those listed in [`CYCLES_KNOWN`], a list that may only shrink.
//!
//! A cycle is a strongly connected component of two or more modules
//! (Tarjan's algorithm). Comment lines do not count: a doc link is not an
//! import. Only `crate::` paths are read, groups included (`crate::{a,
//! b::{C}}`, over several lines as rustfmt writes them); a `super::` path
//! and a name re-exported at the crate root (`crate::Config`) are not
//! followed. `src/bin/` holds other crates and is skipped.

use std::collections::{BTreeMap, BTreeSet};

use crate::source::{self, Crate};

/// Cycles that exist and are still to be cut: `(crate dir, modules
/// sorted)`; none today. A cycle not listed fails the check, and so does a
/// listed one that is gone (remove it here).
pub const CYCLES_KNOWN: &[(&str, &[&str])] = &[];

/// Top-level module → the crate's other top-level modules it names.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module graph of one crate.
pub fn graph(krate: &Crate) -> Result<Graph, String> {
    let src = format!("{}/src/", krate.dir);
    let top = |file: &str| -> Option<String> {
        let rel = file.strip_prefix(&src)?;
        if rel.starts_with("bin/") {
            return None;
        }
        let first = rel.split('/').next()?.trim_end_matches(".rs");
        (!matches!(first, "lib" | "main")).then(|| first.to_owned())
    };
    let modules: BTreeSet<String> = krate.files.iter().filter_map(|f| top(f)).collect();
    let mut g = Graph::new();
    for file in &krate.files {
        let Some(from) = top(file) else { continue };
        let text = source::read(file)?;
        let code: String = text.lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
        let edges = g.entry(from.clone()).or_default();
        for to in crate_paths(&code) {
            if to != from && modules.contains(&to) {
                edges.insert(to);
            }
        }
    }
    Ok(g)
}

/// The first segment of every `crate::` path in `code`, including each
/// item of a `crate::{a, b::{c}}` group at its top level.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `usher_crate::x` or `my_crate::x` is another path.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        match rest.strip_prefix('{') {
            Some(group) => out.extend(group_heads(group)),
            None => out.extend(ident(rest)),
        }
    }
    out
}

/// The first segment of each top-level item of a group, read from just
/// after its `{` to its matching `}`.
fn group_heads(group: &str) -> Vec<String> {
    let (mut out, mut depth, mut item_start) = (Vec::new(), 0usize, true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                out.extend(ident(&group[i..]));
            }
            _ => {}
        }
    }
    out
}

fn ident(s: &str) -> Option<String> {
    let id: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!id.is_empty() && id.chars().next().is_some_and(|c| c.is_lowercase() || c == '_')).then_some(id)
}

/// Strongly connected components of two or more nodes, each sorted.
pub fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let lw = self.low[w.as_str()];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(lw));
                } else if self.on_stack.contains(w.as_str()) {
                    let iw = self.index[w.as_str()];
                    self.low.entry(v).and_modify(|l| *l = (*l).min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan { g, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), out: Vec::new() };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

/// Every crate's cycles against [`CYCLES_KNOWN`].
pub fn check(crates: &[Crate], errors: &mut Vec<String>) -> Result<(), String> {
    let mut found = BTreeSet::new();
    for krate in crates {
        let g = graph(krate)?;
        for c in cycles(&g) {
            let known = CYCLES_KNOWN.iter().any(|(d, m)| *d == krate.dir && m.iter().copied().eq(c.iter().map(String::as_str)));
            if !known {
                let edges: Vec<String> =
                    c.iter().flat_map(|m| g[m].iter().filter(|t| c.contains(t)).map(move |t| format!("{m} → {t}"))).collect();
                errors.push(format!("{}: modules import each other in a cycle: {}", krate.dir, edges.join(", ")));
            }
            found.insert((krate.dir.clone(), c));
        }
    }
    for (dir, modules) in CYCLES_KNOWN {
        let m: Vec<String> = modules.iter().map(|s| s.to_string()).collect();
        if !found.contains(&(dir.to_string(), m)) {
            errors.push(format!("{dir}: the cycle {modules:?} is gone: remove it from xtask's CYCLES_KNOWN"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_uses_and_groups() {
        assert_eq!(crate_paths("use crate::app::Ctx;"), ["app"]);
        assert_eq!(crate_paths("use crate::{auth::Caller, error::{ApiError, X}};"), ["auth", "error"]);
        assert_eq!(crate_paths("use crate::{\n    a::{B, C},\n    d::E,\n    f,\n};"), ["a", "d", "f"]);
        assert_eq!(crate_paths("let x = crate::limits::MAX + usher_crate::y;"), ["limits"]);
        assert!(crate_paths("use super::*;").is_empty());
    }

    #[test]
    fn a_cycle_is_a_component_of_two_or_more() {
        let mut g = Graph::new();
        for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e")] {
            g.entry(a.into()).or_default().insert(b.into());
        }
        assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    }
}
