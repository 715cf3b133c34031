//! Puts the git commit into the version string: `STEMBATCH_VERSION` is "0.1.0 (abc1234)"
//! when git and the repository are at hand, else the package version alone ("0.1.0"),
//! silently: a crate built from a tarball or by `cargo install --git` without git still
//! builds.

use std::path::Path;
use std::process::Command;

fn main() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    println!("cargo:rerun-if-changed=build.rs");
    let commit = commit(Path::new(&root));
    let full = match &commit {
        Some(commit) => format!("{version} ({commit})"),
        None => version,
    };
    println!("cargo:rustc-env=STEMBATCH_VERSION={full}");
}

/// The short commit of HEAD, when `root` is a git checkout and git runs. Asks cargo to
/// build again when HEAD moves.
fn commit(root: &Path) -> Option<String> {
    // `.git` is a folder in a clone and a file in a worktree.
    if !root.join(".git").exists() {
        return None;
    }
    let commit = git(root, &["rev-parse", "--short", "HEAD"])?;
    // Rebuild when HEAD changes: the HEAD file itself (a checkout of another branch),
    // the branch it points to (a commit), and packed-refs (where a branch may live).
    let mut watched = vec![git(root, &["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(root, &["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(root, &["rev-parse", "--git-path", &branch]));
    }
    watched.extend(git(root, &["rev-parse", "--git-path", "packed-refs"]));
    for path in watched {
        let path = root.join(path);
        // A path that does not exist would make cargo run this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

/// git's trimmed output, when it ran and succeeded.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
