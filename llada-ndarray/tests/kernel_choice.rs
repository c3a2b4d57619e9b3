//! Choosing a kernel and its blocks: a kernel this CPU lacks, or an unknown name in
//! `LLADA_KERNEL` or `LLADA_BLOCKING`, is an error naming it, never a silent fallback. Its own
//! test binary: it sets those variables.

mod common;

use std::sync::Arc;

use llada_ndarray::{Blocking, Context, ContextOptions, Kernel, LoadError, Model};

#[test]
fn unknown_or_unsupported_kernels_are_errors_and_the_environment_is_honoured() {
    let model = Arc::new(Model::load(llada_test_support::bundled_model()).unwrap());
    for kernel in Kernel::ALL {
        let result =
            Context::with_options(model.clone(), ContextOptions::default().with_kernel(kernel));
        match result {
            Ok(context) => {
                assert!(kernel.is_supported());
                assert_eq!(context.kernel(), kernel);
            }
            Err(err) => {
                assert!(!kernel.is_supported());
                assert!(
                    matches!(&err, LoadError::KernelUnsupported { kernel: k, .. } if *k == kernel.name()),
                    "{err}"
                );
                assert!(err.to_string().contains(kernel.name()), "{err}");
            }
        }
    }

    // SAFETY: this binary's only test; no other thread reads the environment meanwhile.
    unsafe { std::env::set_var("LLADA_KERNEL", "sse9") };
    let err = Context::new(model.clone()).unwrap_err();
    assert!(
        matches!(&err, LoadError::UnknownKernel { name } if name == "sse9"),
        "{err}"
    );

    // SAFETY: as above.
    unsafe { std::env::set_var("LLADA_KERNEL", "portable") };
    assert_eq!(
        Context::new(model.clone()).unwrap().kernel(),
        Kernel::Portable
    );
    // An explicit option wins over the environment.
    let fastest = Kernel::detect();
    let context = Context::with_options(
        model.clone(),
        ContextOptions::default().with_kernel(fastest),
    )
    .unwrap();
    assert_eq!(context.kernel(), fastest);
    // SAFETY: as above.
    unsafe { std::env::remove_var("LLADA_KERNEL") };

    // Blocks: the table's for this CPU by default, else the environment's, else the option's.
    // SAFETY: as above.
    unsafe { std::env::remove_var("LLADA_BLOCKING") };
    let context = Context::new(model.clone()).unwrap();
    assert_eq!(context.blocking(), Blocking::for_cpu(context.kernel()));
    // SAFETY: as above.
    unsafe { std::env::set_var("LLADA_BLOCKING", "100x512") };
    let err = Context::new(model.clone()).unwrap_err();
    assert!(
        matches!(&err, LoadError::InvalidBlocking { text, .. } if text == "100x512"),
        "{err}"
    );
    assert!(err.to_string().contains("multiple of 16"), "{err}");
    // SAFETY: as above.
    unsafe { std::env::set_var("LLADA_BLOCKING", "256x512") };
    let pinned = Blocking::new(256, 512).unwrap();
    assert_eq!(Context::new(model.clone()).unwrap().blocking(), pinned);
    let option = Blocking::new(64, 1024).unwrap();
    let context =
        Context::with_options(model, ContextOptions::default().with_blocking(option)).unwrap();
    assert_eq!(context.blocking(), option);
    // SAFETY: as above.
    unsafe { std::env::remove_var("LLADA_BLOCKING") };
}
