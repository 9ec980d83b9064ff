//! The migrations are embedded with include_str!: rebuild when one changes. The web UI
//! (`ui-graphql/`) is built here when its sources change (`npm ci` once, then `npm run build`:
//! typed operations generated from the schema, type-checked, bundled) and embedded in the
//! binary, so `cargo run -- serve` on a fresh clone serves it. Without Node.js, or with
//! `WALKOFF_SKIP_UI_BUILD` set, the last bundle built is embedded, or a page saying how to build
//! one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-env-changed=WALKOFF_SKIP_UI_BUILD");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let ui = manifest.join("../ui-graphql");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    watch_ui_sources(&ui);
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../schema/walkoff.graphql").display()
    );
    let dist = ui.join("dist");
    if std::env::var_os("WALKOFF_SKIP_UI_BUILD").is_none() {
        if let Err(why) = build_ui(&ui) {
            println!("cargo:warning=the web UI was not built ({why}); serving the last one built, if any");
        }
    }
    write_assets(&dist, &out.join("ui_assets.rs"));
}

/// Every source of the bundle, but not what the build writes (generated types, the bundle).
fn watch_ui_sources(ui: &Path) {
    for file in [
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "codegen.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", ui.join(file).display());
    }
    // Not `src` itself: cargo would scan it whole, generated types included, and build again
    // every time.
    for (path, _) in walk(&ui.join("src"), "gql") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Every directory and file under `dir` (not `dir` itself), leaving out directories named `skip`;
/// each with whether it is a directory.
fn walk(dir: &Path, skip: &str) -> Vec<(PathBuf, bool)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != skip) {
                    found.push((path.clone(), true));
                    pending.push(path);
                }
            } else {
                found.push((path, false));
            }
        }
    }
    found
}

fn npm(ui: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("npm")
        .args(args)
        .current_dir(ui)
        .status()
        .map_err(|e| format!("npm cannot run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("npm {} failed: {status}", args.join(" ")))
    }
}

fn build_ui(ui: &Path) -> Result<(), String> {
    // Installed when missing, and again when the lock file changed since (a pull that adds a
    // dependency would otherwise fail to build).
    let modified = |path: PathBuf| fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(ui.join("node_modules/.package-lock.json"));
    if installed.is_none() || modified(ui.join("package-lock.json")) > installed {
        npm(ui, &["ci", "--no-audit", "--no-fund", "--ignore-scripts"])?;
    }
    npm(ui, &["run", "build"])
}

/// `ui_assets.rs`: every file of the bundle as (path, bytes), or a page saying how to build it.
fn write_assets(dist: &Path, target: &Path) {
    let mut files: Vec<(String, PathBuf)> = walk(dist, "")
        .into_iter()
        .filter(|(_, is_dir)| !is_dir)
        .filter_map(|(path, _)| {
            let relative = path.strip_prefix(dist).ok()?;
            Some((relative.to_string_lossy().replace('\\', "/"), path.clone()))
        })
        .collect();
    files.sort();
    let mut code = String::from(
        "/// The web UI's files, by path under `/`.\npub static UI_ASSETS: &[(&str, &[u8])] = &[\n",
    );
    if files.iter().any(|(name, _)| name == "index.html") {
        for (name, path) in &files {
            code.push_str(&format!(
                "    ({name:?}, include_bytes!({:?})),\n",
                path.display().to_string()
            ));
        }
    } else {
        code.push_str(
            "    (\"index.html\", b\"<!doctype html><title>walkoff</title><p>The web UI was not built: install Node.js and npm, then build walkoff again (or run <code>npm ci && npm run build</code> in <code>ui-graphql/</code>). The API is at <a href=\\\"/graphql\\\">/graphql</a>.</p>\"),\n",
        );
    }
    code.push_str("];\n");
    std::fs::write(target, code).unwrap();
}
