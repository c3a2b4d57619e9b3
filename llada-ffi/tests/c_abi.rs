//! The C ABI as C and C++ hosts use it: the header compiles as C99 and C++17 and twice in two
//! translation units; the C example, a bad-input program and a two-thread program run against
//! the bundled model under AddressSanitizer (leaks included); the C++ example builds with
//! `find_package(llada)` from an installed prefix (and the pkg-config file works).
//!
//! Needs gcc/g++ and cmake on PATH (the test command puts a cmake from PyPI into .venv/bin).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use llada_test_support::{bundled_model, dream_model, fixture, held_out_answered};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The directory of the test binaries' profile (`target/debug` for `cargo test`).
fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Builds libllada.so and libllada.a with the profile of this test run (cargo test builds the
/// crate only as a test harness), once per test binary.
fn library_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let dir = profile_dir();
        let profile = if dir.ends_with("release") {
            "release"
        } else {
            "test"
        };
        run(Command::new(cargo).current_dir(root()).args([
            "build",
            "--quiet",
            "-p",
            "llada-ffi",
            "--profile",
            profile,
        ]));
        assert!(dir.join("libllada.so").exists() && dir.join("libllada.a").exists());
        dir
    })
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Compiles C (or C++) sources against include/ and libllada.so.
fn compile(compiler: &str, flags: &[&str], sources: &[PathBuf], out: &Path) {
    let lib = library_dir();
    run(Command::new(compiler)
        .args(flags)
        .arg("-I")
        .arg(root().join("include"))
        .args(sources)
        .arg("-o")
        .arg(out)
        .arg("-L")
        .arg(lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lllada")
        .arg("-lpthread"));
}

fn c_test(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(name)
}

/// A held-out prompt the reference sampler answers correctly, and that answer.
fn held_out() -> (String, String) {
    let (item, _) = held_out_answered();
    (item.prompt, item.answer)
}

const SANITIZE: &[&str] = &["-fsanitize=address", "-fno-omit-frame-pointer", "-g"];

fn sanitized(command: &mut Command) -> &mut Command {
    // detect_leaks: fail on any leak; the Rust library is not instrumented, but its heap goes
    // through malloc, which LeakSanitizer watches.
    command
        .env(
            "ASAN_OPTIONS",
            "detect_leaks=1:abort_on_error=0:exitcode=23",
        )
        .env_remove("RUST_LOG")
}

#[test]
fn the_header_compiles_as_c99_and_cpp17_and_twice_in_two_units() {
    let dir = scratch();
    compile(
        "gcc",
        &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[c_test("header_twice_a.c"), c_test("header_twice_b.c")],
        &dir.path().join("twice"),
    );
    run(&mut Command::new(dir.path().join("twice")));
    compile(
        "g++",
        &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"],
        &[c_test("header_cpp.cpp")],
        &dir.path().join("cpp"),
    );
    let out = run(&mut Command::new(dir.path().join("cpp")));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_c_example_answers_a_held_out_prompt_under_addresssanitizer() {
    let dir = scratch();
    let exe = dir.path().join("generate");
    let flags = [&["-std=c99", "-Wall", "-Wextra", "-Werror"], SANITIZE].concat();
    compile("gcc", &flags, &[root().join("examples/c/generate.c")], &exe);
    let (prompt, answer) = held_out();
    let out = run(sanitized(
        Command::new(&exe).arg(bundled_model()).arg(&prompt),
    ));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        answer,
        "prompt {prompt:?}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 steps"));
}

/// valgrind's memcheck, when the machine has it: no invalid read or write, no use of
/// uninitialised memory, no definite leak.
fn memcheck(command: &mut Command) -> Option<Output> {
    let valgrind = Command::new("valgrind").arg("--version").output().ok()?;
    if !valgrind.status.success() {
        return None;
    }
    let program = command.get_program().to_os_string();
    let args: Vec<_> = command.get_args().map(|a| a.to_os_string()).collect();
    let mut wrapped = Command::new("valgrind");
    wrapped
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite",
            "--quiet",
        ])
        .arg(program)
        .args(args)
        .env_remove("RUST_LOG");
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    Some(run(&mut wrapped))
}

#[test]
fn the_c_example_and_the_bad_input_checks_are_clean_under_valgrind() {
    let dir = scratch();
    let flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-g"];
    let example = dir.path().join("generate");
    compile(
        "gcc",
        &flags,
        &[root().join("examples/c/generate.c")],
        &example,
    );
    let (prompt, answer) = held_out();
    let Some(out) = memcheck(Command::new(&example).arg(bundled_model()).arg(&prompt)) else {
        eprintln!("valgrind is not installed: skipped");
        return;
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), answer);
    let bad = dir.path().join("bad_input");
    compile("gcc", &flags, &[c_test("bad_input.c")], &bad);
    let out = memcheck(
        Command::new(&bad)
            .arg(bundled_model())
            .env_remove("ORT_DYLIB_PATH"),
    )
    .expect("valgrind ran once");
    assert!(String::from_utf8_lossy(&out.stdout).contains("all bad-input checks passed"));
}

#[test]
fn a_llama_cpp_gguf_file_alone_answers_through_the_c_abi() {
    let dir = scratch();
    let exe = dir.path().join("gguf");
    let flags = [&["-std=c99", "-Wall", "-Wextra", "-Werror"], SANITIZE].concat();
    compile("gcc", &flags, &[c_test("gguf.c")], &exe);
    // The file alone in a directory: nothing beside it to read.
    let model = dir.path().join("tiny-llada-q8_0.gguf");
    std::fs::copy(fixture("tiny-llada/gguf/tiny-llada-q8_0.gguf"), &model).unwrap();
    let (prompt, answer) = held_out();
    let out = run(sanitized(Command::new(&exe).arg(&model).arg(&prompt)));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        answer,
        "prompt {prompt:?}"
    );
}

/// A Dream directory and llama.cpp's Dream GGUF file through the C ABI: Dream's own rule by
/// default, and each of its four algorithms reachable, giving the tokens of the PyTorch
/// transcription of Dream's sampler (tests/fixtures/dream_reference.py; its float32 or its
/// float64 run) from the directory.
#[test]
fn dream_models_and_their_algorithms_answer_through_the_c_abi() {
    let dir = scratch();
    let exe = dir.path().join("dream");
    let flags = [&["-std=c99", "-Wall", "-Wextra", "-Werror"], SANITIZE].concat();
    compile("gcc", &flags, &[c_test("dream.c")], &exe);
    let eval = llada_test_support::EvalSet::load(&dream_model().join("eval.json")).unwrap();
    let index = 1;
    let item = &eval.items[index];
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dream_model().join("dream_reference.json")).unwrap(),
    )
    .unwrap();
    let outputs = |alg: &str, run: &str| -> Vec<u32> {
        let config = reference["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["alg"] == alg && c["steps"] == 16)
            .unwrap();
        serde_json::from_value(config[run]["outputs"][index].clone()).unwrap()
    };
    let gguf = dir.path().join("tiny-dream-q8_0.gguf");
    std::fs::copy(fixture("tiny-dream/gguf/tiny-dream-q8_0.gguf"), &gguf).unwrap();
    let mut lines_of = Vec::new();
    for model in [dream_model(), gguf] {
        let out = run(sanitized(Command::new(&exe).arg(&model).arg(&item.prompt)));
        let lines: Vec<Vec<u32>> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split(' ').map(|t| t.parse().unwrap()).collect())
            .collect();
        assert_eq!(lines.len(), 4, "{}", model.display());
        lines_of.push(lines);
    }
    for (alg, ours) in ["origin", "maskgit_plus", "topk_margin", "entropy"]
        .into_iter()
        .zip(&lines_of[0])
    {
        assert!(
            *ours == outputs(alg, "f32") || *ours == outputs(alg, "f64"),
            "{alg}: {ours:?} vs the transcription's {:?}",
            outputs(alg, "f32")
        );
    }
    // llama.cpp's Q8_0 file: Dream's rule by default too (the program checks), 16 ids each.
    assert!(lines_of[1].iter().all(|l| l.len() == 16));
}

#[test]
fn bad_input_returns_the_documented_statuses_without_errors_or_leaks() {
    let dir = scratch();
    let exe = dir.path().join("bad_input");
    let flags = [&["-std=c99", "-Wall", "-Wextra", "-Werror"], SANITIZE].concat();
    compile("gcc", &flags, &[c_test("bad_input.c")], &exe);
    // Without ORT_DYLIB_PATH, so that a missing runtime library is seen as missing.
    let out = run(sanitized(
        Command::new(&exe)
            .arg(bundled_model())
            .env_remove("ORT_DYLIB_PATH"),
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all bad-input checks passed"));
}

#[test]
fn two_threads_with_two_contexts_match_one_thread() {
    let dir = scratch();
    let exe = dir.path().join("threads");
    let flags = [
        &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pthread"],
        SANITIZE,
    ]
    .concat();
    compile("gcc", &flags, &[c_test("threads.c")], &exe);
    let out = run(sanitized(Command::new(&exe).args([
        bundled_model().as_os_str(),
        "copy: pen frog rock".as_ref(),
        "reverse: lake rose".as_ref(),
    ])));
    assert!(String::from_utf8_lossy(&out.stdout).contains("two threads agree with one"));
}

#[test]
fn the_cpp_example_builds_with_find_package_and_pkg_config_works() {
    let lib = library_dir();
    let prefix = scratch();
    let profile = lib.file_name().unwrap().to_str().unwrap();
    run(Command::new(root().join("llada-ffi/packaging/install.sh"))
        .arg(prefix.path())
        .env("PROFILE", profile)
        .env("CARGO_TARGET_DIR", lib.parent().unwrap()));

    let build = scratch();
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("examples/cpp"))
        .arg("-B")
        .arg(build.path())
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.path().display())));
    run(Command::new("cmake").arg("--build").arg(build.path()));
    let (prompt, answer) = held_out();
    let out = run(Command::new(build.path().join("llada_cpp_example"))
        .arg(bundled_model())
        .arg(&prompt)
        .env_remove("RUST_LOG"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), answer);

    // pkg-config: flags from the installed llada.pc build the C example too.
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "llada"])
        .env("PKG_CONFIG_PATH", prefix.path().join("lib/pkgconfig"))
        .output();
    if let Ok(pc) = pc {
        assert!(
            pc.status.success(),
            "{}",
            String::from_utf8_lossy(&pc.stderr)
        );
        let flags = String::from_utf8(pc.stdout).unwrap();
        let exe = build.path().join("generate_pc");
        let mut cc = Command::new("gcc");
        cc.arg(root().join("examples/c/generate.c"))
            .args(flags.split_whitespace())
            .arg("-o")
            .arg(&exe);
        cc.arg(format!(
            "-Wl,-rpath,{}",
            prefix.path().join("lib").display()
        ));
        run(&mut cc);
        let out = run(Command::new(&exe)
            .arg(bundled_model())
            .arg(&prompt)
            .env_remove("RUST_LOG"));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), answer);
    }
}

/// A LLaDA-MoE directory and llama.cpp's `llada-moe` Q4_K_M file through the C ABI (the
/// program of the GGUF test: lengths 16, blocks of 8) answer the prompt right.
#[test]
fn llada_moe_models_answer_through_the_c_abi() {
    let dir = scratch();
    let exe = dir.path().join("gguf");
    let flags = [&["-std=c99", "-Wall", "-Wextra", "-Werror"], SANITIZE].concat();
    compile("gcc", &flags, &[c_test("gguf.c")], &exe);
    let gguf = dir.path().join("tiny-llada-moe-q4_k_m.gguf");
    std::fs::copy(
        fixture("tiny-llada-moe/gguf/tiny-llada-moe-q4_k_m.gguf"),
        &gguf,
    )
    .unwrap();
    for model in [llada_test_support::llada_moe_model(), gguf] {
        let out = run(sanitized(
            Command::new(&exe).arg(&model).arg("reverse:pen,frog,rock"),
        ));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            "rock,frog,pen",
            "{}",
            model.display()
        );
    }
}

/// A LLaDA2 directory through the C ABI: LLaDA2's decoding by default (the program checks),
/// answering as the LLaDA2.0 transcription does; LLaDA2.1's editing as its transcription.
#[test]
fn llada2_models_decode_as_llada2_through_the_c_abi() {
    let dir = scratch();
    let exe = dir.path().join("llada2");
    let flags = [&["-std=c99", "-Wall", "-Wextra", "-Werror"], SANITIZE].concat();
    compile("gcc", &flags, &[c_test("llada2.c")], &exe);
    let model = llada_test_support::llada2_model();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("generate_golden.json")).unwrap())
            .unwrap();
    let eos = golden["eos_token_id"].as_u64().unwrap() as u32;
    let item = &golden["items"][0];
    let out = run(sanitized(
        Command::new(&exe)
            .arg(&model)
            .arg(item["prompt"].as_str().unwrap()),
    ));
    let lines: Vec<Vec<u32>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(' ').map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, config) in lines.iter().zip(["llada20_default", "llada21_default"]) {
        let mut ids = line.clone();
        if let Some(end) = ids.iter().position(|&t| t == eos) {
            ids.truncate(end + 1);
        }
        let want: Vec<u32> =
            serde_json::from_value(item["results"][config]["output_ids"].clone()).unwrap();
        assert_eq!(ids, want, "{config}");
    }
}
