//! Seeded augmentation, applied on the fly to training samples only: flips, rotation (tilt),
//! zoom in and out, translation, crop with padding, brightness / contrast, random erasing.
//! Works on `(c, h, w)` samples in [0, 1], before normalisation.

use crate::rng::Rng;

/// Augmentation settings; zero (or false) disables each.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Augment {
    /// Probability of a horizontal flip.
    pub hflip: f32,
    /// Probability of a vertical flip.
    pub vflip: f32,
    /// Rotation by up to this many degrees either way.
    pub rotation: f32,
    /// Scale by a factor in [1 - zoom, 1 + zoom].
    pub zoom: f32,
    /// Shift by up to this fraction of the width and height.
    pub translate: f32,
    /// Pad by this many pixels and crop back at a random offset.
    pub crop_padding: usize,
    /// Add up to this much brightness either way.
    pub brightness: f32,
    /// Scale contrast by a factor in [1 - contrast, 1 + contrast].
    pub contrast: f32,
    /// Probability of erasing a random rectangle.
    pub erasing: f32,
}

impl Augment {
    /// Whether any augmentation is on.
    pub fn is_active(&self) -> bool {
        *self != Augment::default()
    }

    /// Augment one sample in place.
    pub fn apply(&self, x: &mut [f32], shape: &[usize], rng: &mut Rng) {
        if shape.len() != 3 {
            return;
        }
        let (c, h, w) = (shape[0], shape[1], shape[2]);
        if self.hflip > 0.0 && rng.uniform() < self.hflip {
            for row in x.chunks_mut(w) {
                row.reverse();
            }
        }
        if self.vflip > 0.0 && rng.uniform() < self.vflip {
            for plane in x.chunks_mut(h * w) {
                for r in 0..h / 2 {
                    for k in 0..w {
                        plane.swap(r * w + k, (h - 1 - r) * w + k);
                    }
                }
            }
        }
        let angle = if self.rotation > 0.0 {
            rng.uniform_range(-self.rotation, self.rotation)
                .to_radians()
        } else {
            0.0
        };
        let scale = if self.zoom > 0.0 {
            rng.uniform_range(1.0 - self.zoom, 1.0 + self.zoom)
        } else {
            1.0
        };
        let (mut tx, mut ty) = if self.translate > 0.0 {
            (
                rng.uniform_range(-self.translate, self.translate) * w as f32,
                rng.uniform_range(-self.translate, self.translate) * h as f32,
            )
        } else {
            (0.0, 0.0)
        };
        if self.crop_padding > 0 {
            let p = self.crop_padding as isize;
            tx += (rng.below(2 * self.crop_padding + 1) as isize - p) as f32;
            ty += (rng.below(2 * self.crop_padding + 1) as isize - p) as f32;
        }
        if angle != 0.0 || scale != 1.0 || tx != 0.0 || ty != 0.0 {
            affine(x, c, h, w, angle, scale, tx, ty);
        }
        if self.brightness > 0.0 || self.contrast > 0.0 {
            let b = if self.brightness > 0.0 {
                rng.uniform_range(-self.brightness, self.brightness)
            } else {
                0.0
            };
            let k = if self.contrast > 0.0 {
                rng.uniform_range(1.0 - self.contrast, 1.0 + self.contrast)
            } else {
                1.0
            };
            for plane in x.chunks_mut(h * w) {
                let mean = plane.iter().sum::<f32>() / plane.len() as f32;
                for v in plane.iter_mut() {
                    *v = ((*v - mean) * k + mean + b).clamp(0.0, 1.0);
                }
            }
        }
        if self.erasing > 0.0 && rng.uniform() < self.erasing {
            // Area 2%..33% of the image, aspect ratio 0.3..3.3 (the usual random-erasing ranges).
            let area = rng.uniform_range(0.02, 0.33) * (h * w) as f32;
            let ratio = rng.uniform_range(0.3f32.ln(), 3.3f32.ln()).exp();
            let eh = ((area * ratio).sqrt().round() as usize).clamp(1, h);
            let ew = ((area / ratio).sqrt().round() as usize).clamp(1, w);
            let (r0, c0) = (rng.below(h - eh + 1), rng.below(w - ew + 1));
            for plane in x.chunks_mut(h * w) {
                for r in r0..r0 + eh {
                    plane[r * w + c0..r * w + c0 + ew].fill(0.0);
                }
            }
        }
    }
}

/// Rotate by `angle` and scale by `scale` about the centre, then shift by (tx, ty) pixels;
/// bilinear sampling, zero outside.
#[allow(clippy::too_many_arguments)]
fn affine(x: &mut [f32], c: usize, h: usize, w: usize, angle: f32, scale: f32, tx: f32, ty: f32) {
    let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
    let (s, co) = angle.sin_cos();
    let src = x.to_vec();
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for r in 0..h {
            for k in 0..w {
                // inverse map: output pixel -> source position
                let (dy, dx) = (r as f32 - cy - ty, k as f32 - cx - tx);
                let sx = (co * dx + s * dy) / scale + cx;
                let sy = (-s * dx + co * dy) / scale + cy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let at = |yy: f32, xx: f32| -> f32 {
                    if yy < 0.0 || xx < 0.0 || yy >= h as f32 || xx >= w as f32 {
                        0.0
                    } else {
                        plane[yy as usize * w + xx as usize]
                    }
                };
                let v = at(y0, x0) * (1.0 - fx) * (1.0 - fy)
                    + at(y0, x0 + 1.0) * fx * (1.0 - fy)
                    + at(y0 + 1.0, x0) * (1.0 - fx) * fy
                    + at(y0 + 1.0, x0 + 1.0) * fx * fy;
                x[ch * h * w + r * w + k] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Vec<f32> {
        (0..h * w).map(|i| i as f32 / (h * w) as f32).collect()
    }

    #[test]
    fn flips_mirror_the_image() {
        let a = Augment {
            hflip: 1.0,
            ..Default::default()
        };
        let mut x = ramp(2, 3);
        a.apply(&mut x, &[1, 2, 3], &mut Rng::new(0));
        let r = ramp(2, 3);
        assert_eq!(x, vec![r[2], r[1], r[0], r[5], r[4], r[3]]);
        let a = Augment {
            vflip: 1.0,
            ..Default::default()
        };
        let mut x = ramp(2, 3);
        a.apply(&mut x, &[1, 2, 3], &mut Rng::new(0));
        assert_eq!(x, vec![r[3], r[4], r[5], r[0], r[1], r[2]]);
    }

    #[test]
    fn identity_transform_leaves_the_image_and_zero_settings_do_nothing() {
        let mut x = ramp(5, 4);
        affine(&mut x, 1, 5, 4, 0.0, 1.0, 0.0, 0.0);
        for (a, b) in x.iter().zip(ramp(5, 4)) {
            assert!((a - b).abs() < 1e-6);
        }
        let mut y = ramp(5, 4);
        Augment::default().apply(&mut y, &[1, 5, 4], &mut Rng::new(1));
        assert_eq!(y, ramp(5, 4));
    }

    #[test]
    fn rotation_by_90_degrees_moves_a_corner() {
        let mut x = vec![0f32; 9];
        x[0] = 1.0; // top-left
        affine(&mut x, 1, 3, 3, std::f32::consts::FRAC_PI_2, 1.0, 0.0, 0.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(x[0] < 1e-5, "{x:?}");
    }

    #[test]
    fn augmentation_is_seeded_and_stays_in_range() {
        let a = Augment {
            rotation: 15.0,
            zoom: 0.1,
            translate: 0.1,
            crop_padding: 2,
            brightness: 0.2,
            contrast: 0.2,
            erasing: 1.0,
            hflip: 0.5,
            vflip: 0.5,
        };
        let (mut x, mut y) = (ramp(8, 8), ramp(8, 8));
        a.apply(&mut x, &[1, 8, 8], &mut Rng::new(4));
        a.apply(&mut y, &[1, 8, 8], &mut Rng::new(4));
        assert_eq!(x, y);
        assert!(x.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(x, ramp(8, 8));
    }
}
