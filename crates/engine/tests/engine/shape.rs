//! The engine's shape, kept by tests: its modules are listed top-down in `lib.rs` in the order a
//! call meets them, each uses only modules listed after it (no cycles, no arrows back up), and no
//! function on the call path is longer than a screen.

use std::path::{Path, PathBuf};

/// The longest function allowed, in lines (signature and closing brace included).
const MAX_FUNCTION_LINES: usize = 80;

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules, in the order `lib.rs` declares them.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(source().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line
                .strip_prefix("pub mod ")
                .or(line.strip_prefix("mod "))?;
            let name = rest.split(';').next()?;
            (!name.contains(' ') && !name.contains('{')).then(|| name.to_owned())
        })
        .collect()
}

/// Every source file of a top-level module: `name.rs`, or `name/` with everything below it.
fn files_of(module: &str) -> Vec<PathBuf> {
    let file = source().join(format!("{module}.rs"));
    if file.exists() {
        return vec![file];
    }
    let mut files = Vec::new();
    let mut dirs = vec![source().join(module)];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The first path segment of every `crate::` path in `code` (comments skipped), `crate::{a, b}`
/// groups included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                found.extend(
                    inner
                        .split(',')
                        .map(|item| item.trim().split("::").next().unwrap_or_default())
                        .filter(|item| !item.is_empty())
                        .map(str::to_owned),
                );
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn each_module_uses_only_modules_listed_after_it_in_lib_rs() {
    let modules = modules();
    assert!(modules.len() >= 10, "lib.rs lists the modules: {modules:?}");
    let mut wrong = Vec::new();
    for (position, module) in modules.iter().enumerate() {
        for file in files_of(module) {
            let code = std::fs::read_to_string(&file).unwrap();
            for used in crate_paths(&code) {
                let name = file.strip_prefix(source()).unwrap().display();
                match modules.iter().position(|m| *m == used) {
                    Some(at) if at >= position => {}
                    Some(_) => wrong.push(format!("{name} uses `{used}`, listed above `{module}`")),
                    None => wrong.push(format!(
                        "{name} uses `crate::{used}`: import it from the module that defines it"
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the tree:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_sees_plain_paths_groups_and_skips_comments() {
    let code = "use crate::call::{Call, Target};\nuse crate::{deadlines, sse::Scanner};\n\
                let x = crate::vocabulary::Phase::Done; // crate::ignored\n";
    assert_eq!(
        crate_paths(code),
        ["call", "deadlines", "sse", "vocabulary"]
    );
}

/// Every function in `code` outside its tests, as (first line number, name, length in lines).
fn functions(code: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with("#[cfg(test)]"))
        .unwrap_or(lines.len());
    let mut found = Vec::new();
    for (i, line) in lines[..end].iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let before_ok = words[..at]
            .iter()
            .all(|w| w.starts_with("pub") || matches!(*w, "async" | "const" | "unsafe"));
        if !before_ok || at + 1 >= words.len() {
            continue;
        }
        let name: String = words[at + 1]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (a trait's) ends in `;` before any `{`; a one-line
        // function (`fn f() {}`) in `}`.
        let signature_end = lines[i..end]
            .iter()
            .map(|l| l.trim_end())
            .find(|l| l.ends_with('{') || l.ends_with(';') || l.ends_with('}'));
        if !signature_end.is_some_and(|l| l.ends_with('{')) {
            continue;
        }
        let close = format!("{}}}", " ".repeat(indent));
        let Some(length) = lines[i..end].iter().position(|l| *l == close) else {
            continue;
        };
        found.push((i + 1, name, length + 1));
    }
    found
}

#[test]
fn no_function_on_the_call_path_is_longer_than_a_screen() {
    let mut long = Vec::new();
    // The vocabulary is tables of words (a diagnosis per code), not the call path.
    for module in modules().iter().filter(|m| *m != "vocabulary") {
        for file in files_of(module) {
            if file.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let code = std::fs::read_to_string(&file).unwrap();
            for (line, name, length) in functions(&code) {
                if length > MAX_FUNCTION_LINES {
                    let file = file.strip_prefix(source()).unwrap().display();
                    long.push(format!("{file}:{line} fn {name}: {length} lines"));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions longer than {MAX_FUNCTION_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn function_lengths_are_measured_from_signature_to_closing_brace() {
    let code = "fn short() {\n    x();\n}\n\nimpl A {\n    pub async fn method(&self) {\n        y();\n        z();\n    }\n}\n";
    assert_eq!(
        functions(code),
        [(1, "short".to_owned(), 3), (6, "method".to_owned(), 4)]
    );
}
