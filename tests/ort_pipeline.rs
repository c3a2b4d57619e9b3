//! The pipeline on ONNX Runtime: the model's files are read once (the session needs only the
//! ONNX file), and each pipeline gets one session, the one opened at load time going to the
//! first. Its own test binary: it counts the sessions of this process.

use llada::{BackendChoice, Model, ModelFiles, OrtOptions, Pipeline};
use llada_test_support::{bundled_model, eval_set, held_out_answered, ort_library};

#[test]
fn one_session_per_pipeline_and_the_files_are_read_once() {
    let choice = BackendChoice::Ort(OrtOptions::default().with_library(Some(ort_library())));
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.onnx",
    ] {
        std::fs::copy(bundled_model().join(file), dir.path().join(file)).unwrap();
    }
    let files = ModelFiles::open(dir.path(), &choice).unwrap();
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(dir.path().join(file)).unwrap();
    }

    let before = llada::ort::sessions_created();
    let model = Model::from_files(files, &choice).unwrap();
    assert_eq!(
        llada::ort::sessions_created() - before,
        1,
        "loading opens one session, to fail early"
    );
    let mut first = Pipeline::new(model.clone()).unwrap();
    assert_eq!(
        llada::ort::sessions_created() - before,
        1,
        "the first pipeline takes the session opened at load time"
    );
    let mut second = Pipeline::new(model).unwrap();
    assert_eq!(llada::ort::sessions_created() - before, 2);
    assert_eq!(first.backend_name(), "ort");

    // Both sessions answer, with the model's maximum length from config.json read once.
    let (item, expected) = held_out_answered();
    let params = eval_set().params(first.default_params());
    for pipeline in [&mut first, &mut second] {
        let out = pipeline.generate(&item.prompt, &params).unwrap();
        assert_eq!(out.output_ids, expected);
        assert_eq!(pipeline.max_sequence_length(), 256);
    }
}
