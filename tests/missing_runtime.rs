//! Without a loadable ONNX Runtime, loading a model for the ORT backend is a backend error
//! (not a model error) whose report names every path tried. Its own test binary: a process
//! loads the runtime at most once, and this one must never load it.

use llada::core::ErrorKind;
use llada::{BackendChoice, Error, Model, OrtOptions};
use llada_test_support::bundled_model;

#[test]
fn a_missing_runtime_is_a_backend_error_naming_the_paths_tried() {
    // SAFETY: this binary's only test; no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("ORT_DYLIB_PATH", "/no/such/dir/libonnxruntime.so.1.31.1") };
    let missing = std::path::PathBuf::from("/also/missing/libonnxruntime.so");
    let choice = BackendChoice::Ort(OrtOptions::default().with_library(Some(missing)));
    let err = Model::load(bundled_model(), &choice).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    assert!(
        matches!(&err, Error::Backend(b) if b.backend() == "ort"),
        "{err}"
    );
    let report = llada::report(&err);
    for path in [
        "/also/missing/libonnxruntime.so",
        "/no/such/dir/libonnxruntime.so.1.31.1",
    ] {
        assert!(report.contains(path), "{report}");
    }
    assert!(report.contains("pip install onnxruntime"), "{report}");
    assert_eq!(llada::ort::loaded_library(), None);
}
