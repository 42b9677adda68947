//! Least-squares lines through a series (live bytes over time): slope and goodness of fit, the
//! evidence of a "growing" site.
use serde::{Deserialize, Serialize};

/// A least-squares line through (t, live bytes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Bytes per second.
    pub slope: f64,
    /// Coefficient of determination, 0..=1: how well the line explains the points (the
    /// confidence of a "growing" call).
    pub r2: f64,
    pub points: usize,
    /// Seconds the points span.
    #[serde(default)]
    pub secs: f64,
}

/// The fit of `(x, y)` points, each weighing alike; `None` with fewer than two distinct x.
#[cfg(test)]
pub fn fit(points: &[(f64, f64)]) -> Option<Trend> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    // A flat series is explained perfectly by a flat line.
    let r2 = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Trend {
        slope,
        r2,
        points: points.len(),
        secs: points.last().map_or(0.0, |p| p.0) - points.first().map_or(0.0, |p| p.0),
    })
}

/// The fit of a series' `(t, y)` points, each weighted by the time it stands for (half the
/// gaps on either side): a series has a point per drain where a site is busy and only two
/// across an idle stretch, and a fit by points would weigh the busy times alone.
pub fn fit_over_time(points: &[(f64, f64)]) -> Option<Trend> {
    let n = points.len();
    if n < 2 {
        return None;
    }
    let w: Vec<f64> = (0..n)
        .map(|i| {
            let before = if i > 0 {
                points[i].0 - points[i - 1].0
            } else {
                0.0
            };
            let after = if i + 1 < n {
                points[i + 1].0 - points[i].0
            } else {
                0.0
            };
            (before + after) / 2.0
        })
        .collect();
    let sw: f64 = w.iter().sum();
    if sw <= 0.0 {
        return None;
    }
    let mx = points.iter().zip(&w).map(|(p, w)| w * p.0).sum::<f64>() / sw;
    let my = points.iter().zip(&w).map(|(p, w)| w * p.1).sum::<f64>() / sw;
    let sum = |f: &dyn Fn(&(f64, f64)) -> f64| -> f64 {
        points.iter().zip(&w).map(|(p, w)| w * f(p)).sum()
    };
    let sxx = sum(&|p| (p.0 - mx).powi(2));
    let sxy = sum(&|p| (p.0 - mx) * (p.1 - my));
    let syy = sum(&|p| (p.1 - my).powi(2));
    if sxx <= 0.0 {
        return None;
    }
    let r2 = if syy <= 0.0 {
        1.0
    } else {
        (sxy * sxy / (sxx * syy)).clamp(0.0, 1.0)
    };
    Some(Trend {
        slope: sxy / sxx,
        r2,
        points: n,
        secs: points[n - 1].0 - points[0].0,
    })
}
