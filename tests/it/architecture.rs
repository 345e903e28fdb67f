//! The module graph stays a graph without circles.
//!
//! Within each crate, a top-level module that names another (`crate::x`
//! in a `use` or a path) depends on it. Two modules that depend on each
//! other, directly or around a longer loop, can only be understood
//! together; ARCHITECTURE.md promises none, and this test keeps it so.
//! Test modules (`mod tests`, `tests.rs`) are left out: they may reach
//! anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of the crate whose sources are in `src`, each
/// with the top-level modules its code names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let tops: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_stem()?.to_str()?.to_string();
            (p.is_dir() || p.extension().is_some_and(|x| x == "rs")).then_some(name)
        })
        .filter(|n| n != "lib" && n != "main")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_str().unwrap().trim_end_matches(".rs").to_string();
        let is_test = rel.components().any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs");
        if !tops.contains(&top) || is_test {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for named in named_modules(&code_of(&text)) {
            if named != top && tops.contains(&named) {
                graph.entry(top.clone()).or_default().insert(named);
            }
        }
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The text before the file's unit tests, without line comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n")
}

/// `x` of every `crate::x` and `crate::{x, y::z}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            out.extend(group.split(',').map(ident).filter(|s| !s.is_empty()));
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

/// The modules on a circle of `graph`, one circle each (Tarjan's strongly
/// connected components of more than one module).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flatten() {
                if !self.index.contains_key(w.as_str()) {
                    self.visit(w);
                    let lw = self.low[w.as_str()];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w.as_str()) {
                    let iw = self.index[w.as_str()];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let at = self.stack.iter().rposition(|x| *x == v).unwrap();
                let component: Vec<String> = self.stack.drain(at..).map(String::from).collect();
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), found: Vec::new() };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn no_crate_has_modules_that_depend_on_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![root.join("src")];
    for e in std::fs::read_dir(root).unwrap() {
        let src = e.unwrap().path().join("src");
        if src.is_dir() && !src.starts_with(root.join("fuzz")) && !src.starts_with(root.join("target")) {
            sources.push(src);
        }
    }
    let mut found = Vec::new();
    for src in &sources {
        let graph = module_graph(src);
        for circle in circles(&graph) {
            let edges: Vec<String> = circle
                .iter()
                .flat_map(|a| graph[a].iter().filter(|b| circle.contains(b)).map(move |b| format!("{a} → {b}")))
                .collect();
            found.push(format!("{}: {}", src.display(), edges.join(", ")));
        }
    }
    assert!(sources.len() > 5, "the crates' sources were not found under {}", root.display());
    assert!(found.is_empty(), "modules that depend on each other:\n{}", found.join("\n"));
}

#[test]
fn a_circle_is_found_and_test_code_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod c;").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\n// crate::c in a comment\n").unwrap();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("b/mod.rs"), "mod inner;").unwrap();
    std::fs::write(src.join("b/inner.rs"), "use crate::{c::C, std_like};").unwrap();
    std::fs::write(src.join("c.rs"), "fn f() { crate::a::g() }\n#[cfg(test)]\nmod tests { use crate::b; }").unwrap();
    let graph = module_graph(src);
    assert_eq!(circles(&graph), vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]);
    // Without c → a there is no circle; c's tests naming b do not make one.
    std::fs::write(src.join("c.rs"), "fn f() {}\n#[cfg(test)]\nmod tests { use crate::a; }").unwrap();
    assert!(circles(&module_graph(src)).is_empty());
}
