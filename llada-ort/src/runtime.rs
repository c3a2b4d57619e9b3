//! Loading `libonnxruntime` at run time, once per process.
//!
//! `ort` keeps one runtime library and one environment per process. Any `ort` call made before
//! a library is loaded makes `ort` load a default one and panic if it cannot, so every path into
//! `ort` in this crate goes through [`environment`] first.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;
use ort::logging::LogLevel;

use crate::error::OrtError;

/// The loaded runtime: its path and the process's environment.
struct Loaded {
    path: PathBuf,
    environment: Environment,
}

static RUNTIME: Mutex<Option<Loaded>> = Mutex::new(None);

/// The library path from `ORT_DYLIB_PATH`, if set and not empty.
pub(crate) fn env_library() -> Option<PathBuf> {
    std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The path of the runtime library in use, if one is loaded.
pub fn loaded_library() -> Option<PathBuf> {
    RUNTIME
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|l| l.path.clone())
}

/// The process's ONNX Runtime environment, loading the library first if needed: `library`
/// when given, else `ORT_DYLIB_PATH`. Once a library is loaded, asking for another one is an
/// error.
pub(crate) fn environment(library: Option<&Path>) -> Result<Environment, OrtError> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let requested = library.map(Path::to_path_buf).or_else(env_library);
    if let Some(loaded) = runtime.as_ref() {
        return match requested {
            Some(r) if library.is_some() && !same_file(&r, &loaded.path) => {
                Err(OrtError::RuntimeConflict {
                    loaded: loaded.path.clone(),
                    requested: r,
                })
            }
            _ => Ok(loaded.environment.clone()),
        };
    }
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = [library.map(Path::to_path_buf), env_library()]
        .into_iter()
        .flatten()
        .collect();
    for path in candidates {
        if tried.iter().any(|(p, _): &(PathBuf, String)| *p == path) {
            continue;
        }
        if !path.is_file() {
            tried.push((path, "no such file".to_string()));
            continue;
        }
        // Load through ort only after checking the file: a failed load is retried with the next
        // candidate, a successful one is permanent for this process.
        match ort::init_from(&path) {
            Ok(builder) => {
                let environment = builder
                    .with_name("llada")
                    // Microsoft's builds send usage events when telemetry is on (on Linux too:
                    // the 1.31 wheel resolves its collector's host name every few seconds, from
                    // threads of its own). A library embedded in someone's app does not.
                    .with_telemetry(false)
                    .build()
                    .map_err(OrtError::Environment)?;
                environment.set_log_level(ort_log_level());
                tracing::info!(library = %path.display(), "loaded ONNX Runtime");
                *runtime = Some(Loaded {
                    path,
                    environment: environment.clone(),
                });
                return Ok(environment);
            }
            Err(e) => tried.push((path, e.to_string())),
        }
    }
    Err(OrtError::RuntimeNotFound { tried })
}

/// The most detailed ONNX Runtime messages that the process's `tracing` subscriber can record
/// (as it stands when the runtime is loaded), and never less than warnings. `ort` forwards
/// ONNX Runtime's log to `tracing` but creates the environment at the verbose level, so that
/// ONNX Runtime would format hundreds of messages while it loads a model for a subscriber that
/// drops them.
fn ort_log_level() -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => LogLevel::Verbose,
        LevelFilter::DEBUG | LevelFilter::INFO => LogLevel::Info,
        _ => LogLevel::Warning,
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
