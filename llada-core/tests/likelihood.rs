//! The Monte Carlo log-likelihood and the training-time forward process, on mock predictors
//! whose answers are known in closed form.

use llada_core::testing::{HashPredictor, OraclePredictor, UniformPredictor};
use llada_core::{
    Error, GenerateError, LikelihoodParams, LossNormalization, SamplerRng, WorkspaceBuf,
    WorkspaceSizes, diffusion_loss, log_likelihood, mask_for_pretraining, mask_for_sft,
    rand_core::SeedableRng,
};

fn estimate<P: llada_core::MaskPredictor>(
    predictor: &mut P,
    prompt: &[u32],
    answer: &[u32],
    params: &LikelihoodParams,
    seed: u64,
) -> Result<f64, GenerateError<P::Error>> {
    let sizes = WorkspaceSizes::for_likelihood(
        prompt.len(),
        answer.len(),
        params.batch,
        params.cfg_scale > 0.0,
        predictor.vocab_size(),
    )?;
    let mut ws = WorkspaceBuf::new(&sizes);
    log_likelihood(
        predictor,
        prompt,
        answer,
        params,
        &mut SamplerRng::seed_from_u64(seed),
        ws.as_workspace(),
    )
}

#[test]
fn a_certain_predictor_has_log_likelihood_zero() {
    let sequence = [5u32, 6, 7, 8, 9, 10, 11];
    let mut oracle = OraclePredictor {
        sequence: &sequence,
        vocab: 32,
    };
    let params = LikelihoodParams::default()
        .with_mc_samples(16)
        .with_batch(4)
        .with_cfg_scale(0.0)
        .with_mask_id(31);
    let ll = estimate(&mut oracle, &sequence[..3], &sequence[3..], &params, 1).unwrap();
    assert_eq!(ll, 0.0);
}

#[test]
fn a_uniform_predictor_gives_minus_l_ln_v() {
    let vocab = 50;
    let mut uniform = UniformPredictor { vocab, max_len: 64 };
    for (answer_len, batch, cfg) in [
        (5usize, 4usize, 0.0f32),
        (8, 3, 0.0),
        (1, 2, 0.5),
        (12, 16, 2.0),
    ] {
        let answer: Vec<u32> = (0..answer_len as u32).collect();
        let params = LikelihoodParams::default()
            .with_mc_samples(batch * 3)
            .with_batch(batch)
            .with_cfg_scale(cfg)
            .with_mask_id(49);
        let ll = estimate(&mut uniform, &[1, 2], &answer, &params, 7).unwrap();
        let expected = -(answer_len as f64) * (vocab as f64).ln();
        assert!(
            (ll - expected).abs() < 1e-9 * expected.abs(),
            "L={answer_len} b={batch}: {ll} vs {expected}"
        );
    }
}

#[test]
fn the_estimate_spread_shrinks_with_more_samples() {
    let mut predictor = HashPredictor::new(64, 63, 11);
    let prompt = [1, 2, 3, 4];
    let answer = [10, 20, 30, 40, 50, 60, 5, 15];
    let mut spread = |mc: usize| {
        let params = LikelihoodParams::default()
            .with_mc_samples(mc)
            .with_batch(2)
            .with_cfg_scale(0.0)
            .with_mask_id(63);
        let values: Vec<f64> = (0..40)
            .map(|seed| estimate(&mut predictor, &prompt, &answer, &params, seed).unwrap())
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var =
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
        (mean, var.sqrt())
    };
    let (mean_small, sd_small) = spread(2);
    let (mean_large, sd_large) = spread(64);
    assert!(sd_small > 0.0);
    // 32x the samples: the standard deviation should drop by about sqrt(32) ~ 5.7.
    assert!(sd_large < sd_small / 2.5, "sd {sd_small} -> {sd_large}");
    // Both estimate the same quantity.
    assert!(
        (mean_small - mean_large).abs() < 4.0 * sd_small / 40f64.sqrt() + 1e-9,
        "{mean_small} vs {mean_large}"
    );
}

#[test]
fn likelihood_rejects_bad_input() {
    let mut uniform = UniformPredictor {
        vocab: 16,
        max_len: 8,
    };
    let ok = LikelihoodParams::default()
        .with_mc_samples(4)
        .with_batch(2)
        .with_cfg_scale(0.0)
        .with_mask_id(15);
    let invalid = |r: Result<f64, GenerateError<_>>| match r {
        Err(GenerateError::Invalid(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        invalid(estimate(&mut uniform, &[1], &[], &ok, 0)),
        Error::Zero {
            name: "answer length"
        }
    );
    assert_eq!(
        invalid(estimate(
            &mut uniform,
            &[1],
            &[2],
            &ok.with_mc_samples(5),
            0
        )),
        Error::McSamples {
            mc_samples: 5,
            batch: 2
        }
    );
    assert_eq!(
        invalid(estimate(&mut uniform, &[1], &[2, 15], &ok, 0)),
        Error::MaskInPrompt {
            row: 0,
            position: 2
        }
    );
    assert_eq!(
        invalid(estimate(&mut uniform, &[1], &[2, 16], &ok, 0)),
        Error::TokenOutOfVocab {
            name: "token",
            id: 16,
            vocab: 16
        }
    );
    assert!(matches!(
        invalid(estimate(&mut uniform, &[1; 5], &[2; 5], &ok, 0)),
        Error::TooLong {
            length: 10,
            max: 8,
            ..
        }
    ));
    let mut small = WorkspaceBuf::default();
    let err = log_likelihood(
        &mut uniform,
        &[1],
        &[2],
        &ok,
        &mut SamplerRng::seed_from_u64(0),
        small.as_workspace(),
    );
    assert!(matches!(
        err,
        Err(GenerateError::Invalid(Error::BufferTooSmall {
            buffer: "logits",
            ..
        }))
    ));
}

#[test]
fn pretraining_masks_each_row_at_its_own_ratio() {
    let (batch, seq) = (6, 4000);
    let tokens: Vec<u32> = (0..batch * seq).map(|i| (i % 90) as u32).collect();
    let (mut noisy, mut p_mask) = (vec![0; tokens.len()], vec![0.0; batch]);
    let mut rng = SamplerRng::seed_from_u64(5);
    mask_for_pretraining(&tokens, batch, 99, 1e-3, &mut rng, &mut noisy, &mut p_mask).unwrap();
    for row in 0..batch {
        let slice = &noisy[row * seq..(row + 1) * seq];
        let masked = slice.iter().filter(|&&t| t == 99).count() as f64 / seq as f64;
        let p = f64::from(p_mask[row]);
        assert!((1e-3..=1.0).contains(&p));
        assert!(
            (masked - p).abs() < 4.0 * (p * (1.0 - p) / seq as f64).sqrt() + 1e-3,
            "row {row}: {masked} vs {p}"
        );
        for (n, t) in slice.iter().zip(&tokens[row * seq..]) {
            assert!(*n == 99 || n == t);
        }
    }
    assert!(p_mask.windows(2).any(|w| w[0] != w[1]), "one t per row");
}

#[test]
fn sft_never_masks_the_prompt() {
    let (batch, seq) = (4, 64);
    let tokens: Vec<u32> = (0..batch * seq).map(|i| (i % 50) as u32).collect();
    let prompts = [10, 20, 30, 63];
    let (mut noisy, mut p_mask) = (vec![0; tokens.len()], vec![0.0; batch]);
    let mut rng = SamplerRng::seed_from_u64(2);
    for _ in 0..20 {
        mask_for_sft(
            &tokens,
            batch,
            &prompts,
            99,
            0.0,
            &mut rng,
            &mut noisy,
            &mut p_mask,
        )
        .unwrap();
        for row in 0..batch {
            let r = row * seq;
            assert_eq!(&noisy[r..r + prompts[row]], &tokens[r..r + prompts[row]]);
        }
    }
    let err = mask_for_sft(
        &tokens,
        batch,
        &[1, 2, 64, 3],
        99,
        0.0,
        &mut rng,
        &mut noisy,
        &mut p_mask,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        Error::OutOfRange {
            name: "prompt length",
            ..
        }
    ));
    let err = mask_for_sft(
        &tokens,
        batch,
        &[1, 2],
        99,
        0.0,
        &mut rng,
        &mut noisy,
        &mut p_mask,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "prompt lengths has length 2, expected 4");
}

#[test]
fn the_diffusion_loss_is_weighted_and_normalised_like_the_paper() {
    let (batch, seq, vocab) = (2usize, 4usize, 8usize);
    let targets = [1u32, 2, 3, 4, 5, 6, 7, 0];
    let noisy = [1u32, 9, 9, 4, 9, 6, 7, 9];
    let p_mask = [0.5f32, 0.25];
    let uniform = vec![0.0f32; batch * seq * vocab];
    let ln_v = (vocab as f64).ln();
    // Row 0: two masked at p 0.5 -> 4 ln V; row 1: two masked at p 0.25 -> 8 ln V.
    let pre = diffusion_loss(
        &uniform,
        vocab,
        &targets,
        &noisy,
        &p_mask,
        batch,
        9,
        LossNormalization::Pretraining,
    )
    .unwrap();
    assert!((pre - 12.0 * ln_v / 8.0).abs() < 1e-12);
    let sft = diffusion_loss(
        &uniform,
        vocab,
        &targets,
        &noisy,
        &p_mask,
        batch,
        9,
        LossNormalization::Sft {
            prompt_lengths: &[2, 1],
        },
    )
    .unwrap();
    assert!((sft - (4.0 * ln_v / 2.0 + 8.0 * ln_v / 3.0) / 2.0).abs() < 1e-12);

    // Certain of every target: zero loss.
    let mut certain = vec![f32::NEG_INFINITY; batch * seq * vocab];
    for (i, &t) in targets.iter().enumerate() {
        certain[i * vocab + t as usize] = 0.0;
    }
    assert_eq!(
        diffusion_loss(
            &certain,
            vocab,
            &targets,
            &noisy,
            &p_mask,
            batch,
            9,
            LossNormalization::Pretraining
        )
        .unwrap(),
        0.0
    );

    let err = diffusion_loss(
        &uniform[1..],
        vocab,
        &targets,
        &noisy,
        &p_mask,
        batch,
        9,
        LossNormalization::Pretraining,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "logits has length 63, expected 64");
}
