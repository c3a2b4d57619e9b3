//! Without a loadable runtime library the builder fails with an error that lists the paths it
//! tried and says how to get ONNX Runtime. (Its own test binary: a process loads the runtime at
//! most once, and this one must never load it.)

use std::path::Path;

use llada_ort::{OrtError, OrtPredictor};

#[test]
fn a_missing_or_broken_runtime_library_is_a_typed_error_listing_the_paths_tried() {
    // SAFETY: this binary has one test and no other threads reading the environment.
    unsafe { std::env::remove_var("ORT_DYLIB_PATH") };
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-llada/model.onnx");

    let err = OrtPredictor::builder(&model).build().unwrap_err();
    assert!(
        matches!(&err, OrtError::RuntimeNotFound { tried } if tried.is_empty()),
        "{err}"
    );
    assert!(err.to_string().contains("pip install onnxruntime"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libonnxruntime.so");
    let broken = dir.path().join("libbroken.so");
    std::fs::write(&broken, b"not a shared library").unwrap();
    // SAFETY: as above.
    unsafe { std::env::set_var("ORT_DYLIB_PATH", &broken) };
    let err = OrtPredictor::builder(&model)
        .library(&missing)
        .build()
        .unwrap_err();
    match &err {
        OrtError::RuntimeNotFound { tried } => {
            assert_eq!(tried.len(), 2, "{err}");
            assert_eq!(tried[0].0, missing);
            assert_eq!(tried[1].0, broken);
        }
        other => panic!("expected RuntimeNotFound, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("libonnxruntime.so") && message.contains("libbroken.so"),
        "{message}"
    );
    assert_eq!(llada_ort::loaded_library(), None);
}
