//! From final ids to the text a client sees: cut at end of text, `max_tokens` and stop
//! strings, and streamed only once nothing can change it.

use llada::Model;

/// Why an answer ended, as OpenAI's `finish_reason` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// End of text or a stop string.
    Stop,
    /// `max_tokens` ran out.
    Length,
}

impl Finish {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// The text of one answer as its final ids grow.
///
/// The text is built from increments, as streaming detokenizers do: each new run of ids is
/// decoded beside the ids just before it (a tokenizer may decode a token differently at the
/// start of a text, e.g. SentencePiece's leading space) and only what it adds is appended. The
/// answer is that text whether streamed or not, so the chunks of a stream always add up to the
/// whole answer.
pub(crate) struct Detokenizer {
    eos: u32,
    eot: u32,
    max_tokens: usize,
    stops: Vec<String>,
    /// The ids decoded so far (up to end of text, at most `max_tokens`).
    ids: Vec<u32>,
    /// Where the context of the next increment starts, and where its new ids start.
    prefix_offset: usize,
    read_offset: usize,
    /// The text of `ids[..read_offset]`, built from increments.
    decoded: String,
    /// How much of `decoded` has been sent.
    sent: usize,
    finish: Option<Finish>,
}

impl Detokenizer {
    pub(crate) fn new(model: &Model, max_tokens: usize, stops: Vec<String>) -> Self {
        let special = model.special_tokens();
        Self {
            eos: special.eos,
            eot: special.eot,
            max_tokens,
            stops,
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            decoded: String::new(),
            sent: 0,
            finish: None,
        }
    }

    /// The text sent so far (the whole answer once finished).
    pub(crate) fn text(&self) -> &str {
        &self.decoded[..self.sent]
    }

    /// Answer tokens so far (up to end of text, at most `max_tokens`).
    pub(crate) fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// Takes the final ids so far (`done`: all of them) and returns the text to send now, and
    /// the finish reason once the answer is complete. Text is held back while it could still
    /// change: an incomplete UTF-8 character, or the start of a stop string.
    pub(crate) fn update(
        &mut self,
        model: &Model,
        ids: &[u32],
        done: bool,
    ) -> (String, Option<Finish>) {
        if self.finish.is_some() {
            return (String::new(), self.finish);
        }
        let end_of_text = ids.iter().position(|&t| t == self.eos || t == self.eot);
        let end = end_of_text.unwrap_or(ids.len()).min(self.max_tokens);
        // Final ids only grow: the new ones extend those already read.
        if end > self.ids.len() {
            self.ids.extend_from_slice(&ids[self.ids.len()..end]);
        }
        let mut finish = if end_of_text.is_some_and(|e| e <= self.max_tokens) {
            Some(Finish::Stop)
        } else if end == self.max_tokens || done {
            Some(Finish::Length)
        } else {
            None
        };
        if self.read_offset < self.ids.len() {
            let tokenizer = model.tokenizer();
            let before = tokenizer
                .decode(&self.ids[self.prefix_offset..self.read_offset], true)
                .unwrap_or_default();
            let now = tokenizer
                .decode(&self.ids[self.prefix_offset..], true)
                .unwrap_or_default();
            // Half a character decodes as U+FFFD until its other bytes come (at the end of
            // the answer it stays as it is).
            let complete = finish.is_some() || !now.ends_with('\u{FFFD}');
            if complete && now.len() >= before.len() && now.is_char_boundary(before.len()) {
                self.decoded.push_str(&now[before.len()..]);
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
            }
        }
        let mut keep = self.decoded.len();
        if let Some(at) = self
            .stops
            .iter()
            // Nothing sent holds a stop string or ends with the start of one.
            .filter_map(|stop| self.decoded[self.sent..].find(stop.as_str()))
            .map(|at| at + self.sent)
            .min()
        {
            keep = at;
            finish = Some(Finish::Stop);
        } else if finish.is_none() {
            // The longest tail that a stop string starts with waits for the next tokens.
            let text = &self.decoded[self.sent..];
            let hold = self
                .stops
                .iter()
                .flat_map(|s| {
                    (1..s.len())
                        .filter(|&k| s.is_char_boundary(k))
                        .map(move |k| &s[..k])
                })
                .filter(|prefix| text.ends_with(prefix))
                .map(str::len)
                .max()
                .unwrap_or(0);
            keep -= hold;
        }
        let delta = self.decoded[self.sent..keep].to_string();
        self.sent = keep;
        if finish.is_some() {
            self.decoded.truncate(keep);
        }
        self.finish = finish;
        (delta, finish)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llada::BackendChoice;

    fn model() -> std::sync::Arc<Model> {
        Model::load(llada_test_support::bundled_model(), &BackendChoice::Ndarray)
            .expect("the bundled model")
    }

    /// Feeds growing prefixes of `ids`, then all of them as done; returns the deltas and the
    /// finish reasons seen after each call.
    fn feed(
        model: &Model,
        ids: &[u32],
        max_tokens: usize,
        stops: &[&str],
    ) -> (Vec<String>, Vec<Option<Finish>>) {
        let mut d = Detokenizer::new(
            model,
            max_tokens,
            stops.iter().map(|s| s.to_string()).collect(),
        );
        let mut deltas = Vec::new();
        let mut finishes = Vec::new();
        for n in 1..=ids.len() {
            let (delta, finish) = d.update(model, &ids[..n], n == ids.len());
            deltas.push(delta);
            finishes.push(finish);
            if finish.is_some() {
                break;
            }
        }
        (deltas, finishes)
    }

    #[test]
    fn growing_prefixes_stream_the_whole_text_once() {
        let model = model();
        let ids = model.tokenizer().encode("rock,frog,pen").unwrap();
        let (deltas, finishes) = feed(&model, &ids, 100, &[]);
        assert_eq!(deltas.concat(), "rock,frog,pen");
        assert_eq!(finishes.last(), Some(&Some(Finish::Length)));
        assert!(finishes[..finishes.len() - 1].iter().all(Option::is_none));
        // End of text ends the answer with "stop", before the ids run out.
        let eos = model.special_tokens().eos;
        let with_eos: Vec<u32> = ids.iter().copied().chain([eos, eos, eos]).collect();
        let (deltas, finishes) = feed(&model, &with_eos, 100, &[]);
        assert_eq!(deltas.concat(), "rock,frog,pen");
        assert_eq!(finishes.len(), ids.len() + 1, "finished at the first EOS");
        assert_eq!(finishes.last(), Some(&Some(Finish::Stop)));
    }

    #[test]
    fn the_start_of_a_stop_string_is_held_back_and_the_stop_cuts() {
        let model = model();
        let ids = model.tokenizer().encode("rock,frog,pen").unwrap();
        let mut d = Detokenizer::new(&model, 100, vec![",pen".into()]);
        let mut sent = String::new();
        for n in 1..ids.len() {
            let (delta, finish) = d.update(&model, &ids[..n], false);
            sent.push_str(&delta);
            // Nothing that ",pen" could start is ever sent before it is decided.
            assert!(!sent.ends_with(','), "{sent:?} sent a possible stop start");
            if finish.is_some() {
                break;
            }
        }
        let (delta, finish) = d.update(&model, &ids, true);
        sent.push_str(&delta);
        assert_eq!(sent, "rock,frog");
        assert_eq!(finish, Some(Finish::Stop));
        assert_eq!(d.text(), "rock,frog");
    }

    #[test]
    fn max_tokens_cuts_with_length() {
        let model = model();
        let ids = model.tokenizer().encode("rock,frog,pen").unwrap();
        let (deltas, finishes) = feed(&model, &ids, 2, &[]);
        assert_eq!(finishes.len(), 2, "complete once two tokens are final");
        assert_eq!(finishes[1], Some(Finish::Length));
        let two = model.tokenizer().decode(&ids[..2], true).unwrap();
        assert_eq!(deltas.concat(), two);
    }
}
