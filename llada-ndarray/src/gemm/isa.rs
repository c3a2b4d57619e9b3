//! Which micro-kernel runs: [`Kernel`], a value the caller may choose, and [`Isa`], a kernel
//! this CPU is known to run (the only way into the unsafe kernels).

use std::fmt;
use std::str::FromStr;

use super::blocking::Blocking;
use super::int8::IntKernel;
use crate::error::LoadError;

/// A family of matrix kernels (and the row operations compiled with them). Contexts pick the
/// fastest one the CPU has that computes in f32 unless told otherwise
/// (`ContextOptions::kernel`, or the `LLADA_KERNEL` environment variable: `portable`, `avx2`,
/// `avx512`, `amx`, `neon`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AMX (Intel Xeon from Sapphire Rapids on, on Linux): floating-point
    /// products on the matrix tiles (`TDPBF16PS`), both operands rounded to bf16 and sums
    /// kept in f32; the row operations and the integer products are AVX-512's. Chosen only
    /// when asked for ([`rounds_to_bf16`](Self::rounds_to_bf16)): it moves logits by up to a
    /// few percent of their row's spread (see `tests/amx.rs`).
    Amx,
    /// x86-64 with AVX2, FMA and F16C: 6 × 16 register tiles (and 1–5 rows for the last
    /// rows), `A` read in place.
    Avx2,
    /// x86-64 with AVX-512F: 8 × 32 register tiles (and 1–7 rows for the last rows), `A`
    /// read in place.
    Avx512,
    /// aarch64 with NEON (every Arm64 phone and Apple Silicon Mac): 6 × 16 register tiles
    /// (and 1–5 rows for the last rows), `A` read in place; half-precision weights widened
    /// on load.
    Neon,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 5] = [
        Kernel::Amx,
        Kernel::Avx512,
        Kernel::Avx2,
        Kernel::Neon,
        Kernel::Portable,
    ];

    /// The name `LLADA_KERNEL` and [`FromStr`] take: `portable`, `avx2`, `avx512`, `amx` or
    /// `neon`.
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Amx => "amx",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }

    /// Whether this CPU runs the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => {
                use std::arch::is_x86_feature_detected as has;
                has!("avx2") && has!("fma") && has!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f") && Kernel::Avx2.is_supported()
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => {
                std::arch::is_x86_feature_detected!("avx512bw")
                    && Kernel::Avx512.is_supported()
                    && super::kernels::amx::available()
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            _ => false,
        }
    }

    /// Whether the kernel rounds the operands of its floating-point products to bf16 (the
    /// sums stay f32): only `amx`. The others compute in f32, and are the ones
    /// [`detect`](Self::detect) picks.
    pub const fn rounds_to_bf16(self) -> bool {
        matches!(self, Kernel::Amx)
    }

    /// The kernels this CPU runs, fastest first (`portable` always last), `amx` included.
    pub fn supported() -> Vec<Kernel> {
        Self::ALL.into_iter().filter(|k| k.is_supported()).collect()
    }

    /// The fastest kernel this CPU runs that computes in f32 (so not `amx`, which must be
    /// asked for).
    pub fn detect() -> Kernel {
        Self::ALL
            .into_iter()
            .find(|k| !k.rounds_to_bf16() && k.is_supported())
            .unwrap_or(Kernel::Portable)
    }

    /// The kernel `LLADA_KERNEL` names, if it is set (and not empty).
    pub fn from_env() -> Result<Option<Kernel>, LoadError> {
        match std::env::var("LLADA_KERNEL") {
            Ok(name) if !name.is_empty() => name.parse().map(Some),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = LoadError;

    fn from_str(name: &str) -> Result<Self, LoadError> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| LoadError::UnknownKernel {
                name: name.to_string(),
            })
    }
}

/// A [`Kernel`] this CPU runs: what the matrix product and the row operations dispatch on.
/// It can only be made by [`Isa::new`], which checks the CPU, so the unsafe kernels behind it
/// never run where their instructions are missing. It may also name an integer kernel for
/// Q8_0, Q4_0, Q4_K and Q6_K weights ([`Isa::with_integer_products`]), again only one the CPU
/// runs, and the [`Blocking`] of its floating-point products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Isa {
    kernel: Kernel,
    int8: Option<IntKernel>,
    blocking: Blocking,
}

impl Isa {
    /// `kernel`, if this CPU runs it, with the default blocks; otherwise an error naming it.
    /// Quantized weights are widened to f32 inside its kernel (no integer products).
    pub(crate) fn new(kernel: Kernel) -> Result<Self, LoadError> {
        if kernel.is_supported() {
            Ok(Self {
                kernel,
                int8: None,
                blocking: Blocking::DEFAULT,
            })
        } else {
            Err(LoadError::KernelUnsupported {
                kernel: kernel.name(),
                supported: Kernel::supported().iter().map(|k| k.name()).collect(),
            })
        }
    }

    /// The kernel asked for, else `LLADA_KERNEL`, else the fastest this CPU runs; with the
    /// blocks asked for, else `LLADA_BLOCKING`, else the table's for this CPU.
    pub(crate) fn choose(
        kernel: Option<Kernel>,
        blocking: Option<Blocking>,
    ) -> Result<Self, LoadError> {
        let kernel = match kernel {
            Some(k) => k,
            None => Kernel::from_env()?.unwrap_or_else(Kernel::detect),
        };
        let blocking = match blocking {
            Some(b) => b,
            None => Blocking::from_env()?.unwrap_or_else(|| Blocking::for_cpu(kernel)),
        };
        Ok(Self::new(kernel)?.with_blocking(blocking))
    }

    /// The same kernel with the floating-point products cut into `blocking`'s blocks.
    pub(crate) fn with_blocking(self, blocking: Blocking) -> Self {
        Self { blocking, ..self }
    }

    /// How the floating-point products are cut into blocks.
    pub(crate) fn blocking(self) -> Blocking {
        self.blocking
    }

    /// The same, with Q8_0, Q4_0, Q4_K and Q6_K weights multiplied in integers (activations
    /// quantized to 8 bits) where the kernel family has integer kernels: AVX-512 with VNNI
    /// (`vpdpbusd`), else AVX2 (`vpmaddubsw`); NEON with `dotprod` (`sdot`), else plain NEON
    /// (`smull`/`sadalp`). The portable family widens them.
    pub(crate) fn with_integer_products(self) -> Self {
        #[cfg(target_arch = "x86_64")]
        let int8 = {
            use std::arch::is_x86_feature_detected as has;
            let vnni = has!("avx512bw") && has!("avx512vnni");
            match self.kernel {
                Kernel::Amx if vnni && super::kernels::amx::int8_available() => {
                    Some(IntKernel::Amx)
                }
                Kernel::Avx512 | Kernel::Amx if vnni => Some(IntKernel::Vnni),
                Kernel::Avx512 | Kernel::Amx | Kernel::Avx2 => Some(IntKernel::Avx2),
                _ => None,
            }
        };
        #[cfg(target_arch = "aarch64")]
        let int8 = match self.kernel {
            Kernel::Neon if std::arch::is_aarch64_feature_detected!("dotprod") => {
                Some(IntKernel::NeonDot)
            }
            Kernel::Neon => Some(IntKernel::Neon),
            _ => None,
        };
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let int8 = None;
        Self { int8, ..self }
    }

    /// With `int8` as the integer kernel (tests: the reference kernel runs anywhere).
    #[cfg(test)]
    pub(crate) fn with_int8_kernel(self, int8: IntKernel) -> Self {
        Self {
            int8: Some(int8),
            ..self
        }
    }

    /// The fastest kernel this CPU runs.
    #[cfg(test)]
    pub(crate) fn detect() -> Self {
        Self::new(Kernel::detect()).expect("the detected kernel runs")
    }

    pub(crate) fn kernel(self) -> Kernel {
        self.kernel
    }

    /// The integer kernel for Q8_0, Q4_0, Q4_K and Q6_K weights, if products use one.
    pub(crate) fn int8(self) -> Option<IntKernel> {
        self.int8
    }

    /// Whether the row operations may be compiled for AVX2 + FMA (x86-64 only; on aarch64
    /// NEON is the target's baseline, so the plain loops are NEON already).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn has_avx2(self) -> bool {
        matches!(self.kernel, Kernel::Avx2 | Kernel::Avx512 | Kernel::Amx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_errors() {
        for kernel in Kernel::ALL {
            assert_eq!(kernel.name().parse::<Kernel>().unwrap(), kernel);
        }
        let err = "sse9".parse::<Kernel>().unwrap_err();
        assert!(err.to_string().contains("sse9"), "{err}");
    }

    #[test]
    fn the_portable_kernel_is_always_supported_and_last() {
        let supported = Kernel::supported();
        assert_eq!(supported.last(), Some(&Kernel::Portable));
        let exact: Vec<Kernel> = supported
            .iter()
            .copied()
            .filter(|k| !k.rounds_to_bf16())
            .collect();
        assert_eq!(exact[0], Kernel::detect());
        assert!(Isa::new(Kernel::Portable).is_ok());
        for kernel in Kernel::ALL {
            assert_eq!(Isa::new(kernel).is_ok(), kernel.is_supported());
        }
    }
}
