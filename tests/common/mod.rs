//! Helpers shared by the tests that run the `convnet` binary.

use std::path::Path;
use std::process::Command;

/// Run the binary with `args` in `dir`; returns (success, stdout, stderr).
pub fn convnet(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_convnet"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
