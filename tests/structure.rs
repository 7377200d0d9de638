//! The structure of `src/`, checked by reading the source (no dependencies, no build
//! tricks: plain text, comments and literals blanked out first).
//!
//! - **No import cycle.** The module graph is built from `use crate::…`, `use super::…`,
//!   `use self::…` lines and from `crate::…`/`super::…` paths in code, each file being its
//!   module (`src/store/daily.rs` is `store::daily`). It is checked among the top-level
//!   modules (`api`, `store`, `source`, …: a reference from anywhere in `store` to anywhere
//!   in `aqi` is an edge `store → aqi`), and among the children of every module folder
//!   (`store::daily` vs `store::district`). A child using its parent's items (`super::Store`)
//!   and a parent re-exporting a child are not edges. Test code (`#[cfg(test)]`, `#[test]`)
//!   is left out: tests may reach anywhere.
//! - **The ingest stage is source-neutral.** Nothing under `src/ingest*` refers to
//!   `source::mqtt` (however imported) or names `rumqttc`: a TCP or NATS source must be
//!   able to feed it without MQTT types.
//! - **Functions stay short.** A non-test function longer than [`MAX_FN_LINES`] lines
//!   (from its `fn` line to its closing brace) needs a reason, written in the comments or
//!   doc right above it (attributes may sit between) and containing the words
//!   `long because`, e.g. `// Long because the match on every command is the dispatch
//!   table; splitting it hides the table.` Anything else is split.
//!
//! Each failure lists every offender, not only the first.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The longest a function may be without a `long because` comment.
const MAX_FN_LINES: usize = 80;

// ---------------------------------------------------------------------------------
// The checks.

#[test]
fn no_import_cycle_between_top_level_modules() {
    let cycles = cycles_in(&Crate::read(), &[]);
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn no_import_cycle_within_a_module_folder() {
    let krate = Crate::read();
    let mut cycles = Vec::new();
    for folder in krate.folders() {
        cycles.extend(cycles_in(&krate, &folder));
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn ingest_does_not_know_the_mqtt_source() {
    let offenders = mqtt_in_ingest(&Crate::read());
    assert!(
        offenders.is_empty(),
        "the ingest stage must not depend on the MQTT source or rumqttc:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn no_long_function_without_a_reason() {
    let offenders = long_functions(&Crate::read());
    assert!(
        offenders.is_empty(),
        "functions longer than {MAX_FN_LINES} lines without a `long because` comment:\n{}",
        offenders.join("\n")
    );
}

/// The cycles among the children of module `folder` (`[]`: the top-level modules), each
/// as `cycle: a -> b -> a` and one line per edge naming a file and path that make it.
fn cycles_in(krate: &Crate, folder: &[String]) -> Vec<String> {
    // child -> child -> an example (file, path) of the reference.
    let mut graph: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    for r in &krate.refs {
        let (Some(a), Some(b)) = (child_of(folder, &r.from), child_of(folder, &r.to)) else {
            continue;
        };
        if a != b {
            graph
                .entry(a)
                .or_default()
                .entry(b)
                .or_insert_with(|| (r.file.clone(), r.path.clone()));
        }
    }
    let name = |m: &str| {
        let mut p = folder.to_vec();
        p.push(m.to_owned());
        p.join("::")
    };
    let mut out = Vec::new();
    for scc in strongly_connected(&graph) {
        let cycle = a_cycle(&graph, &scc);
        let mut s = format!(
            "cycle: {}",
            cycle
                .iter()
                .map(|m| name(m))
                .collect::<Vec<_>>()
                .join(" -> ")
        );
        for w in cycle.windows(2) {
            let (file, path) = &graph[&w[0]][&w[1]];
            s.push_str(&format!(
                "\n  {} -> {}: {file} uses {path}",
                name(&w[0]),
                name(&w[1])
            ));
        }
        out.push(s);
    }
    out
}

/// The child of `folder` that module `m` is in (`m` strictly inside `folder`).
fn child_of(folder: &[String], m: &[String]) -> Option<String> {
    (m.len() > folder.len() && m.starts_with(folder)).then(|| m[folder.len()].clone())
}

fn mqtt_in_ingest(krate: &Crate) -> Vec<String> {
    let mut out = Vec::new();
    for r in &krate.refs {
        if r.from.first().map(String::as_str) == Some("ingest")
            && r.to.starts_with(&["source".to_owned(), "mqtt".to_owned()])
        {
            out.push(format!("{}: uses {}", r.file, r.path));
        }
    }
    for f in &krate.files {
        if f.module.first().map(String::as_str) != Some("ingest") {
            continue;
        }
        for (i, line) in f.code.lines().enumerate() {
            if has_word(line, "rumqttc") {
                out.push(format!("{}:{}: names rumqttc", f.path, i + 1));
            }
        }
    }
    out
}

fn long_functions(krate: &Crate) -> Vec<String> {
    let mut out = Vec::new();
    for f in &krate.files {
        let original: Vec<&str> = f.text.lines().collect();
        for func in functions(&f.code) {
            let len = func.last_line - func.first_line + 1;
            if len <= MAX_FN_LINES || has_reason(&original, func.first_line) {
                continue;
            }
            let mut path = f.module.clone();
            path.push(func.name.clone());
            out.push(format!(
                "{} ({len} lines) at {}:{}",
                path.join("::"),
                f.path,
                func.first_line + 1
            ));
        }
    }
    out
}

/// Whether the comments or doc right above line `at` (attributes may sit between) say
/// `long because`.
fn has_reason(lines: &[&str], at: usize) -> bool {
    lines[..at]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("//") || l.starts_with("#[") || l.starts_with("#!["))
        .any(|l| l.to_lowercase().contains("long because"))
}

// ---------------------------------------------------------------------------------
// Reading the crate.

/// One source file of the library.
#[derive(Clone)]
struct File {
    /// As written, e.g. `src/store/daily.rs`.
    path: String,
    /// Its module path, e.g. `["store", "daily"]`.
    module: Vec<String>,
    /// The original text.
    text: String,
    /// The text with comments, literals and test code blanked out (same lines).
    code: String,
}

/// A reference from one module to another.
#[derive(Clone)]
struct Ref {
    file: String,
    from: Vec<String>,
    to: Vec<String>,
    /// The path as written, for messages.
    path: String,
}

struct Crate {
    files: Vec<File>,
    refs: Vec<Ref>,
}

impl Crate {
    /// The library under `src/` (the binary, `src/main.rs`, is another crate: its
    /// `crate::` is not the library's; its function lengths are checked all the same).
    fn read() -> Crate {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths = Vec::new();
        rust_files(&root.join("src"), &mut paths);
        paths.sort();
        let files: Vec<File> = paths
            .iter()
            .filter_map(|p| {
                let rel = p
                    .strip_prefix(root)
                    .ok()?
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = fs::read_to_string(p).ok()?;
                let code = without_tests(&blank_comments_and_literals(&text));
                Some(File {
                    module: module_of(&rel),
                    path: rel,
                    text,
                    code,
                })
            })
            .collect();
        Crate::from_files(files)
    }

    fn from_files(files: Vec<File>) -> Crate {
        let modules: BTreeSet<Vec<String>> = files
            .iter()
            .filter(|f| f.path != "src/main.rs")
            .map(|f| f.module.clone())
            .collect();
        let mut refs = Vec::new();
        for f in files.iter().filter(|f| f.path != "src/main.rs") {
            for path in paths_in(&f.code) {
                let Some(abs) = resolve(&f.module, &path, &modules) else {
                    continue;
                };
                // The longest prefix that is a module.
                let Some(to) = (1..=abs.len())
                    .rev()
                    .map(|n| abs[..n].to_vec())
                    .find(|p| modules.contains(p))
                else {
                    continue;
                };
                refs.push(Ref {
                    file: f.path.clone(),
                    from: f.module.clone(),
                    to,
                    path: path.join("::"),
                });
            }
        }
        Crate { files, refs }
    }

    /// Every module that has child modules (the folders), not the root.
    fn folders(&self) -> BTreeSet<Vec<String>> {
        self.files
            .iter()
            .filter(|f| f.module.len() > 1)
            .flat_map(|f| (1..f.module.len()).map(|n| f.module[..n].to_vec()))
            .collect()
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("src/ is readable").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/store/daily.rs` → `store::daily`; `src/store/mod.rs` → `store`; `src/lib.rs`
/// and `src/main.rs` → the root.
fn module_of(rel: &str) -> Vec<String> {
    let inner = rel.trim_start_matches("src/").trim_end_matches(".rs");
    let mut parts: Vec<String> = inner.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] || parts == ["main"] {
        parts.clear();
    }
    parts
}

/// A path as written, made absolute from module `at`; `None` for other crates.
fn resolve(at: &[String], path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut base: Vec<String> = at.to_vec();
    let mut rest = path;
    match path.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &path[1..];
        }
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        // A path from a child module in scope (`use daily::DayRows` in `store`).
        first => {
            let mut child = at.to_vec();
            child.push(first.to_owned());
            if !modules.contains(&child) {
                return None;
            }
        }
    }
    base.extend(rest.iter().filter(|s| *s != "*" && *s != "self").cloned());
    Some(base)
}

/// Every path a file refers to: the expanded `use` trees, and `crate::…`, `super::…`,
/// `self::…` paths in code.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(at) = find_word(code, "use", i) {
        let end = code[at..].find(';').map_or(code.len(), |e| at + e);
        expand_use(code[at + 3..end].trim(), &mut Vec::new(), &mut out);
        i = end;
    }
    for head in ["crate", "super", "self"] {
        let mut i = 0;
        while let Some(at) = find_word(code, head, i) {
            let mut path = vec![head.to_owned()];
            let mut j = at + head.len();
            while code[j..].starts_with("::") {
                let start = j + 2;
                let mut k = start;
                while k < bytes.len() && (bytes[k].is_ascii_alphanumeric() || bytes[k] == b'_') {
                    k += 1;
                }
                if k == start {
                    break;
                }
                path.push(code[start..k].to_owned());
                j = k;
            }
            if path.len() > 1 {
                out.push(path);
            }
            i = j;
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d as e, self}}`) into paths.
fn expand_use(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim().trim_start_matches("::");
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let n = prefix.len();
        prefix.extend(head);
        for part in split_top_level(&tree[open + 1..close]) {
            expand_use(part, prefix, out);
        }
        prefix.truncate(n);
    } else {
        let tree = tree.split(" as ").next().unwrap_or(tree);
        let mut p = prefix.clone();
        p.extend(
            tree.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
        out.push(p);
    }
}

/// Splits `a, b::{c, d}, e` at the commas outside braces.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The next occurrence of `word` at or after `from`, as a whole word.
fn find_word(s: &str, word: &str, from: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = from;
    while let Some(off) = s.get(i..)?.find(word) {
        let at = i + off;
        let end = at + word.len();
        let before = at == 0 || !is_ident(b[at - 1]);
        let after = end >= b.len() || !is_ident(b[end]);
        if before && after {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

fn has_word(line: &str, word: &str) -> bool {
    find_word(line, word, 0).is_some()
}

/// The text with comments and the contents of string and char literals replaced by
/// spaces, line breaks kept (so line numbers stay right).
fn blank_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = i + 1;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            out.extend(&c[i..=j]);
            i = j + 1;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|h| c.get(i + h) == Some(&'#')) {
                    out.extend(&c[i..=i + hashes]);
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{7f}'); a lone ' is a lifetime.
            out.push('\'');
            i += 1;
            if c[i] == '\\' {
                blank(&mut out, c[i]);
                i += 1;
            }
            while i < c.len() && c[i] != '\'' {
                blank(&mut out, c[i]);
                i += 1;
            }
            out.push('\'');
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// `code` with the items under `#[cfg(test)]` or `#[test]` blanked out.
fn without_tests(code: &str) -> String {
    let mut c: Vec<char> = code.chars().collect();
    for attr in ["#[cfg(test)]", "#[test]"] {
        let pat: Vec<char> = attr.chars().collect();
        let mut i = 0;
        while i + pat.len() <= c.len() {
            if c[i..i + pat.len()] != pat[..] {
                i += 1;
                continue;
            }
            // The item: to its `;` or its matching closing brace.
            let mut j = i;
            while j < c.len() && c[j] != '{' && c[j] != ';' {
                j += 1;
            }
            if j < c.len() && c[j] == '{' {
                let mut depth = 0;
                while j < c.len() {
                    match c[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            let end = j.min(c.len() - 1);
            for ch in &mut c[i..=end] {
                if *ch != '\n' {
                    *ch = ' ';
                }
            }
            i = end + 1;
        }
    }
    c.into_iter().collect()
}

/// A function with a body, by line (0-based).
struct Func {
    name: String,
    first_line: usize,
    last_line: usize,
}

/// Every function with a body in blanked `code` (nested ones too).
fn functions(code: &str) -> Vec<Func> {
    let b = code.as_bytes();
    let line_of = |at: usize| code[..at].matches('\n').count();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = find_word(code, "fn", i) {
        i = at + 2;
        let rest = &code[i..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue; // `fn(` in a type
        }
        // The body: the first `{` before any `;` (a declaration has none).
        let Some(open) = rest.find(['{', ';']).map(|o| i + o) else {
            continue;
        };
        if b[open] == b';' {
            continue;
        }
        let mut depth = 0;
        let mut close = open;
        for (k, ch) in code[open..].bytes().enumerate() {
            match ch {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = open + k;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push(Func {
            name,
            first_line: line_of(at),
            last_line: line_of(close),
        });
    }
    out
}

/// Tarjan's strongly connected components with more than one module.
fn strongly_connected(
    graph: &BTreeMap<String, BTreeMap<String, (String, String)>>,
) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeMap<String, (String, String)>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flat_map(|e| e.keys()) {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest cycle through the first module of `scc`, closed (`a, b, a`).
fn a_cycle(
    graph: &BTreeMap<String, BTreeMap<String, (String, String)>>,
    scc: &[String],
) -> Vec<String> {
    let start = &scc[0];
    let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            if !scc.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start.clone()];
                let mut at = v;
                while at != start {
                    path.push(at.clone());
                    at = prev[at];
                }
                path.push(start.clone());
                path.reverse();
                return path;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    scc.to_vec()
}

// ---------------------------------------------------------------------------------
// The checks checked, on made-up sources.

fn fake(files: &[(&str, &str)]) -> Crate {
    Crate::from_files(
        files
            .iter()
            .map(|(path, text)| File {
                path: path.to_string(),
                module: module_of(path),
                text: text.to_string(),
                code: without_tests(&blank_comments_and_literals(text)),
            })
            .collect(),
    )
}

#[test]
fn a_cycle_is_found_and_named_however_it_is_imported() {
    let k = fake(&[
        ("src/lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("src/a.rs", "use crate::{b::{X, Y as Z}};"),
        ("src/b.rs", "fn f() { crate::c::g(); }"),
        (
            "src/c.rs",
            "// use crate::b;\npub fn g() -> crate::a::T { todo!() }",
        ),
    ]);
    let cycles = cycles_in(&k, &[]);
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("cycle: a -> b -> c -> a"),
        "{}",
        cycles[0]
    );
    assert!(
        cycles[0].contains("src/c.rs uses crate::a::T"),
        "{}",
        cycles[0]
    );
}

#[test]
fn siblings_in_a_folder_are_checked_and_parents_are_not_edges() {
    let k = fake(&[
        (
            "src/store/mod.rs",
            "mod daily; mod district; pub use daily::Rows; pub struct Store;",
        ),
        ("src/store/daily.rs", "use super::{district, Store};"),
        (
            "src/store/district.rs",
            "use super::daily::rows; use super::Store;",
        ),
        (
            "src/aqi.rs",
            "#[cfg(test)]\nmod tests { use crate::store::Store; }",
        ),
        ("src/model.rs", "use crate::aqi;"),
    ]);
    assert!(cycles_in(&k, &[]).is_empty(), "{:?}", cycles_in(&k, &[]));
    let c = cycles_in(&k, &["store".to_owned()]);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].starts_with("cycle: store::daily -> store::district -> store::daily"));
}

#[test]
fn ingest_reaching_mqtt_is_found_through_any_import() {
    let k = fake(&[
        ("src/source/mod.rs", "pub mod mqtt;"),
        ("src/source/mqtt.rs", ""),
        ("src/ingest.rs", "use crate::source::{mqtt::Acker, topic};\n// rumqttc is fine in a comment\nfn f(c: rumqttc::AsyncClient) {}"),
    ]);
    let o = mqtt_in_ingest(&k);
    assert_eq!(o.len(), 2, "{o:?}");
    assert!(o[0].contains("crate::source::mqtt::Acker"));
    assert!(o[1].contains("src/ingest.rs:3"));
}

#[test]
fn long_functions_need_a_reason_right_above() {
    let body = "    let x = \"}\";\n".repeat(MAX_FN_LINES);
    let src = format!(
        "fn long() {{\n{body}}}\n\n\
         // Long because it is a table.\n#[allow(dead_code)]\nfn excused() {{\n{body}}}\n\n\
         fn short() {{ let c = '{{'; }}\n\
         #[cfg(test)]\nmod tests {{ fn long_test() {{\n{body}}} }}\n"
    );
    let k = fake(&[("src/x.rs", &src)]);
    let o = long_functions(&k);
    assert_eq!(
        o,
        vec![format!(
            "x::long ({} lines) at src/x.rs:1",
            MAX_FN_LINES + 2
        )]
    );
}
