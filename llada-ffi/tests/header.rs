//! `include/llada.h` is exactly what the pinned cbindgen generates from this crate, and its
//! version macros are the crate's. Set `LLADA_BLESS_HEADER=1` to rewrite the committed header.

use std::path::Path;

fn generate() -> String {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn the_committed_header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/llada.h");
    let generated = generate();
    if std::env::var_os("LLADA_BLESS_HEADER").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/llada.h differs from what cbindgen generates; regenerate it with \
         LLADA_BLESS_HEADER=1 cargo test -p llada-ffi --test header"
    );
}

#[test]
fn the_version_macros_are_the_crate_version() {
    let header = generate();
    for (name, value) in [
        ("LLADA_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("LLADA_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("LLADA_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define {name} {value}");
        assert!(header.contains(&line), "the header lacks `{line}`");
    }
}
