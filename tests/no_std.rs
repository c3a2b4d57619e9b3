//! llada-core builds as a dependency of a `#![no_std]` static library with its own panic
//! handler (tests/no-std-app): no std, no alloc, no unwinding.

use std::path::Path;
use std::process::Command;

#[test]
fn llada_core_builds_without_std() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(root.join("tests/no-std-app/Cargo.toml"))
        .arg("--target-dir")
        .arg(root.join("target/no-std-app"))
        .env_remove("RUSTFLAGS")
        .output()?;
    assert!(
        output.status.success(),
        "the no_std build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lib = root.join("target/no-std-app/debug/libllada_no_std_app.a");
    assert!(lib.exists(), "{} missing", lib.display());
    Ok(())
}
