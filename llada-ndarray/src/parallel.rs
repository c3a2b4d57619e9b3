//! The one primitive through which parallel tasks write a shared buffer: [`Disjoint`], a
//! slice that tasks split into ranges no two of them share.

use std::marker::PhantomData;
use std::ops::Range;

use crate::threads::Pool;

/// A mutable slice handed to the tasks of one parallel call, each of which writes its own
/// ranges of it. Taking a range is `unsafe`: the caller promises that no two live ranges
/// overlap; bounds are always checked.
#[derive(Debug)]
pub(crate) struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: PhantomData<&'a mut [T]>,
}

impl<T> Clone for Disjoint<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Disjoint<'_, T> {}

// SAFETY: tasks only ever take disjoint ranges (the contract of `range` and `at`), so sharing
// the pointer between threads gives each element at most one writer.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// Lends `data` to parallel tasks for `'a`.
    pub(crate) fn new(data: &'a mut [T]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
            _slice: PhantomData,
        }
    }

    /// Elements `range` of the slice.
    ///
    /// # Panics
    /// If the range is not inside the slice.
    ///
    /// # Safety
    /// No other live result of `range` or `at` may overlap this one.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range(&self, range: Range<usize>) -> &'a mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range {range:?} outside a slice of {}",
            self.len
        );
        // SAFETY: in bounds (checked), and disjoint from every other live range (the caller's
        // contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// A pointer to `len` elements at `offset`, for kernels that write through raw pointers.
    ///
    /// # Panics
    /// If the elements are not inside the slice.
    ///
    /// # Safety
    /// As [`range`](Self::range): nobody else reads or writes these elements while the
    /// pointer is used.
    pub(crate) unsafe fn at(&self, offset: usize, len: usize) -> *mut T {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "{len} elements at {offset} outside a slice of {}",
            self.len
        );
        // SAFETY: in bounds (checked).
        unsafe { self.ptr.add(offset) }
    }
}

/// Rows per task of the row-wise operations (norms, rotary embedding, SwiGLU).
const ROW_CHUNK: usize = 32;

/// Runs `f(row index, row)` over the first `rows` rows of `data` (rows of `cols` values), in
/// chunks of rows across the pool.
pub(crate) fn par_rows<S: Send>(
    pool: &Pool<S>,
    data: &mut [f32],
    rows: usize,
    cols: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let out = Disjoint::new(&mut data[..rows * cols]);
    pool.run_sized(rows.div_ceil(ROW_CHUNK), rows * cols * 4, &|task, _| {
        let chunk = task * ROW_CHUNK..((task + 1) * ROW_CHUNK).min(rows);
        // SAFETY: each task owns its own rows.
        let part = unsafe { out.range(chunk.start * cols..chunk.end * cols) };
        for (i, row) in part.chunks_exact_mut(cols).enumerate() {
            f(chunk.start + i, row);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_fill_their_own_rows() {
        let pool = Pool::new(vec![(); 3]).unwrap();
        let mut data = vec![0.0f32; 100 * 7];
        par_rows(&pool, &mut data, 100, 7, &|r, row| row.fill(r as f32));
        for (r, row) in data.chunks_exact(7).enumerate() {
            assert!(row.iter().all(|&v| v == r as f32));
        }
    }

    #[test]
    #[should_panic(expected = "outside a slice")]
    fn a_range_past_the_end_panics_instead_of_writing() {
        let mut data = [0u8; 4];
        let shared = Disjoint::new(&mut data);
        // SAFETY: the only range taken.
        let _ = unsafe { shared.range(2..5) };
    }
}
