//! Matrix products through `matrixmultiply`, with strides (so transposes cost nothing) and a
//! parallel split of large products across the rayon pool.

use rayon::prelude::*;

/// A strided read-only matrix view: element (i, j) is at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major view of a `rows x cols` matrix.
    pub fn rm(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major `rows x cols` matrix, as a `cols x rows` view.
    pub fn rm_t(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

fn span(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `C[m, n] = beta * C + A[m, k] * B[k, n]` on one thread. `c` is row-major with row stride `ldc`.
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.data.len() >= span(m, k, a.rs, a.cs), "sgemm: A too short");
    assert!(b.data.len() >= span(k, n, b.rs, b.cs), "sgemm: B too short");
    assert!(c.len() >= span(m, n, ldc, 1), "sgemm: C too short");
    if k == 0 {
        for i in 0..m {
            for v in &mut c[i * ldc..i * ldc + n] {
                *v *= beta;
            }
        }
        return;
    }
    // SAFETY: the asserts above bound every index matrixmultiply touches for these
    // dimensions and strides; `c` is borrowed mutably, so nothing else aliases it.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr(),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// Like [`sgemm`], split over the rows of C (or its columns when C is wide) across the rayon
/// pool when the product is large and the caller is not already inside a parallel region.
pub fn sgemm_par(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let threads = rayon::current_num_threads();
    let work = m as f64 * n as f64 * k as f64;
    if threads <= 1 || work < 2.0e6 || rayon::current_thread_index().is_some() {
        sgemm(m, k, n, a, b, beta, c, ldc);
        return;
    }
    let parts = (threads * 2).min(if m >= n { m } else { n }).max(1);
    if m >= n || m >= 64 * parts {
        // Split the rows of C: each part owns whole rows.
        let rows_per = m.div_ceil(parts);
        c[..span(m, n, ldc, 1)]
            .par_chunks_mut(rows_per * ldc)
            .enumerate()
            .for_each(|(p, cp)| {
                let r0 = p * rows_per;
                let rows = rows_per.min(m - r0);
                let asub = MatRef {
                    data: &a.data[r0 * a.rs..],
                    rs: a.rs,
                    cs: a.cs,
                };
                sgemm(rows, k, n, asub, b, beta, cp, ldc);
            });
    } else {
        // Split the columns of C: parts write disjoint column ranges of the same rows.
        let cols_per = n.div_ceil(parts).next_multiple_of(16).min(n);
        let cptr = SendPtr(c.as_mut_ptr());
        let clen = c.len();
        (0..n.div_ceil(cols_per)).into_par_iter().for_each(|p| {
            let c0 = p * cols_per;
            let cols = cols_per.min(n - c0);
            let bsub = MatRef {
                data: &b.data[c0 * b.cs..],
                rs: b.rs,
                cs: b.cs,
            };
            let base = cptr;
            // SAFETY: part p writes only columns [c0, c0 + cols) of each row, and the parts'
            // column ranges are disjoint; the slice stays within the borrowed `c`.
            let cs = unsafe { std::slice::from_raw_parts_mut(base.0.add(c0), clen - c0) };
            sgemm(m, k, cols, a, bsub, beta, cs, ldc);
        });
    }
}

/// A raw pointer that may cross threads; every use states why the writes are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: only used for disjoint writes, as documented at each use.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn sgemm_par_matches_naive_on_odd_shapes() {
        let mut r = Rng::new(1);
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (130, 70, 9),
            (9, 70, 300),
            (257, 129, 65),
            (4, 300, 1000),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| r.normal()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| r.normal()).collect();
            let want = naive(m, k, n, &a, &b);
            let mut c = vec![0f32; m * n];
            sgemm_par(
                m,
                k,
                n,
                MatRef::rm(&a, k),
                MatRef::rm(&b, n),
                0.0,
                &mut c,
                n,
            );
            for (x, y) in c.iter().zip(&want) {
                assert!(
                    (x - y).abs() < 1e-3 * (1.0 + y.abs()),
                    "{m}x{k}x{n}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn transposed_views() {
        let a = [1., 2., 3., 4., 5., 6.]; // 2x3
        let b = [1., 0., 0., 1., 1., 1.]; // 2x3, used as B^T (3x2)
        let mut c = [0f32; 4];
        sgemm(
            2,
            3,
            2,
            MatRef::rm(&a, 3),
            MatRef::rm_t(&b, 3),
            0.0,
            &mut c,
            2,
        );
        assert_eq!(c, [1., 6., 4., 15.]);
    }
}
