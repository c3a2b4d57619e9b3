//! Replays, on stable, what the fuzz targets have seen: their seeds, the seed corpora
//! committed under tests/fuzz/corpus/<target>/, and every finding kept under
//! tests/fuzz/regressions/<target>/ (inputs that once crashed, hung or exhausted memory).
//! Run `LLADA_WRITE_SEEDS=1 cargo test -p llada-fuzz-targets` to rewrite the seed corpora.

use std::path::{Path, PathBuf};

use llada_fuzz_targets::{TARGETS, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn target(name: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|t| t.0 == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn seed_corpora_are_the_seeds() {
    let write = std::env::var_os("LLADA_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let path = fuzz_dir().join("corpus").join(target).join(name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (LLADA_WRITE_SEEDS=1 writes it)", path.display()));
        assert!(committed == bytes, "{} is stale", path.display());
    }
}

#[test]
fn every_corpus_file_and_finding_runs_clean() {
    let mut ran = 0;
    for (name, run) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in files(&fuzz_dir().join(kind).join(name)) {
                eprintln!("{name}: {}", file.display());
                run(&std::fs::read(&file).unwrap());
                ran += 1;
            }
        }
    }
    assert!(ran >= seeds().len(), "only {ran} inputs found");
}

#[test]
fn the_seeds_reach_past_the_parsers() {
    // The GGUF seed is a whole model: it loads, and its tokenizer and template work.
    let (_, _, gguf) = seeds()
        .into_iter()
        .find(|s| s.1 == "tiny-f16-q8_0.gguf")
        .unwrap();
    let dir = tempfile_dir();
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, &gguf).unwrap();
    let files = llada::ModelFiles::open(&path, &llada::BackendChoice::Ndarray).unwrap();
    assert_eq!(files.tokenizer().encode("ab a").unwrap(), [3, 2, 0]);
    llada_ndarray::Model::from_gguf(&path).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    for (target_name, _, bytes) in seeds() {
        target(target_name)(&bytes);
    }
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("llada-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs one input: `LLADA_FUZZ_TARGET=sampler LLADA_FUZZ_INPUT=path cargo test -p
/// llada-fuzz-targets -- --ignored one_input --nocapture` (for triage).
#[test]
#[ignore = "triage of one input, named by environment variables"]
fn one_input() {
    let name = std::env::var("LLADA_FUZZ_TARGET").expect("LLADA_FUZZ_TARGET");
    let path = std::env::var("LLADA_FUZZ_INPUT").expect("LLADA_FUZZ_INPUT");
    target(&name)(&std::fs::read(path).unwrap());
}
