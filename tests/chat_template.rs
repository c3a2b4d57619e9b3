//! The model's own chat template renders exactly as Hugging Face's `apply_chat_template` does,
//! for LLaDA-8B-Instruct's `tokenizer_config.json` and the bundled model's.

use llada::{ChatTemplate, Message};
use llada_test_support::fixture;

fn template(dir: &str) -> ChatTemplate {
    let text = std::fs::read_to_string(fixture(dir).join("tokenizer_config.json")).unwrap();
    ChatTemplate::from_tokenizer_config(&serde_json::from_str(&text).unwrap())
        .unwrap()
        .expect("the file has a chat_template")
}

const HEADER_USER: &str = "<|start_header_id|>user<|end_header_id|>\n\n";
const HEADER_ASSISTANT: &str = "<|start_header_id|>assistant<|end_header_id|>\n\n";

#[test]
fn llada_8b_instruct_one_turn() {
    let rendered = template("llada-8b-instruct")
        .render(&[Message::user("What is 2+2?")], true)
        .unwrap();
    assert_eq!(
        rendered,
        format!("<|startoftext|>{HEADER_USER}What is 2+2?<|eot_id|>{HEADER_ASSISTANT}")
    );
}

#[test]
fn llada_8b_instruct_two_turns_and_trimmed_content() {
    let messages = [
        Message::user("  Hello there \n"),
        Message::assistant("Hi! How can I help?"),
        Message::user("Tell me a joke."),
    ];
    let rendered = template("llada-8b-instruct")
        .render(&messages, true)
        .unwrap();
    assert_eq!(
        rendered,
        format!(
            "<|startoftext|>{HEADER_USER}Hello there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|>\
             {HEADER_USER}Tell me a joke.<|eot_id|>{HEADER_ASSISTANT}"
        )
    );
}

#[test]
fn the_bundled_model_carries_the_same_template() {
    let messages = [Message::user("reverse: apple river stone")];
    assert_eq!(
        template("tiny-llada").render(&messages, true).unwrap(),
        template("llada-8b-instruct")
            .render(&messages, true)
            .unwrap()
    );
}

#[test]
fn a_broken_template_is_an_error_not_a_panic() {
    let err =
        ChatTemplate::new("{% for m in messages %}{{ m.content }", "<s>", "</s>").unwrap_err();
    assert!(matches!(err, llada::Error::Template(_)), "{err}");
    let raising =
        ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
    let err = raising.render(&[Message::user("x")], true).unwrap_err();
    // The template engine's message is the cause, in the report a user sees.
    let report = llada::report(&err);
    assert!(report.contains("roles must alternate"), "{report}");
}

#[test]
fn a_hostile_template_from_a_model_file_is_an_error_not_a_hang() {
    let start = std::time::Instant::now();
    for source in [
        // Loops that would run for hours.
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        // Unbounded recursion.
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ] {
        let template = ChatTemplate::new(source, "", "").unwrap();
        let err = template.render(&[Message::user("x")], true).unwrap_err();
        assert!(matches!(err, llada::Error::Template(_)), "{err}");
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}
