//! What `docs/` shows must still be true.
//!
//! Every fenced `sh` block in `docs/*.md` is marked `sh runnable` and run
//! here, or says on its first line why it is not (`# not run by the docs
//! test: ...`). A runnable block runs under `bash -euo pipefail` as a
//! plugin team would type it: in a plugin project's directory (with its
//! `.venv`), in the project's environment (the plugin runtime's settings
//! for a fresh database and vhost, migrated by the framework), with
//! `celerity` on `PATH` and `TRACE_ID` naming one of the project's
//! schedules, in POLL. Every flag in the table of `celerity worker`'s flags
//! must be one `celerity worker --help` knows.

use std::path::{Path, PathBuf};
use std::process::Command;

use celerity_tests::plugin_project::Project;
use celerity_tests::{celerity_bin, python, temp_dir, unique, workspace_root};
use serde_json::json;

/// Why a block is not run, when it is not.
const NOT_RUN: &str = "# not run by the docs test: ";

/// A fenced `sh` block: where it is, whether it is marked runnable, its text.
struct Block {
    place: String,
    runnable: bool,
    text: String,
}

fn docs() -> Vec<PathBuf> {
    let dir = workspace_root().join("docs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "docs/ holds operating, semantics, internals and testing: {files:?}");
    files
}

/// An open fence: its line, and for an `sh` block whether it is runnable and its lines so far.
type Fence<'a> = (usize, Option<(bool, Vec<&'a str>)>);

/// The `sh` blocks of `file`; other languages are not commands.
fn sh_blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).expect("read a doc");
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut blocks = Vec::new();
    let mut open: Option<Fence> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                let sh = (words.next() == Some("sh")).then(|| (words.any(|w| w == "runnable"), Vec::new()));
                open = Some((i + 1, sh));
            }
            (Some((start, sh)), Some(_)) => {
                if let Some((runnable, lines)) = sh.take() {
                    blocks.push(Block { place: format!("docs/{name}:{start}"), runnable, text: lines.join("\n") });
                }
                open = None;
            }
            (Some((_, Some((_, lines)))), None) => lines.push(line),
            (Some((_, None)), None) | (None, None) => {}
        }
    }
    assert!(open.is_none(), "docs/{name}: a fence is never closed");
    blocks
}

#[test]
fn every_sh_block_in_docs_is_runnable_or_says_why_not() {
    let blocks: Vec<Block> = docs().iter().flat_map(|f| sh_blocks(f)).collect();
    let unmarked: Vec<&str> = blocks
        .iter()
        .filter(|b| !b.runnable && !b.text.lines().next().is_some_and(|l| l.starts_with(NOT_RUN)))
        .map(|b| b.place.as_str())
        .collect();
    assert!(unmarked.is_empty(), "sh blocks neither `sh runnable` nor saying `{NOT_RUN}why`: {unmarked:?}");
    assert!(blocks.iter().filter(|b| b.runnable).count() >= 3, "the docs' runnable blocks are gone");
}

#[test]
fn the_runnable_blocks_in_docs_run_in_a_plugin_projects_environment() {
    let python = python();
    let project = Project::new(&python);
    let trace_id = unique("docs").replace('-', "");
    project.produce(&[(&trace_id, "1.0.0", json!({"polls": 3, "interval": 1}), json!({}))]);
    // The project's directory as a team has it: its code, and its venv as `.venv`.
    let home = temp_dir();
    let venv = python.parent().and_then(Path::parent).expect("the venv's root").to_owned();
    std::os::unix::fs::symlink(&venv, home.join(".venv")).expect("link .venv");
    let bin = home.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(celerity_bin(), bin.join("celerity")).expect("link celerity");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    for block in docs().iter().flat_map(|f| sh_blocks(f)).filter(|b| b.runnable) {
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &block.text])
            .env_clear()
            .envs(project.env())
            .env("PATH", &path)
            .env("HOME", &home)
            .env("TRACE_ID", &trace_id)
            .current_dir(&home)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}\nstdout:\n{}\nstderr:\n{}",
            block.place,
            out.status,
            block.text,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_flag_in_the_docs_flag_table_is_one_the_worker_takes() {
    let help = Command::new(celerity_bin()).args(["worker", "--help"]).output().expect("celerity worker --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let doc = std::fs::read_to_string(workspace_root().join("docs/operating.md")).unwrap();
    let table: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| flag | default | meaning |"))
        .take_while(|l| l.starts_with('|'))
        .collect();
    let flags: Vec<&str> = table
        .iter()
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| cell.split(['`', ',', ' ']))
        .filter(|w| w.starts_with("--") && w[2..].starts_with(|c: char| c.is_ascii_lowercase()))
        .collect();
    assert!(flags.len() > 40, "the flag table is gone or cut short: {flags:?}");
    let unknown: Vec<&&str> = flags
        .iter()
        .filter(|flag| !help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).any(|w| w == **flag))
        .collect();
    assert!(unknown.is_empty(), "flags in docs/operating.md that `celerity worker --help` does not list: {unknown:?}");
}
