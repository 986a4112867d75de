//! Architecture checks: no module of any crate takes part in an import cycle, and the crate
//! graph in ARCHITECTURE.md is the one `cargo metadata` reports.
//!
//! Module edges are read from the sources: every `crate::a::b` path (in `use` groups too) and
//! every `super::` path, resolved to the deepest module that exists. Edges into the crate
//! root are left out (it only declares modules and re-exports their items), and so is the
//! test module at the end of a file (`#[cfg(test)] mod ...`), which may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    // The directory cargo runs the test from (checkouts sharing one target dir share this
    // binary, so the path compiled in may be another checkout's).
    let dir = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    Path::new(&dir)
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`; `src/lib.rs` and `src/main.rs` → "".
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The file's code without comments and without its trailing test module.
fn code(text: &str) -> String {
    let cut = text
        .find("#[cfg(test)]\nmod ")
        .or_else(|| text.find("#[cfg(test)]\npub mod "))
        .unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|l| {
            // A comment starts at `//` after whitespace or at the line's start (not in `://`).
            let b = l.as_bytes();
            let mut end = l.len();
            for i in 0..b.len().saturating_sub(1) {
                if b[i] == b'/' && b[i + 1] == b'/' && (i == 0 || b[i - 1].is_ascii_whitespace()) {
                    end = i;
                    break;
                }
            }
            &l[..end]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that follows `prefix` (`crate::` or `super::`) in `code`, with `use` groups
/// (`crate::{a, b::{c, d}}`) expanded into their leading segments.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(pos) = code[from..].find(prefix) {
        let at = from + pos;
        from = at + prefix.len();
        let before = at.checked_sub(1).map(|i| bytes[i]);
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':') {
            continue;
        }
        expand(&code[from..], Vec::new(), &mut out);
    }
    out
}

/// Reads one path (or brace group) at the start of `rest`, appending full paths to `out`.
fn expand(rest: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0usize;
        let mut start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(&group[start..i], base.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&group[start..i], base.clone(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let mut path = base;
    let mut s = rest;
    loop {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        if end == 0 {
            break;
        }
        path.push(s[..end].to_string());
        s = &s[end..];
        if let Some(next) = s.strip_prefix("::") {
            if next.trim_start().starts_with('{') {
                expand(next, path, out);
                return;
            }
            s = next;
        } else {
            break;
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// The deepest module of `modules` that `path` (from the crate root) names.
fn resolve(path: &[String], modules: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| modules.contains(m))
}

/// Module → modules it uses, for the crate whose sources are under `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for f in &files {
        let m = module_of(src, f);
        if m.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("read source");
        let code = code(&text);
        let mut uses = BTreeSet::new();
        for p in paths_after(&code, "crate::") {
            if let Some(t) = resolve(&p, &modules) {
                uses.insert(t);
            }
        }
        let parent: Vec<String> = {
            let mut segs: Vec<String> = m.split("::").map(str::to_string).collect();
            segs.pop();
            segs
        };
        for p in paths_after(&code, "super::") {
            let full: Vec<String> = parent.iter().cloned().chain(p).collect();
            if let Some(t) = resolve(&full, &modules) {
                uses.insert(t);
            }
        }
        uses.remove(&m);
        uses.remove("");
        graph.insert(m, uses);
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        t.on.insert(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !g.contains_key(w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn no_module_cycle_in_any_crate() {
    let mut found = Vec::new();
    for dir in crate_dirs() {
        let graph = module_graph(&dir.join("src"));
        for c in cycles(&graph) {
            found.push(format!("{}: {}", dir.display(), c.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "module cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_finds_cycles_and_use_groups() {
    let src = "use crate::{a, b::{c, d::E}};\nfn f() { super::x::y(); crate::z::W::new(); }";
    let mut got: Vec<String> = paths_after(src, "crate::")
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    got.sort();
    assert_eq!(got, ["a", "b::c", "b::d::E", "z::W::new"]);
    let mods: BTreeSet<String> = ["a", "b", "b::d"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        resolve(&["b".into(), "d".into(), "E".into()], &mods).as_deref(),
        Some("b::d")
    );
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.insert("a".into(), ["b".to_string()].into());
    g.insert("b".into(), ["c".to_string()].into());
    g.insert("c".into(), ["a".to_string()].into());
    g.insert("d".into(), ["a".to_string()].into());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    g.insert("c".into(), BTreeSet::new());
    assert!(cycles(&g).is_empty());
    assert_eq!(
        code("let u = \"http://x\"; // crate::a\n#[cfg(test)]\nmod tests {}"),
        "let u = \"http://x\"; "
    );
}

/// `cascade-x -> cascade-y, cascade-z` lines of the block under the graph marker.
fn documented_graph() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).expect("doc");
    let marker =
        "<!-- crate graph: checked against cargo metadata by crates/arch/tests/layers.rs -->";
    let at = doc
        .find(marker)
        .expect("ARCHITECTURE.md has the crate graph marker");
    let block = &doc[at + marker.len()..];
    let start = block.find("```").expect("a fenced block") + 3;
    let body = &block[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let body = &body[..body.find("```").expect("block end")];
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (name, deps) = l.split_once("->").expect("`name -> deps`");
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "(none)")
                .map(str::to_string)
                .collect();
            (name.trim().to_string(), deps)
        })
        .collect()
}

fn cargo_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut g = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_string();
        let deps = p["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            // Normal dependencies: what the crate's code is built on (not tests' helpers).
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("cascade-"))
            .map(str::to_string)
            .collect();
        g.insert(name, deps);
    }
    g
}

#[test]
fn architecture_md_crate_graph_matches_cargo() {
    let doc = documented_graph();
    let cargo = cargo_graph();
    let mut diff = Vec::new();
    for name in doc.keys().chain(cargo.keys()).collect::<BTreeSet<_>>() {
        let (d, c) = (doc.get(name), cargo.get(name));
        if d != c {
            diff.push(format!("{name}: ARCHITECTURE.md {d:?}, Cargo.toml {c:?}"));
        }
    }
    assert!(diff.is_empty(), "crate graph differs:\n{}", diff.join("\n"));
}
