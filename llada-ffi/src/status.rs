//! Status codes, the thread-local last error, and the panic boundary every export runs in.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use llada::core::ErrorKind;

/// Result of every fallible call. The values are fixed and never reused.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LladaStatus {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArg = 1,
    /// An argument is out of range, or a parameter combination is invalid.
    InvalidArg = 2,
    /// A caller buffer is too small; the size needed was written back.
    BufferTooSmall = 3,
    /// A file could not be read or is missing.
    Io = 4,
    /// A model file is malformed or does not match its configuration.
    Model = 5,
    /// The backend (ONNX Runtime, threads) failed.
    Backend = 6,
    /// The step callback cancelled the operation.
    Cancelled = 7,
    /// A bug: a Rust panic was caught at the boundary.
    Panic = 8,
    /// The model or request needs a feature that is not available.
    Unsupported = 9,
    /// A string argument is not valid UTF-8.
    InvalidUtf8 = 10,
}

/// Names of the statuses, indexed by value.
const NAMES: [&std::ffi::CStr; 11] = [
    c"ok",
    c"null argument",
    c"invalid argument",
    c"buffer too small",
    c"i/o error",
    c"invalid model",
    c"backend failure",
    c"cancelled",
    c"internal panic",
    c"unsupported",
    c"invalid utf-8",
];

/// A failure with its status and message.
pub(crate) struct Failure {
    pub(crate) status: LladaStatus,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: LladaStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn null(name: &str) -> Self {
        Self::new(LladaStatus::NullArg, format!("`{name}` is NULL"))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(LladaStatus::InvalidArg, message)
    }
}

pub(crate) fn status_of(kind: ErrorKind) -> LladaStatus {
    match kind {
        ErrorKind::InvalidInput => LladaStatus::InvalidArg,
        ErrorKind::BufferTooSmall => LladaStatus::BufferTooSmall,
        ErrorKind::Io => LladaStatus::Io,
        ErrorKind::Model => LladaStatus::Model,
        ErrorKind::Unsupported => LladaStatus::Unsupported,
        ErrorKind::Cancelled => LladaStatus::Cancelled,
        _ => LladaStatus::Backend,
    }
}

impl From<llada::Error> for Failure {
    /// The status of the error's kind, and its whole chain of causes as the message.
    fn from(e: llada::Error) -> Self {
        Self::new(status_of(e.kind()), llada::report(&e))
    }
}

impl From<llada::core::Error> for Failure {
    fn from(e: llada::core::Error) -> Self {
        Self::new(status_of(e.kind()), e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs cannot be represented; replace them.
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// Runs an export's body: maps its failure to a status and records the message, and turns a
/// panic into [`LladaStatus::Panic`]. No panic and no Rust error crosses into C.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> LladaStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => LladaStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal panic: {message}"));
            LladaStatus::Panic
        }
    }
}

/// The name of a status value (`"ok"`, `"buffer too small"`, ...), or `"unknown status"` for a
/// value that is not one. The string is static.
#[unsafe(no_mangle)]
pub extern "C" fn llada_status_str(status: u32) -> *const c_char {
    NAMES
        .get(status as usize)
        .copied()
        .unwrap_or(c"unknown status")
        .as_ptr()
}

/// The detail message of the last failure on the calling thread (empty if none). The pointer
/// stays valid until the next llada call on this thread.
#[unsafe(no_mangle)]
pub extern "C" fn llada_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Copies the last failure's message on this thread into `buffer` (NUL-terminated).
/// `needed` (may be NULL) receives the bytes needed, NUL included; on
/// LLADA_STATUS_BUFFER_TOO_SMALL nothing else is written.
///
/// # Safety
/// `buffer` must be valid for `capacity` bytes (or NULL with capacity 0); `needed` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn llada_last_error_copy(
    buffer: *mut c_char,
    capacity: usize,
    needed: *mut usize,
) -> LladaStatus {
    // Not through `guard`: reporting the last error must not replace it.
    catch_unwind(|| {
        let message = LAST_ERROR.with(|e| e.borrow().clone());
        let bytes = message.as_bytes_with_nul();
        // SAFETY: the caller's contract for `needed`.
        if let Some(needed) = unsafe { needed.as_mut() } {
            *needed = bytes.len();
        }
        if bytes.len() > capacity {
            return LladaStatus::BufferTooSmall;
        }
        if buffer.is_null() {
            return LladaStatus::NullArg;
        }
        // SAFETY: `buffer` holds `capacity >= bytes.len()` bytes (caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buffer, bytes.len())
        };
        LladaStatus::Ok
    })
    .unwrap_or(LladaStatus::Panic)
}
