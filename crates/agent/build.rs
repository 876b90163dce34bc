//! Builds the pause program (`pause/pause.c`) as a static executable, which `images.rs` packs
//! into the sandbox image. Needs a C compiler and a static libc (Debian's gcc and libc6-dev).

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=pause/pause.c");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("pause");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&compiler)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg("pause/pause.c")
        .status()
        .map_err(|e| format!("running {compiler} to build the pause program: {e}"))?;
    if !status.success() {
        return Err("building pause/pause.c failed: a static C toolchain is needed (Debian: gcc, libc6-dev)".into());
    }
    Ok(())
}
