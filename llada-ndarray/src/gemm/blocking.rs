//! How the floating-point products are cut into blocks: [`Blocking`], a value chosen per CPU
//! (a table keyed on the CPU's vendor and family), which `LLADA_BLOCKING` or
//! `ContextOptions::blocking` pins.

use std::fmt;
use std::str::FromStr;

use super::NR;
use crate::Kernel;
use crate::error::LoadError;

/// Most panels of `B` in a column block (the loops keep a fixed array of a block's panels).
pub(crate) const MAX_COLUMN_PANELS: usize = 16;
/// Most depth of a pass (the packing buffer of `A` holds this many columns of a tile's rows).
pub(crate) const MAX_DEPTH: usize = 1024;

/// How the f32, bf16 and f16 products of the `avx512`, `avx2`, `neon` and `portable` kernels
/// walk a product: a column block of `B` (`columns` wide, `depth` deep) is read once and
/// serves every row of `A`, and the passes over `C` are at most `depth` deep. Products (and
/// tasks of a product) of at most [`SHORT_ROWS`](Self::SHORT_ROWS) rows, such as a cached
/// step's block of 32 tokens, may take column blocks of their own width.
///
/// The best blocks depend on the CPU's caches and how it issues wide multiplies: contexts take
/// [`for_cpu`](Self::for_cpu)'s choice unless `LLADA_BLOCKING` or
/// `ContextOptions::blocking` pins one. Written (and parsed) as `COLUMNSxDEPTH`, e.g.
/// `128x1024`, or `SHORT/COLUMNSxDEPTH` where short products take other widths, e.g.
/// `64/128x1024`.
///
/// The widths never change a result: every value of `C` is summed in the same order whatever
/// the column blocks. The depth does: each pass adds its partial sum to `C`, so another depth
/// rounds products deeper than the shallower of the two differently in their last bits (every
/// choice is within the same bound of the exact product; see the kernel tests). The choice
/// therefore never comes from a timing, only from the table or a pin, so that one CPU model
/// always computes the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Blocking {
    /// Panels of [`NR`] columns per column block.
    panels: u8,
    /// The same, for products of at most `SHORT_ROWS` rows.
    short_panels: u8,
    depth: u16,
}

impl Blocking {
    /// Rows of a product (or of a task of one) up to which the short width applies.
    pub const SHORT_ROWS: usize = 64;

    /// 128 columns by 1024, whatever the rows: what the table gives CPUs it has no entry for.
    pub const DEFAULT: Blocking = Blocking {
        panels: 8,
        short_panels: 8,
        depth: 1024,
    };

    /// The blocks the benchmark compares (`--only-kernels`) and the tests run every kernel
    /// with: the default, narrower column blocks for short products or for all, and shallower
    /// passes with the default and wider blocks (a block is `columns × depth × 4` bytes of f32
    /// weights to keep in L2: 512 KB for the default).
    pub const CANDIDATES: [Blocking; 5] = [
        Blocking::DEFAULT,
        Blocking {
            panels: 8,
            short_panels: 4,
            depth: 1024,
        },
        Blocking {
            panels: 4,
            short_panels: 4,
            depth: 1024,
        },
        Blocking {
            panels: 8,
            short_panels: 8,
            depth: 512,
        },
        Blocking {
            panels: 16,
            short_panels: 16,
            depth: 512,
        },
    ];

    /// Blocks of `columns` columns (a multiple of 16, at most 256) and passes at most `depth`
    /// deep (a multiple of 16 from 64 to 1024), whatever the rows; other values are
    /// [`LoadError::InvalidBlocking`].
    pub fn new(columns: usize, depth: usize) -> Result<Self, LoadError> {
        Self::with_short_columns(columns, columns, depth)
    }

    /// As [`new`](Self::new), with blocks `short_columns` wide for products of at most
    /// [`SHORT_ROWS`](Self::SHORT_ROWS) rows.
    pub fn with_short_columns(
        short_columns: usize,
        columns: usize,
        depth: usize,
    ) -> Result<Self, LoadError> {
        let text = if short_columns == columns {
            format!("{columns}x{depth}")
        } else {
            format!("{short_columns}/{columns}x{depth}")
        };
        let invalid = |why: &'static str| LoadError::InvalidBlocking {
            text: text.clone(),
            why,
        };
        let width = |columns: usize| {
            if columns == 0 || !columns.is_multiple_of(NR) || columns > MAX_COLUMN_PANELS * NR {
                Err(invalid(
                    "the columns must be a multiple of 16 from 16 to 256",
                ))
            } else {
                Ok((columns / NR) as u8)
            }
        };
        let (panels, short_panels) = (width(columns)?, width(short_columns)?);
        if !(64..=MAX_DEPTH).contains(&depth) || !depth.is_multiple_of(16) {
            return Err(invalid(
                "the depth must be a multiple of 16 from 64 to 1024",
            ));
        }
        Ok(Self {
            panels,
            short_panels,
            depth: depth as u16,
        })
    }

    /// Columns of `B` per column block of a product of more than
    /// [`SHORT_ROWS`](Self::SHORT_ROWS) rows.
    pub const fn columns(self) -> usize {
        self.panels as usize * NR
    }

    /// Columns of `B` per column block of a product of at most
    /// [`SHORT_ROWS`](Self::SHORT_ROWS) rows.
    pub const fn short_columns(self) -> usize {
        self.short_panels as usize * NR
    }

    /// Most depth of a pass over `C`.
    pub const fn depth(self) -> usize {
        self.depth as usize
    }

    /// Panels of `B` per column block of a product (or task) of `rows` rows.
    pub(crate) const fn panels(self, rows: usize) -> usize {
        if rows <= Self::SHORT_ROWS {
            self.short_panels as usize
        } else {
            self.panels as usize
        }
    }

    /// The blocks for `kernel` on this CPU, from a table keyed on the CPU's vendor and family
    /// (x86-64); [`DEFAULT`](Self::DEFAULT) for CPUs and kernels the table lacks.
    ///
    /// The table holds only choices that beat the default beyond the host's noise when
    /// `cargo run --release --example benchmark -- --only-kernels` timed every candidate side
    /// by side (BENCHMARKS.md, "Matrix kernels"):
    /// - AMD Zen 5 (`AuthenticAMD`, family 26), `avx512`: column blocks of 64 for products
    ///   of up to 64 rows. In four runs the mid-size model's forward pass at 32 tokens took
    ///   0.0311, 0.0326, 0.0315 and 0.0303 s with them against 0.0340, 0.0351, 0.0349 and
    ///   0.0328 s with 128, at 64 tokens 0–7% less, and a dual-cache step (32-row products)
    ///   2–7% less; 64 columns for every product ran up to 2% slower at 256 and 1024 tokens,
    ///   and passes 512 deep were never faster.
    ///
    /// Measured and left at the default: AMD Zen 4 (family 25), where the default was tuned,
    /// and Intel Sapphire Rapids (family 6), where passes 256 and 512 deep were no faster.
    pub fn for_cpu(kernel: Kernel) -> Blocking {
        let Some((vendor, family)) = cpu_family() else {
            return Blocking::DEFAULT;
        };
        match (vendor.as_str(), family, kernel) {
            ("AuthenticAMD", 26, Kernel::Avx512) => Blocking {
                short_panels: 4,
                ..Blocking::DEFAULT
            },
            _ => Blocking::DEFAULT,
        }
    }

    /// The blocks `LLADA_BLOCKING` names, if it is set (and not empty).
    pub fn from_env() -> Result<Option<Blocking>, LoadError> {
        match std::env::var("LLADA_BLOCKING") {
            Ok(text) if !text.is_empty() => text.parse().map(Some),
            _ => Ok(None),
        }
    }
}

impl Default for Blocking {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Blocking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.short_panels != self.panels {
            write!(f, "{}/", self.short_columns())?;
        }
        write!(f, "{}x{}", self.columns(), self.depth())
    }
}

impl FromStr for Blocking {
    type Err = LoadError;

    /// `COLUMNSxDEPTH` or `SHORT/COLUMNSxDEPTH`, e.g. `128x1024` or `64/128x1024`.
    fn from_str(text: &str) -> Result<Self, LoadError> {
        let number = |s: &str| s.trim().parse::<usize>().ok();
        let parsed = text.split_once('x').and_then(|(widths, depth)| {
            let (short, columns) = match widths.split_once('/') {
                Some((short, columns)) => (number(short)?, number(columns)?),
                None => (number(widths)?, number(widths)?),
            };
            Some((short, columns, number(depth)?))
        });
        let Some((short, columns, depth)) = parsed else {
            return Err(LoadError::InvalidBlocking {
                text: text.to_string(),
                why: "expected COLUMNSxDEPTH or SHORT/COLUMNSxDEPTH, e.g. 128x1024",
            });
        };
        Blocking::with_short_columns(short, columns, depth).map_err(|e| match e {
            LoadError::InvalidBlocking { why, .. } => LoadError::InvalidBlocking {
                text: text.to_string(),
                why,
            },
            other => other,
        })
    }
}

/// The CPU's vendor and family as CPUID reports them (x86-64), e.g. `("AuthenticAMD", 26)`;
/// `None` on other architectures.
pub fn cpu_family() -> Option<(String, u32)> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID exists on every x86-64 CPU, and leaves 0 and 1 on every one.
        #[allow(unused_unsafe)]
        let (vendor, signature) = unsafe { (__cpuid(0), __cpuid(1).eax) };
        let mut name = Vec::with_capacity(12);
        for word in [vendor.ebx, vendor.edx, vendor.ecx] {
            name.extend_from_slice(&word.to_le_bytes());
        }
        let base = (signature >> 8) & 0xf;
        let family = if base == 0xf {
            base + ((signature >> 20) & 0xff)
        } else {
            base
        };
        Some((String::from_utf8_lossy(&name).into_owned(), family))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blockings_round_trip_and_bad_ones_name_what_is_wrong() {
        for blocking in Blocking::CANDIDATES {
            assert_eq!(blocking.to_string().parse::<Blocking>().unwrap(), blocking);
        }
        assert_eq!("128x1024".parse::<Blocking>().unwrap(), Blocking::DEFAULT);
        let short = "64/128x1024".parse::<Blocking>().unwrap();
        assert_eq!(
            (short.short_columns(), short.columns(), short.depth()),
            (64, 128, 1024)
        );
        assert_eq!(
            (short.panels(64), short.panels(65)),
            (4, 8),
            "the short width up to SHORT_ROWS rows"
        );
        for (text, said) in [
            ("120x1024", "multiple of 16"),
            ("512x512", "256"),
            ("0/128x512", "from 16"),
            ("128x2048", "1024"),
            ("128x100", "multiple of 16"),
            ("128", "COLUMNSxDEPTH"),
            ("ax512", "COLUMNSxDEPTH"),
            ("64/x512", "COLUMNSxDEPTH"),
        ] {
            let err = text.parse::<Blocking>().unwrap_err();
            let message = err.to_string();
            assert!(message.contains(text), "{message}");
            assert!(message.contains(said), "{message}");
            assert_eq!(err.kind(), llada_core::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn the_table_picks_a_candidate_for_every_kernel() {
        for kernel in Kernel::ALL {
            assert!(Blocking::CANDIDATES.contains(&Blocking::for_cpu(kernel)));
        }
        #[cfg(target_arch = "x86_64")]
        {
            let (vendor, family) = cpu_family().unwrap();
            assert_eq!(vendor.len(), 12, "{vendor}");
            assert!(family >= 6, "{vendor} family {family}");
        }
    }
}
