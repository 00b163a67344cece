//! Matrix products: `matmul` (2-D, or batched 3-D) and `linear` (`x W^T + b`, PyTorch's
//! weight layout `(out_features, in_features)`), through the GEMM kernel with strided views.

use crate::autograd::output;
use crate::error::{Result, shape_err};
use crate::kernels::gemm::{MatRef, sgemm_par};
use crate::ops::LayerInputs;
use crate::tensor::Tensor;

/// Matrix product of `(m, k) x (k, n)`, or batched `(b, m, k) x (b, k, n)`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "matmul";
    let (sa, sb) = (a.shape().to_vec(), b.shape().to_vec());
    let ok = match (sa.len(), sb.len()) {
        (2, 2) => sa[1] == sb[0],
        (3, 3) => sa[0] == sb[0] && sa[2] == sb[1],
        _ => false,
    };
    if !ok {
        return shape_err(
            OP,
            format!(
                "cannot multiply {sa:?} by {sb:?}: need (m, k) x (k, n) or (b, m, k) x (b, k, n)"
            ),
        );
    }
    let batched = sa.len() == 3;
    let (bt, m, k, n) = if batched {
        (sa[0], sa[1], sa[2], sb[2])
    } else {
        (1, sa[0], sa[1], sb[1])
    };
    let mut y = vec![0f32; bt * m * n];
    {
        let (ad, bd) = (a.data(), b.data());
        for i in 0..bt {
            sgemm_par(
                m,
                k,
                n,
                MatRef::rm(&ad[i * m * k..], k),
                MatRef::rm(&bd[i * k * n..], n),
                0.0,
                &mut y[i * m * n..],
                n,
            );
        }
    }
    let out_shape = if batched { vec![bt, m, n] } else { vec![m, n] };
    let (ac, bc) = (a.clone(), b.clone());
    let (ra, rb) = (a.requires_grad(), b.requires_grad());
    Ok(output(OP, y, out_shape, &[a, b], move |g| {
        let gd = g.data();
        let da = ra.then(|| {
            // dA = G B^T
            let bd = bc.data();
            let mut da = vec![0f32; bt * m * k];
            for i in 0..bt {
                sgemm_par(
                    m,
                    n,
                    k,
                    MatRef::rm(&gd[i * m * n..], n),
                    MatRef::rm_t(&bd[i * k * n..], n),
                    0.0,
                    &mut da[i * m * k..],
                    k,
                );
            }
            Tensor::make(da, ac.shape().to_vec(), false, None)
        });
        let db = rb.then(|| {
            // dB = A^T G
            let ad = ac.data();
            let mut db = vec![0f32; bt * k * n];
            for i in 0..bt {
                sgemm_par(
                    k,
                    m,
                    n,
                    MatRef::rm_t(&ad[i * m * k..], k),
                    MatRef::rm(&gd[i * m * n..], n),
                    0.0,
                    &mut db[i * k * n..],
                    n,
                );
            }
            Tensor::make(db, bc.shape().to_vec(), false, None)
        });
        Ok(vec![da, db])
    }))
}

/// Fully connected layer: `y = x W^T + b`.
///
/// # Shapes
/// x: `(..., in_features)`; weight: `(out_features, in_features)`; bias: `(out_features)`;
/// output: `(..., out_features)`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "linear";
    crate::ops::expect_rank(OP, "weight", w, 2, "(out_features, in_features)")?;
    let (out_f, in_f) = (w.shape()[0], w.shape()[1]);
    if x.rank() == 0 || x.shape()[x.rank() - 1] != in_f {
        return shape_err(
            OP,
            format!(
                "input {:?} must end in in_features = {in_f} (weight {:?})",
                x.shape(),
                w.shape()
            ),
        );
    }
    if let Some(b) = b {
        if b.shape() != [out_f] {
            return shape_err(
                OP,
                format!("bias has shape {:?}, expected [{out_f}]", b.shape()),
            );
        }
    }
    let rows = x.numel() / in_f.max(1);
    let rows = if in_f == 0 {
        x.shape()[..x.rank() - 1].iter().product()
    } else {
        rows
    };
    let mut y = vec![0f32; rows * out_f];
    if let Some(b) = b {
        let bd = b.data();
        for r in y.chunks_mut(out_f.max(1)) {
            r.copy_from_slice(&bd[..r.len()]);
        }
    }
    sgemm_par(
        rows,
        in_f,
        out_f,
        MatRef::rm(&x.data(), in_f),
        MatRef::rm_t(&w.data(), in_f),
        1.0,
        &mut y,
        out_f,
    );
    let mut out_shape = x.shape().to_vec();
    *out_shape.last_mut().unwrap_or(&mut 0) = out_f;
    let li = LayerInputs::new(x, w, b);
    let (rx, rw, rb, has_b) = (li.grad_x, li.grad_w, li.grad_b, li.has_b);
    let (xc, wc) = (x.clone(), w.clone());
    Ok(output(OP, y, out_shape, &li.list, move |g| {
        let gd = g.data();
        let dx = rx.then(|| {
            let mut dx = vec![0f32; rows * in_f];
            sgemm_par(
                rows,
                out_f,
                in_f,
                MatRef::rm(&gd, out_f),
                MatRef::rm(&wc.data(), in_f),
                0.0,
                &mut dx,
                in_f,
            );
            Tensor::make(dx, xc.shape().to_vec(), false, None)
        });
        let dw = rw.then(|| {
            let mut dw = vec![0f32; out_f * in_f];
            sgemm_par(
                out_f,
                rows,
                in_f,
                MatRef::rm_t(&gd, out_f),
                MatRef::rm(&xc.data(), in_f),
                0.0,
                &mut dw,
                in_f,
            );
            Tensor::make(dw, wc.shape().to_vec(), false, None)
        });
        let mut grads = vec![dx, dw];
        if has_b {
            grads.push(rb.then(|| {
                let mut db = vec![0f64; out_f];
                for r in gd.chunks(out_f.max(1)) {
                    for (a, v) in db.iter_mut().zip(r) {
                        *a += *v as f64;
                    }
                }
                Tensor::make(
                    db.into_iter().map(|v| v as f32).collect(),
                    vec![out_f],
                    false,
                    None,
                )
            }));
        }
        Ok(grads)
    }))
}
