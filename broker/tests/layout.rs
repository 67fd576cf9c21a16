//! The layout rules of `docs/ARCHITECTURE.md`, checked: the broker library depends on
//! no client, CLI or benchmark crate; its top-level modules import each other without
//! cycles; no source file grows past about 600 lines of non-test code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Crates that belong to the `tern` binary, never to the broker library.
const FORBIDDEN_DEPENDENCIES: [&str; 5] = [
    "tern-client",
    "anyhow",
    "indicatif",
    "hdrhistogram",
    "async-nats",
];

/// The yardstick of the layout issue, with a little slack.
const MAX_NON_TEST_LINES: usize = 650;

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The file's code before its test module.
fn non_test_code(path: &Path) -> String {
    let text = fs::read_to_string(path).expect("readable source");
    match text.find("#[cfg(test)]") {
        Some(index) => text[..index].to_owned(),
        None => text,
    }
}

#[test]
fn the_broker_library_depends_on_no_client_cli_or_bench_crate() {
    let manifest = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .expect("manifest");
    for line in manifest.lines() {
        let name = line.split(['=', '.', ' ']).next().unwrap_or_default();
        assert!(
            !FORBIDDEN_DEPENDENCIES.contains(&name),
            "broker/Cargo.toml names `{name}`"
        );
    }
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let root = source_dir();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let module_of = |path: &Path| -> String {
        let relative = path.strip_prefix(&root).expect("under src");
        let first = relative.components().next().expect("a component");
        first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned()
    };
    let modules: BTreeSet<String> = files
        .iter()
        .map(|path| module_of(path))
        .filter(|module| module != "lib")
        .collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let module = module_of(path);
        if module == "lib" {
            continue;
        }
        let code = non_test_code(path);
        let uses = imports.entry(module.clone()).or_default();
        // `use crate::a::...`, `use crate::{a, b::c}` and paths in code; doc lines
        // are skipped (a link is not an import).
        for line in code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
        {
            for (index, _) in line.match_indices("crate::") {
                let rest = &line[index + "crate::".len()..];
                let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                    group
                        .split('}')
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(|item| item.trim().split("::").next().unwrap_or_default())
                        .collect()
                } else {
                    vec![rest
                        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or_default()]
                };
                for name in names {
                    if modules.contains(name) && name != module {
                        uses.insert(name.to_owned());
                    }
                }
            }
        }
    }
    fn visit(
        module: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(position) = path.iter().position(|seen| seen == module) {
            panic!(
                "import cycle: {} -> {module}",
                path[position..].join(" -> ")
            );
        }
        if done.contains(module) {
            return;
        }
        path.push(module.to_owned());
        for next in imports.get(module).into_iter().flatten() {
            visit(next, imports, path, done);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    for module in &modules {
        visit(module, &imports, &mut Vec::new(), &mut done);
    }
}

#[test]
fn no_source_file_holds_more_than_about_600_lines_of_non_test_code() {
    let mut files = Vec::new();
    rust_files(&source_dir(), &mut files);
    for path in files {
        let lines = non_test_code(&path).lines().count();
        assert!(
            lines <= MAX_NON_TEST_LINES,
            "{} has {lines} lines of non-test code",
            path.display()
        );
    }
}
