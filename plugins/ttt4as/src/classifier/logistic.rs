//! L2-regularized logistic regression on the primal, by L-BFGS with a backtracking
//! (Armijo) line search:
//! `min_w 1/2 |w|^2 + sum_i C_i log(1 + exp(-y_i (w . x_i + w_b B)))`,
//! with the intercept as an extra constant feature `B` as in liblinear (see `linear_svm`).

use super::{dot, FitInfo, LinearModel, TrainingSet};

#[derive(Debug, Clone, PartialEq)]
pub struct LogisticConfig {
    pub c: f64,
    pub bias: f64,
    /// Stop when `|grad| <= tol * |grad at w = 0|` (liblinear's primal criterion).
    pub tol: f64,
    pub max_iter: usize,
}

impl Default for LogisticConfig {
    fn default() -> Self {
        Self { c: 0.001, bias: 1.0, tol: 0.01, max_iter: 200 }
    }
}

/// `log(1 + exp(-m))` without overflow.
fn log_loss(m: f64) -> f64 {
    if m > 0.0 {
        (-m).exp().ln_1p()
    } else {
        -m + m.exp().ln_1p()
    }
}

struct Problem<'a> {
    set: &'a TrainingSet<'a>,
    c: Vec<f64>,
    bias: f32,
}

impl Problem<'_> {
    /// Objective and gradient at `v` (`d` weights then the bias weight).
    fn eval(&self, v: &[f64], grad: &mut [f64]) -> f64 {
        let d = self.set.d;
        let w32: Vec<f32> = v[..d].iter().map(|&x| x as f32).collect();
        let wb = v[d];
        grad.copy_from_slice(v);
        let mut f = 0.5 * v.iter().map(|x| x * x).sum::<f64>();
        for i in 0..self.set.len() {
            let xi = self.set.row(i);
            let yi = f64::from(self.set.y[i]);
            let m = yi * (f64::from(dot(&w32, xi)) + wb * f64::from(self.bias));
            f += self.c[i] * log_loss(m);
            // d/dm log(1 + e^-m) = -1 / (1 + e^m)
            let coef = -self.c[i] * yi / (1.0 + m.exp());
            for (g, &x) in grad[..d].iter_mut().zip(xi) {
                *g += coef * f64::from(x);
            }
            grad[d] += coef * f64::from(self.bias);
        }
        f
    }
}

pub fn fit(set: &TrainingSet<'_>, cfg: &LogisticConfig) -> (LinearModel, FitInfo) {
    const MEMORY: usize = 10;
    let d = set.d;
    let c = set.y.iter().map(|&y| cfg.c * if y > 0.0 { set.class_weight.0 } else { set.class_weight.1 }).collect();
    let problem = Problem { set, c, bias: cfg.bias as f32 };
    let dim = d + 1;
    let mut v = vec![0.0f64; dim];
    let mut g = vec![0.0f64; dim];
    let mut f = problem.eval(&v, &mut g);
    let g0 = norm(&g);
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::with_capacity(MEMORY);
    let mut iterations = 0;
    let mut converged = norm(&g) <= cfg.tol * g0;
    let (mut v_new, mut g_new) = (vec![0.0; dim], vec![0.0; dim]);
    while !converged && iterations < cfg.max_iter {
        iterations += 1;
        // Two-loop recursion: direction = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dotf(s, &q);
            q.iter_mut().zip(y).for_each(|(q, &y)| *q -= a * y);
            alphas.push(a);
        }
        let gamma = history.last().map_or(1.0 / g0.max(1e-12), |(s, y, _)| dotf(s, y) / dotf(y, y));
        q.iter_mut().for_each(|q| *q *= gamma);
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dotf(y, &q);
            q.iter_mut().zip(s).for_each(|(q, &s)| *q += (a - b) * s);
        }
        let dir: Vec<f64> = q.iter().map(|q| -q).collect();
        let slope = dotf(&g, &dir);
        if slope >= 0.0 {
            history.clear();
            continue;
        }
        let mut step = 1.0;
        let mut f_new;
        loop {
            v_new.iter_mut().zip(&v).zip(&dir).for_each(|((n, &v), &d)| *n = v + step * d);
            f_new = problem.eval(&v_new, &mut g_new);
            if f_new <= f + 1e-4 * step * slope || step < 1e-10 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = v_new.iter().zip(&v).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dotf(&s, &y);
        if sy > 1e-12 {
            if history.len() == MEMORY {
                history.remove(0);
            }
            history.push((s, y, 1.0 / sy));
        }
        std::mem::swap(&mut v, &mut v_new);
        std::mem::swap(&mut g, &mut g_new);
        let progress = f - f_new;
        f = f_new;
        converged = norm(&g) <= cfg.tol * g0 || progress.abs() <= 1e-12 * f.abs().max(1.0);
    }
    let w = v[..d].iter().map(|&x| x as f32).collect();
    let b = (v[d] * cfg.bias) as f32;
    (LinearModel { w, b }, FitInfo { iterations, converged, support_vectors: set.len() })
}

fn dotf(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dotf(a, a).sqrt()
}
