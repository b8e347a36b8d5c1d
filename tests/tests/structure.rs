//! The layout rules of docs/architecture.md, checked on every `make test`:
//!
//! * no module cycle, at any level, in any crate of the workspace: module A uses B (a
//!   `crate::…` or `super::…` path, comments and strings left out) and B uses A — directly or
//!   through others, or through their submodules — fails. A module using its own ancestors
//!   (a folder's `mod.rs` types) is the folder pattern, not a cycle;
//! * the renewer's folders point one way: `cli` → `cloud` | `node` → `shared`;
//! * no source file over 600 lines.
//!
//! Test code (`mod tests`, `tests.rs`, `testing.rs`) is left out of the graph: tests may
//! reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The longest a file under `src/` may be; split by domain when it grows past this.
const MAX_LINES: usize = 600;

type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Every crate root: a `src/` (lib and main) and each multi-file binary under `src/bin/`.
fn crate_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for krate in ["renewer", "edge-filter", "syntax", "tests"] {
        let src = workspace().join(krate).join("src");
        roots.push(src.clone());
        if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
            for bin in bins.flatten() {
                if bin.path().is_dir() {
                    roots.push(bin.path());
                }
            }
        }
    }
    roots
}

/// The `.rs` files of the crate at `root` (not those of binaries below it).
fn sources(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "bin") && dir == root {
                continue;
            }
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_of(root: &Path, file: &Path) -> Module {
    let rel = file
        .strip_prefix(root)
        .expect("under the root")
        .with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| matches!(p.as_str(), "mod" | "lib" | "main"))
    {
        parts.pop();
    }
    parts
}

/// The source without comments, string and char literals, and without an inline `mod tests`
/// block (a `mod tests;` declaration is not cut: the rest of the file still counts).
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_len(rest, i == 0 || is_ident(b[i - 1])) {
            out.push_str("\"\"");
            i += len;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if let Some(len) = char_literal_len(rest) {
            out.push_str("' '");
            i += len;
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `r"…"`, `r#"…"#`, `br"…"` at the start of `s`: its length.
fn raw_string_len(s: &str, at_token_start: bool) -> Option<usize> {
    if !at_token_start {
        return None;
    }
    let body = s.strip_prefix('b').unwrap_or(s).strip_prefix('r')?;
    let hashes = body.len() - body.trim_start_matches('#').len();
    let after = body[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = after.find(&close)?;
    Some(s.len() - after.len() + end + close.len())
}

/// `'x'` or `'\n'` (not a lifetime) at the start of `s`: its length.
fn char_literal_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix('\'')?;
    let mut chars = body.char_indices();
    let (_, first) = chars.next()?;
    let len = if first == '\\' {
        body.find('\'').filter(|&e| e > 1)?
    } else {
        first.len_utf8()
    };
    (body[len..].starts_with('\'')).then_some(len + 2)
}

/// The module paths named after `kw::` in `code` (use trees with braces expanded).
fn paths_after(code: &str, kw: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let needle = format!("{kw}::");
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        if start > 0 && is_ident(code.as_bytes()[start - 1]) {
            continue;
        }
        expand(&code[from..], Vec::new(), &mut out);
    }
    out
}

fn expand(tree: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim_start();
    if let Some(inner) = tree.strip_prefix('{') {
        let mut depth = 0;
        let mut item = String::new();
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&item, prefix.clone(), out);
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        if !item.trim().is_empty() {
            expand(&item, prefix, out);
        }
        return;
    }
    let ident: String = tree
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || ident == "self" {
        out.push(prefix);
        return;
    }
    let mut path = prefix;
    path.push(ident.clone());
    match tree[ident.len()..].trim_start().strip_prefix("::") {
        Some(rest) => expand(rest, path, out),
        None => out.push(path),
    }
}

/// The longest known module that `path` starts with.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

fn is_test_module(m: &Module) -> bool {
    m.last().is_some_and(|n| n == "tests" || n == "testing")
}

/// Module → the modules it uses, for the crate at `root`.
fn uses(root: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    sources(root, root, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(root, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(root, file);
        if is_test_module(&module) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable source");
        let code = code_of(&text);
        let mut deps = BTreeSet::new();
        for path in paths_after(&code, "crate") {
            deps.extend(resolve(&path, &modules));
        }
        // `super::` from a.rs is a's parent; from a/mod.rs too (the folder's parent).
        let parent: Module = module[..module.len().saturating_sub(1)].to_vec();
        for path in paths_after(&code, "super") {
            let mut full = parent.clone();
            full.extend(path);
            deps.extend(resolve(&full, &modules));
        }
        deps.retain(|d| !module.starts_with(d) && !is_test_module(d));
        graph.insert(module, deps);
    }
    graph
}

/// Every cycle among siblings, at every level: an edge a → b counts between the two children
/// of their deepest common ancestor that contain them.
fn cycles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<String> {
    let mut levels: BTreeMap<Module, BTreeMap<Module, BTreeSet<Module>>> = BTreeMap::new();
    for (a, deps) in graph {
        for b in deps {
            let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
            if common >= a.len() || common >= b.len() {
                continue; // one contains the other
            }
            levels
                .entry(a[..common].to_vec())
                .or_default()
                .entry(a[..=common].to_vec())
                .or_default()
                .insert(b[..=common].to_vec());
        }
    }
    let mut found = Vec::new();
    for edges in levels.values() {
        for start in edges.keys() {
            if let Some(mut path) = path_back(edges, start) {
                // One report per cycle: start it at its smallest module.
                path.pop();
                let smallest = (0..path.len()).min_by_key(|&i| &path[i]).unwrap_or(0);
                path.rotate_left(smallest);
                path.push(path[0].clone());
                let names: Vec<String> = path.iter().map(|m| m.join("::")).collect();
                found.push(names.join(" → "));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// A path from `start` back to itself, if there is one.
fn path_back(edges: &BTreeMap<Module, BTreeSet<Module>>, start: &Module) -> Option<Vec<Module>> {
    let mut stack = vec![vec![start.clone()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().expect("paths are never empty");
        for next in edges.get(last).into_iter().flatten() {
            let mut longer = path.clone();
            longer.push(next.clone());
            if next == start {
                return Some(longer);
            }
            if seen.insert(next.clone()) {
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_module_cycles_in_any_crate() {
    let mut problems = Vec::new();
    for root in crate_roots() {
        for cycle in cycles(&uses(&root)) {
            problems.push(format!("{}: {cycle}", root.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "module cycles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_renewer_folders_point_one_way() {
    // Which top-level folders each may use (besides itself).
    let allowed: BTreeMap<&str, &[&str]> = [
        ("shared", &[][..]),
        ("cloud", &["shared"][..]),
        ("node", &["shared"][..]),
        ("cli", &["shared", "cloud", "node"][..]),
        ("fuzzing", &["shared", "node"][..]),
    ]
    .into_iter()
    .collect();
    let graph = uses(&workspace().join("renewer/src"));
    let mut problems = Vec::new();
    for (module, deps) in &graph {
        let Some(top) = module.first() else { continue };
        let Some(ok) = allowed.get(top.as_str()) else {
            problems.push(format!(
                "{}: a folder docs/architecture.md does not place",
                top
            ));
            continue;
        };
        for dep in deps {
            let Some(dep_top) = dep.first() else { continue };
            if dep_top != top && !ok.contains(&dep_top.as_str()) {
                problems.push(format!("{} uses {}", module.join("::"), dep.join("::")));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_source_file_is_over_the_limit() {
    let mut long = Vec::new();
    for krate in ["renewer", "edge-filter", "syntax", "tests"] {
        let src = workspace().join(krate).join("src");
        let mut files = Vec::new();
        sources(&PathBuf::new(), &src, &mut files);
        for file in files {
            let lines = std::fs::read_to_string(&file)
                .expect("readable")
                .lines()
                .count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by domain):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_and_the_folder_pattern() {
    let code = code_of(
        "use crate::{a::{self, X}, b};\n// use crate::c;\nlet s = \"crate::d\";\nfn f() { super::e::g(); }",
    );
    let mut paths = paths_after(&code, "crate");
    paths.sort();
    assert_eq!(paths, vec![vec!["a"], vec!["a", "X"], vec!["b"]]);
    assert_eq!(paths_after(&code, "super"), vec![vec!["e", "g"]]);

    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let graph: BTreeMap<Module, BTreeSet<Module>> = [
        (m("x::a"), [m("y::b")].into()),
        (m("y::b"), [m("x::c")].into()),
        (m("x::c"), [m("x")].into()),
    ]
    .into_iter()
    .collect();
    // x → y → x at the top level, though no two files use each other.
    assert_eq!(cycles(&graph), vec!["x → y → x".to_string()]);
    let acyclic: BTreeMap<Module, BTreeSet<Module>> = [
        (m("x::a"), [m("y::b")].into()),
        (m("x::c"), [m("x")].into()),
    ]
    .into_iter()
    .collect();
    assert!(cycles(&acyclic).is_empty());
}
