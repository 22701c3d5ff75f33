//! The crate boundaries of docs/design.md, checked on every Cargo.toml of
//! the workspace: only crates/netlink speaks rtnetlink, only crates/client
//! has an HTTP client, and the CLI and the bench reach aggregators through
//! the client crate, never the agent's.

use std::collections::BTreeMap;

fn manifests() -> BTreeMap<String, toml::Table> {
    let root = preflight_tests::workspace();
    let mut out = BTreeMap::new();
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.push(root.join("tests"));
    for d in dirs {
        let text = std::fs::read_to_string(d.join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        let name = d.file_name().expect("name").to_string_lossy().into_owned();
        out.insert(name, text.parse().expect("Cargo.toml parses"));
    }
    assert!(out.len() >= 9, "found only {:?}", out.keys());
    out
}

/// (dependency name, its features) of every normal dependency.
fn deps(m: &toml::Table) -> Vec<(String, Vec<String>)> {
    let Some(t) = m.get("dependencies").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    t.iter()
        .map(|(k, v)| {
            let features = v
                .get("features")
                .and_then(toml::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (k.clone(), features)
        })
        .collect()
}

#[test]
fn crate_boundaries_hold() {
    for (krate, m) in manifests() {
        for (dep, features) in deps(&m) {
            if dep == "rtnetlink" || dep.starts_with("netlink-packet-route") {
                assert_eq!(krate, "netlink", "{krate} depends on {dep}");
            }
            let http_client = (dep == "hyper" && features.iter().any(|f| f == "client"))
                || (dep == "hyper-util" && features.iter().any(|f| f.starts_with("client")));
            assert!(
                !http_client || krate == "client",
                "{krate} has an HTTP client ({dep} {features:?}); use preflight-client"
            );
            if dep == "preflight-agent" {
                // The CLI and the agent's own binary run the agent daemon;
                // nothing else needs it.
                assert!(
                    krate == "cli" || krate == "agentd",
                    "{krate} depends on preflight-agent"
                );
            }
        }
    }
}

/// The CLI may run the agent, but it talks HTTP only through the client.
#[test]
fn the_cli_does_not_use_the_agent_for_http() {
    let src = preflight_tests::workspace().join("crates/cli/src");
    let mut files = vec![src.clone()];
    let mut checked = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)
                    .expect("dir")
                    .map(|e| e.expect("entry").path()),
            );
        } else if p.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&p).expect("read");
            checked += 1;
            for bad in [
                "preflight_agent::http",
                "preflight_agent::Client",
                "preflight_agent::BaseUrl",
                "preflight_agent::{",
            ] {
                assert!(!text.contains(bad), "{}: uses `{bad}`", p.display());
            }
        }
    }
    assert!(checked > 5, "read only {checked} files");
}

/// The table "Who may import whom" of docs/design.md: the preflight crates
/// each crate may depend on (normal dependencies).
#[test]
fn crates_use_only_the_layers_below_them() {
    let lower = ["model", "netlink", "ovsdb", "policy", "probe", "client"];
    let allowed = |krate: &str| -> Vec<&str> {
        match krate {
            "model" => vec![],
            "netlink" | "ovsdb" | "policy" | "probe" | "client" | "store" => vec!["model"],
            "aggregator" => vec!["model", "store"],
            "agent" => lower.to_vec(),
            "agentd" => vec!["model", "policy", "agent"],
            "cli" => [&lower[..], &["agent", "agentd", "aggregator"]].concat(),
            "bench" => vec![
                "model",
                "netlink",
                "policy",
                "client",
                "aggregator",
                "tests",
            ],
            other => panic!("{other}: not in docs/design.md's table; add it there and here"),
        }
    };
    for (krate, m) in manifests() {
        if krate == "tests" {
            continue;
        }
        for (dep, _) in deps(&m) {
            let Some(dep) = dep.strip_prefix("preflight-") else {
                continue;
            };
            assert!(
                allowed(&krate).contains(&dep),
                "{krate} depends on preflight-{dep}; docs/design.md allows {:?}",
                allowed(&krate)
            );
        }
    }
}

/// docs/design.md: inside `crates/aggregator` "no two modules import each
/// other". Checked on the module graph that the code's paths make: every
/// `crate::…` and `super::…` path outside comments, strings and test code
/// (`use` lines and paths written inline), resolved to the module it
/// names, a name that a module re-exports from one of its children
/// (`pub use render::Body`) to that child. A path from one module into
/// another is an edge between the top-level modules that hold them, or
/// between two children of the same module (`fleet/render` and
/// `fleet/ready`); a parent and its own children may use each other.
#[test]
fn aggregator_modules_do_not_import_each_other() {
    let src = preflight_tests::workspace().join("crates/aggregator/src");
    let graph = modgraph::ModuleGraph::read(&src);
    assert!(
        graph.files > 20 && graph.edges.len() > 20,
        "read only {} files and {} edges under {}",
        graph.files,
        graph.edges.len(),
        src.display()
    );
    let cycles = graph.cycles(&["", "fleet"]);
    assert!(
        cycles.is_empty(),
        "modules of crates/aggregator import each other (docs/design.md: no two modules \
         import each other; move what both need into a module below them):\n{}",
        cycles.join("\n")
    );
}

/// The check above finds what it is meant to find, on a crate made for it.
#[test]
fn the_module_cycle_check_sees_use_lines_inline_paths_and_re_exports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |p: &str, text: &str| {
        let p = dir.path().join(p);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n");
    write("a.rs", "use crate::{\n    b::X,\n    d::Y,\n};\n");
    write(
        "b.rs",
        "// crate::d in a comment\nfn f() { let s = \"crate::d\"; crate::a::g(); }\n",
    );
    write(
        "d.rs",
        "/// [`crate::a`] in a doc link\npub struct Y;\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n#[cfg(test)]\nmod more;\n",
    );
    write("d/more.rs", "use crate::c::Q;\n");
    write(
        "c/mod.rs",
        "mod x;\nmod y;\npub use x::Z;\nuse crate::d::Y;\n",
    );
    write("c/x.rs", "use super::super::a::Thing;\nuse super::y::W;\n");
    write("c/y.rs", "use super::{\n    Z, // from x\n};\n");
    let graph = modgraph::ModuleGraph::read(dir.path());
    assert_eq!(graph.cycles(&[""]).len(), 1, "{:#?}", graph.cycles(&[""]));
    let cycles = graph.cycles(&["", "c"]);
    assert_eq!(cycles.len(), 2, "{cycles:#?}");
    assert!(
        cycles[0].starts_with("cycle: a -> b -> a\n") && cycles[0].contains("b.rs:2: "),
        "{}",
        cycles[0]
    );
    assert!(
        cycles[1].starts_with("cycle: c::x -> c::y -> c::x\n") && cycles[1].contains("c/y.rs:1"),
        "{}",
        cycles[1]
    );
}

/// The module graph of one crate's source tree, from its paths.
mod modgraph {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};
    use std::path::{Path, PathBuf};

    /// A module: its path from the crate root (`["fleet", "render"]`).
    type Module = Vec<String>;

    pub struct ModuleGraph {
        /// Source files read (test modules left out).
        pub files: usize,
        /// (parent, from child, to child) -> where: `file:line: text`.
        pub edges: BTreeMap<(Module, String, String), Vec<String>>,
    }

    struct File {
        module: Module,
        rel: String,
        /// The text with comments, strings and test items blanked out.
        code: String,
        /// The text as written, for messages.
        lines: Vec<String>,
    }

    impl ModuleGraph {
        pub fn read(src: &Path) -> Self {
            let mut files = Vec::new();
            let mut test_modules: BTreeSet<Module> = BTreeSet::new();
            let mut todo = vec![src.to_owned()];
            while let Some(p) = todo.pop() {
                if p.is_dir() {
                    todo.extend(
                        std::fs::read_dir(&p)
                            .expect("dir")
                            .map(|e| e.expect("entry").path()),
                    );
                    continue;
                }
                if p.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).expect("read");
                let module = module_of(src, &p);
                let (code, tests) = strip_tests(&blank(&text));
                test_modules.extend(tests.into_iter().map(|t| {
                    let mut m = module.clone();
                    m.push(t);
                    m
                }));
                files.push(File {
                    module,
                    rel: rel(src, &p),
                    code,
                    lines: text.lines().map(str::to_owned).collect(),
                });
            }
            files.retain(|f| !test_modules.iter().any(|t| f.module.starts_with(t)));
            let modules: BTreeSet<Module> = files.iter().map(|f| f.module.clone()).collect();
            // Names each module re-exports from a child: (module, name) -> child.
            let mut reexports: BTreeMap<(Module, String), String> = BTreeMap::new();
            for f in &files {
                for (at, _) in starts(&f.code, "use ") {
                    for path in parse_tree(&f.code, at + 4) {
                        let mut path = path;
                        if path.first().is_some_and(|s| s == "self") {
                            path.remove(0);
                        }
                        let (Some(child), Some(name)) = (path.first(), path.last()) else {
                            continue;
                        };
                        let mut m = f.module.clone();
                        m.push(child.clone());
                        if path.len() > 1 && modules.contains(&m) {
                            reexports.insert((f.module.clone(), name.clone()), child.clone());
                        }
                    }
                }
            }
            let mut edges: BTreeMap<(Module, String, String), Vec<String>> = BTreeMap::new();
            for f in &files {
                for (at, base) in path_starts(&f.code, &f.module) {
                    let line = f.code[..at].matches('\n').count();
                    for path in parse_tree(&f.code, at) {
                        let Some(target) = resolve(&modules, &reexports, &base, &path) else {
                            continue;
                        };
                        let common = f
                            .module
                            .iter()
                            .zip(&target)
                            .take_while(|(a, b)| a == b)
                            .count();
                        if common == f.module.len() || common == target.len() {
                            continue; // itself, a parent or a child
                        }
                        let where_ = format!("{}:{}: {}", f.rel, line + 1, f.lines[line].trim());
                        let list = edges
                            .entry((
                                f.module[..common].to_vec(),
                                f.module[common].clone(),
                                target[common].clone(),
                            ))
                            .or_default();
                        if !list.contains(&where_) {
                            list.push(where_);
                        }
                    }
                }
            }
            Self {
                files: files.len(),
                edges,
            }
        }

        /// Each cycle among the children of the modules `parents` names
        /// (`""`: the crate's top-level modules, `"fleet"`: fleet's), one
        /// per strongly connected set, shortest: `cycle: a -> b -> a` and
        /// the lines that make each step.
        pub fn cycles(&self, parents: &[&str]) -> Vec<String> {
            let checked: Vec<Module> = parents
                .iter()
                .map(|p| {
                    p.split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .collect();
            let mut by_parent: BTreeMap<&Module, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
            for (p, a, b) in self.edges.keys().filter(|(p, _, _)| checked.contains(p)) {
                by_parent
                    .entry(p)
                    .or_default()
                    .entry(a)
                    .or_default()
                    .insert(b);
            }
            let mut out = Vec::new();
            for (parent, g) in by_parent {
                let reach = |from: &str| -> BTreeSet<&str> {
                    let mut seen = BTreeSet::new();
                    let mut todo = vec![from];
                    while let Some(n) = todo.pop() {
                        for &m in g.get(n).into_iter().flatten() {
                            if seen.insert(m) {
                                todo.push(m);
                            }
                        }
                    }
                    seen
                };
                let mut done: BTreeSet<&str> = BTreeSet::new();
                for &n in g.keys() {
                    if done.contains(n) || !reach(n).contains(n) {
                        continue;
                    }
                    // n's strongly connected set: what it reaches that reaches it.
                    let set: BTreeSet<&str> = reach(n)
                        .into_iter()
                        .filter(|m| reach(m).contains(n))
                        .collect();
                    done.extend(&set);
                    let cycle = shortest_cycle(&g, n);
                    let name = |m: &str| {
                        let mut p = parent.clone();
                        p.push(m.to_owned());
                        p.join("::")
                    };
                    let mut text = format!(
                        "cycle: {}",
                        cycle
                            .iter()
                            .map(|m| name(m))
                            .collect::<Vec<_>>()
                            .join(" -> ")
                    );
                    if set.len() > cycle.len() - 1 {
                        text += &format!(
                            " (one of the cycles among {})",
                            set.iter().map(|m| name(m)).collect::<Vec<_>>().join(", ")
                        );
                    }
                    for w in cycle.windows(2) {
                        text += &format!("\n  {} -> {}:", name(w[0]), name(w[1]));
                        let key = (parent.clone(), w[0].to_owned(), w[1].to_owned());
                        for at in &self.edges[&key] {
                            text += &format!("\n    {at}");
                        }
                    }
                    out.push(text);
                }
            }
            out
        }
    }

    /// `[from, …, from]`, found breadth-first.
    fn shortest_cycle<'a>(g: &BTreeMap<&'a str, BTreeSet<&'a str>>, from: &'a str) -> Vec<&'a str> {
        let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
        let mut todo = VecDeque::from([from]);
        while let Some(n) = todo.pop_front() {
            for &m in g.get(n).into_iter().flatten() {
                if m == from {
                    let mut path = vec![from, n];
                    let mut at = n;
                    while at != from {
                        at = prev[at];
                        path.push(at);
                    }
                    path.reverse();
                    return path;
                }
                if !prev.contains_key(m) {
                    prev.insert(m, n);
                    todo.push_back(m);
                }
            }
        }
        unreachable!("{from} is on a cycle")
    }

    fn rel(src: &Path, p: &Path) -> String {
        p.strip_prefix(src)
            .expect("under src")
            .to_string_lossy()
            .into_owned()
    }

    /// `fleet/render.rs` -> `fleet::render`, `fleet/mod.rs` -> `fleet`.
    fn module_of(src: &Path, p: &Path) -> Module {
        let rel: PathBuf = p.strip_prefix(src).expect("under src").with_extension("");
        let mut m: Module = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        if m.last()
            .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
        {
            m.pop();
        }
        m
    }

    /// The text with comments, string and character literals replaced by
    /// spaces, line breaks kept (so byte offsets give line numbers).
    fn blank(text: &str) -> String {
        let b = text.as_bytes();
        let mut out = b.to_vec();
        let clear = |out: &mut Vec<u8>, from: usize, to: usize| {
            for c in &mut out[from..to.min(b.len())] {
                if *c != b'\n' {
                    *c = b' ';
                }
            }
        };
        let mut i = 0;
        while i < b.len() {
            let rest = &b[i..];
            if rest.starts_with(b"//") {
                let end = rest
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |e| i + e);
                clear(&mut out, i, end);
                i = end;
            } else if rest.starts_with(b"/*") {
                let end = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                clear(&mut out, i, end);
                i = end;
            } else if rest[0] == b'"' || rest.starts_with(b"r#") || rest.starts_with(b"r\"") {
                let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
                if rest[0] == b'r' && ident_before {
                    i += 1;
                    continue;
                }
                let end = if rest[0] == b'r' {
                    let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
                    if rest.get(1 + hashes) != Some(&b'"') {
                        i += 1;
                        continue;
                    }
                    let close = format!("\"{}", "#".repeat(hashes));
                    text[i + 2 + hashes..]
                        .find(&close)
                        .map_or(b.len(), |e| i + 2 + hashes + e + close.len())
                } else {
                    let mut j = i + 1;
                    while j < b.len() && b[j] != b'"' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    j + 1
                };
                clear(&mut out, i, end);
                i = end;
            } else if rest[0] == b'\'' {
                // A character literal ('x', '\n', '\u{1F600}'), not a lifetime.
                let end = if rest.get(1) == Some(&b'\\') {
                    rest[2..]
                        .iter()
                        .position(|&c| c == b'\'')
                        .map(|e| i + 2 + e + 1)
                } else {
                    let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (rest.get(1 + ch) == Some(&b'\'')).then_some(i + 2 + ch)
                };
                match end {
                    Some(end) => {
                        clear(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            } else {
                i += 1;
            }
        }
        String::from_utf8(out).expect("only ASCII bytes were replaced, by spaces")
    }

    /// Blanks each `#[cfg(test)]` item and returns the names of the test
    /// modules declared with `mod NAME;` (in files of their own).
    fn strip_tests(code: &str) -> (String, Vec<String>) {
        let mut out = code.as_bytes().to_vec();
        let mut modules = Vec::new();
        for (at, _) in starts(code, "#[cfg(test)]") {
            let from = at + "#[cfg(test)]".len();
            let Some(stop) = code[from..].find([';', '{']).map(|e| from + e) else {
                continue;
            };
            let end = if code.as_bytes()[stop] == b';' {
                let item: Vec<&str> = code[from..stop].split_whitespace().collect();
                if let [.., "mod", name] = item[..] {
                    modules.push(name.to_owned());
                }
                stop + 1
            } else {
                let mut depth = 0usize;
                let mut j = stop;
                for (k, c) in code[stop..].bytes().enumerate() {
                    match c {
                        b'{' => depth += 1,
                        b'}' => depth -= 1,
                        _ => {}
                    }
                    j = stop + k + 1;
                    if depth == 0 {
                        break;
                    }
                }
                j
            };
            for c in &mut out[at..end] {
                if *c != b'\n' {
                    *c = b' ';
                }
            }
        }
        (
            String::from_utf8(out).expect("only ASCII bytes were replaced"),
            modules,
        )
    }

    /// Offsets of `word` where it starts a token.
    fn starts<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = (usize, ())> + 'a {
        code.match_indices(word).filter_map(move |(at, _)| {
            let before = code[..at].chars().next_back();
            let ok =
                before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':' || c == '$'));
            ok.then_some((at, ()))
        })
    }

    /// Where each `crate::…` / `super::…` path starts (after its prefix),
    /// and the module it is relative to.
    fn path_starts(code: &str, module: &[String]) -> Vec<(usize, Module)> {
        let mut out = Vec::new();
        for (at, _) in starts(code, "crate") {
            let rest = &code[at + "crate".len()..];
            let trimmed = rest.trim_start();
            if let Some(after) = trimmed.strip_prefix("::") {
                let skip = code.len() - after.len();
                out.push((skip, Vec::new()));
            }
        }
        for (at, _) in starts(code, "super") {
            let mut base = module.to_vec();
            let mut rest = &code[at..];
            while let Some(after) = rest
                .strip_prefix("super")
                .and_then(|a| a.trim_start().strip_prefix("::"))
            {
                base.pop();
                rest = after.trim_start();
            }
            if base.len() < module.len() {
                out.push((code.len() - rest.len(), base));
            }
        }
        out.sort();
        out
    }

    /// The paths of a use tree starting at `at` (`a::b`, `a::{b, c::d}`,
    /// `{a, b}`), each as its segments; stops at anything else.
    fn parse_tree(code: &str, at: usize) -> Vec<Vec<String>> {
        fn tree(s: &[u8], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
            let skip_ws = |i: &mut usize| {
                while *i < s.len() && s[*i].is_ascii_whitespace() {
                    *i += 1;
                }
            };
            let mut path = prefix.to_vec();
            loop {
                skip_ws(i);
                if s.get(*i) == Some(&b'{') {
                    *i += 1;
                    loop {
                        skip_ws(i);
                        if s.get(*i).is_none_or(|&c| c == b'}') {
                            *i += 1;
                            break;
                        }
                        tree(s, i, &path, out);
                        skip_ws(i);
                        match s.get(*i) {
                            Some(b',') => *i += 1,
                            Some(b'}') => {}
                            _ => return,
                        }
                    }
                    return;
                }
                let start = *i;
                while *i < s.len()
                    && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_' || s[*i] == b'*')
                {
                    *i += 1;
                }
                if *i == start {
                    break;
                }
                path.push(String::from_utf8_lossy(&s[start..*i]).into_owned());
                let save = *i;
                skip_ws(i);
                if s[*i..].starts_with(b"::") {
                    *i += 2;
                } else {
                    *i = save;
                    break;
                }
            }
            if path.len() > prefix.len() {
                out.push(path);
            }
        }
        let mut out = Vec::new();
        let mut i = at;
        tree(code.as_bytes(), &mut i, &[], &mut out);
        out
    }

    /// The module a path from `base` names: its longest prefix that is a
    /// module, then a child when the next name is re-exported from one.
    fn resolve(
        modules: &BTreeSet<Module>,
        reexports: &BTreeMap<(Module, String), String>,
        base: &[String],
        path: &[String],
    ) -> Option<Module> {
        let full: Vec<String> = base.iter().chain(path).cloned().collect();
        let n = (0..=full.len())
            .rev()
            .find(|&n| modules.contains(&full[..n].to_vec()))?;
        let mut m = full[..n].to_vec();
        if let Some(next) = full.get(n) {
            if let Some(child) = reexports.get(&(m.clone(), next.clone())) {
                m.push(child.clone());
            }
        }
        Some(m)
    }
}
