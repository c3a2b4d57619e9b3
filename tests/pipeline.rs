//! Text in, text out on the bundled model: tokenisation, generation, batches, streaming,
//! cancellation, multi-turn chat and bad input.

use std::ops::ControlFlow;

use llada::core::{ErrorKind, GenerateParams};
use llada::{BackendChoice, Conversation, Error, Model, ModelFiles, Pipeline, WeightSource};
use llada_test_support::{bundled_model, eval_set, held_out_answered, reference_outputs};

fn pipeline() -> Pipeline {
    Pipeline::open(bundled_model(), &BackendChoice::Ndarray).unwrap()
}

fn eval_params(pipeline: &Pipeline) -> GenerateParams {
    eval_set().params(pipeline.default_params())
}

#[test]
fn tokenisation_round_trips_every_eval_prompt_to_its_ids() {
    let pipeline = pipeline();
    let eval = eval_set();
    for item in &eval.items {
        assert_eq!(
            pipeline.model().chat_prompt_ids(&item.prompt).unwrap(),
            item.prompt_ids,
            "{:?}",
            item.prompt
        );
        assert_eq!(
            pipeline.model().tokenizer().encode(&item.answer).unwrap(),
            item.answer_ids,
            "{:?}",
            item.answer
        );
        assert_eq!(
            pipeline
                .model()
                .tokenizer()
                .decode(&item.answer_ids, true)
                .unwrap(),
            item.answer
        );
    }
}

#[test]
fn special_ids_come_from_the_model_files() {
    let pipeline = pipeline();
    let special = pipeline.model().special_tokens();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundled_model().join("config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        u64::from(special.mask),
        config["mask_token_id"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(special.eos),
        config["eos_token_id"].as_u64().unwrap()
    );
    let tokenizer = pipeline.model().tokenizer();
    assert_eq!(Some(special.eot), tokenizer.token_to_id("<|eot_id|>"));
    assert_eq!(special.bos, tokenizer.token_to_id("<|startoftext|>"));
    assert_ne!(special.mask, llada::core::LLADA_8B_MASK_ID);
}

#[test]
fn generation_matches_the_pytorch_reference_and_answers_held_out_prompts() {
    let mut pipeline = pipeline();
    let params = eval_params(&pipeline);
    let eval = eval_set();
    let reference = reference_outputs();
    let mut correct = 0;
    for (item, expected) in eval.items.iter().zip(&reference).take(20) {
        let out = pipeline.generate(&item.prompt, &params).unwrap();
        assert_eq!(&out.output_ids, expected, "{:?}", item.prompt);
        assert_eq!(out.forward_passes, params.steps);
        if out.text == item.answer {
            correct += 1;
        }
    }
    assert!(correct >= 16, "{correct}/20 held-out prompts answered");
}

#[test]
fn a_left_padded_batch_gives_each_prompt_its_own_answer() {
    let mut pipeline = pipeline();
    let params = eval_params(&pipeline);
    let eval = eval_set();
    // Prompts of different lengths, so the batch needs left padding.
    let mut items: Vec<_> = eval.items.iter().take(40).cloned().collect();
    items.sort_by_key(|i| i.prompt_ids.len());
    let chosen = [
        items[0].clone(),
        items[items.len() / 2].clone(),
        items[items.len() - 1].clone(),
    ];
    assert!(chosen[0].prompt_ids.len() < chosen[2].prompt_ids.len());
    let prompts: Vec<Vec<u32>> = chosen.iter().map(|i| i.prompt_ids.clone()).collect();
    let batched = pipeline
        .generate_ids(&prompts, &params, |_| ControlFlow::Continue(()))
        .unwrap();
    for (item, out) in chosen.iter().zip(&batched) {
        let alone = pipeline
            .generate_ids(std::slice::from_ref(&item.prompt_ids), &params, |_| {
                ControlFlow::Continue(())
            })
            .unwrap()
            .remove(0);
        assert_eq!(out.answer_ids, alone.answer_ids, "{:?}", item.prompt);
    }
}

#[test]
fn streaming_shows_the_denoising_and_can_cancel() {
    let mut pipeline = pipeline();
    let params = eval_params(&pipeline);
    let item = &eval_set().items[0];
    let mut frames = Vec::new();
    let result = pipeline.generate_ids(std::slice::from_ref(&item.prompt_ids), &params, |p| {
        let (block, blocks) = p.block();
        frames.push((
            block,
            blocks,
            p.partial_text(0),
            p.block_positions(),
            p.committed(0).count(),
        ));
        ControlFlow::Continue(())
    });
    let out = result.unwrap().remove(0);
    assert_eq!(frames.len(), params.steps);
    // The first frame still shows masks; the placeholder disappears as tokens commit.
    let placeholders = |s: &str| s.matches(llada::MASK_PLACEHOLDER).count();
    assert_eq!(placeholders(&frames[0].2), params.gen_length - 1);
    assert_eq!(placeholders(&frames.last().unwrap().2), 0);
    assert!(
        frames
            .windows(2)
            .all(|w| placeholders(&w[1].2) < placeholders(&w[0].2))
    );
    assert_eq!(frames[0].3, 0..params.block_length);
    assert_eq!(frames.last().unwrap().0 + 1, frames.last().unwrap().1);
    assert!(frames.iter().all(|f| f.4 == 1));
    assert!(!out.text.is_empty());

    let mut steps = 0;
    let err = pipeline
        .generate_ids(std::slice::from_ref(&item.prompt_ids), &params, |_| {
            steps += 1;
            if steps == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled));
    assert_eq!(steps, 3);
}

#[test]
fn multi_turn_chat_keeps_the_history_like_the_reference_loop() {
    let mut pipeline = pipeline();
    let params = eval_params(&pipeline);
    let eval = eval_set();
    let special = pipeline.model().special_tokens();
    let mut conversation = Conversation::new();
    let first = pipeline
        .chat(&mut conversation, &eval.items[0].prompt, &params, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(first.prompt_ids, eval.items[0].prompt_ids);
    let history = conversation.history().to_vec();
    assert!(!history.contains(&special.eos), "EOS padding is dropped");
    assert!(history.starts_with(&first.prompt_ids));
    let second = pipeline
        .chat(&mut conversation, &eval.items[1].prompt, &params, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    // The second prompt is the history plus the new turn without its BOS.
    let turn = pipeline
        .model()
        .chat_prompt_ids(&eval.items[1].prompt)
        .unwrap();
    assert_eq!(second.prompt_ids, [history.as_slice(), &turn[1..]].concat());
    assert_eq!(conversation.turns(), 2);
}

#[test]
fn bad_input_names_what_is_wrong() {
    let err = Pipeline::open("/no/such/model", &BackendChoice::Ndarray).unwrap_err();
    assert!(
        matches!(&err, Error::MissingDirectory { path } if path.ends_with("model")),
        "{err}"
    );
    assert!(err.to_string().contains("/no/such/model"));

    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer_config.json", "model.safetensors"] {
        std::fs::copy(bundled_model().join(file), dir.path().join(file)).unwrap();
    }
    let err = Pipeline::open(dir.path(), &BackendChoice::Ndarray).unwrap_err();
    assert!(
        matches!(&err, Error::MissingFile { path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
    assert!(err.to_string().contains("tokenizer.json"));
    std::fs::copy(
        bundled_model().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = Pipeline::open(dir.path(), &BackendChoice::Ndarray).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // A truncated checkpoint: the backend's own error is kept as the source, with its kind.
    let weights = std::fs::read(bundled_model().join("model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    let err = Pipeline::open(dir.path(), &BackendChoice::Ndarray).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Model, "{err}");
    let Error::Backend(backend) = &err else {
        panic!("expected a backend error, got {err}")
    };
    assert_eq!(backend.backend(), "ndarray");
    assert!(
        matches!(
            backend.inner().downcast_ref::<llada::ndarray::LoadError>(),
            Some(llada::ndarray::LoadError::Safetensors { .. })
        ),
        "{backend:?}"
    );
    let report = llada::report(&err);
    assert!(
        report
            .starts_with("the ndarray backend could not load the model: invalid safetensors file"),
        "{report}"
    );
    assert!(
        !err.to_string().contains("safetensors"),
        "Display does not repeat the source: {err}"
    );

    let mut pipeline = pipeline();
    let max = pipeline.max_sequence_length();
    let long = "copy: pen ".repeat(max);
    let params = eval_params(&pipeline);
    match pipeline.generate(&long, &params).unwrap_err() {
        Error::PromptTooLong {
            prompt_len,
            gen_length,
            max: m,
        } => {
            assert!(prompt_len > max);
            assert_eq!((gen_length, m), (params.gen_length, max));
        }
        other => panic!("expected PromptTooLong, got {other}"),
    }
    let err = pipeline
        .generate("x", &params.with_block_length(5))
        .unwrap_err();
    assert!(
        matches!(err, Error::Params(llada::core::Error::BlockLength { .. })),
        "{err}"
    );
}

/// The model's files are each read once: after `ModelFiles` has them, the backend needs only
/// the weights, so deleting the other files before it loads changes nothing.
#[test]
fn a_model_is_read_once_whether_from_a_directory_or_from_bytes() {
    let (item, expected) = held_out_answered();
    let check = |files: ModelFiles| {
        let model = Model::from_files(files, &BackendChoice::Ndarray).unwrap();
        let mut pipeline = Pipeline::new(model).unwrap();
        let params = eval_params(&pipeline);
        let out = pipeline.generate(&item.prompt, &params).unwrap();
        assert_eq!(out.output_ids, expected);
        assert_eq!(out.text, item.answer);
    };

    let dir = tempfile::tempdir().unwrap();
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(bundled_model().join(file), dir.path().join(file)).unwrap();
    }
    let files = ModelFiles::open(dir.path(), &BackendChoice::Ndarray).unwrap();
    assert_eq!(
        files.weights(),
        &WeightSource::Safetensors(dir.path().join("model.safetensors"))
    );
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::remove_file(dir.path().join(file)).unwrap();
    }
    check(files);

    let read = |file: &str| std::fs::read(bundled_model().join(file)).unwrap();
    let files = ModelFiles::from_bytes(
        &read("config.json"),
        &read("tokenizer.json"),
        &read("tokenizer_config.json"),
        WeightSource::Safetensors(dir.path().join("model.safetensors")),
    )
    .unwrap();
    check(files);

    // Bytes that are not JSON name the file they stand for, with the parser's error as source.
    let err = ModelFiles::from_bytes(
        b"{not json",
        &read("tokenizer.json"),
        &read("tokenizer_config.json"),
        WeightSource::Safetensors(dir.path().join("model.safetensors")),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Json { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
    // Weights in a format the backend does not run are an error naming both.
    let files = ModelFiles::from_bytes(
        &read("config.json"),
        &read("tokenizer.json"),
        &read("tokenizer_config.json"),
        WeightSource::Onnx(bundled_model().join("model.onnx")),
    )
    .unwrap();
    let err = Model::from_files(files, &BackendChoice::Ndarray).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::WeightsFormat {
                backend: "ndarray",
                format: "onnx",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}
