//! The binary explains itself; unknown flags fail with one clear line.

use std::process::Command;

fn celerity(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_celerity")).args(args).output().expect("run celerity")
}

#[test]
fn help_works() {
    let out = celerity(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Usage: celerity"), "{text}");
    let version = celerity(&["--version"]);
    assert!(String::from_utf8(version.stdout).unwrap().starts_with("celerity "));
}

#[test]
fn unknown_flags_fail() {
    let out = celerity(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.lines().next().unwrap().contains("unexpected argument '--no-such-flag'"), "{err}");
}
