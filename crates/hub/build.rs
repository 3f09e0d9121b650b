//! Sets `MT_BUILD_COMMIT` for `mt_stream_build_info`: the variable of the same name when the
//! build sets it (an image build without `.git`), else the checkout's commit, else `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=MT_BUILD_COMMIT");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for watched in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        let path = format!("{root}/{watched}");
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("MT_BUILD_COMMIT").ok().filter(|c| !c.trim().is_empty()).or_else(|| {
        let output = Command::new("git").args(["-C", root, "rev-parse", "--short=12", "HEAD"]).output().ok()?;
        let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
        (output.status.success() && !commit.is_empty()).then_some(commit)
    });
    println!("cargo:rustc-env=MT_BUILD_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
