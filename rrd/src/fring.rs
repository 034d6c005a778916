//! A fixed-size ring of `f32` values, newest last, as xapi-rrd's `Rrd_fring`: values outside
//! the ring's `[min, max]` are stored as NaN.

/// A ring of consolidated data points for one data source in one archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Fring {
    data: Vec<f32>,
    current: usize,
    min: f64,
    max: f64,
}

fn bound(min: f64, max: f64, x: f64) -> f64 {
    if x < min || x > max {
        f64::NAN
    } else {
        x
    }
}

impl Fring {
    /// A ring of `size` (at least 1) copies of `init` (NaN if out of `[min, max]`).
    pub fn new(size: usize, init: f64, min: f64, max: f64) -> Self {
        let size = size.max(1);
        Fring {
            data: vec![bound(min, max, init) as f32; size],
            current: size - 1,
            min,
            max,
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Never empty (kept for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends a value, overwriting the oldest.
    pub fn push(&mut self, e: f64) {
        self.current += 1;
        if self.current == self.data.len() {
            self.current = 0;
        }
        self.data[self.current] = bound(self.min, self.max, e) as f32;
    }

    /// The value `i` pushes ago (0 is the newest). Panics if `i >= len()`.
    pub fn peek(&self, i: usize) -> f64 {
        assert!(i < self.data.len(), "peek: index");
        let idx = if i <= self.current {
            self.current - i
        } else {
            self.data.len() + self.current - i
        };
        f64::from(self.data[idx])
    }

    /// The newest value.
    pub fn top(&self) -> f64 {
        f64::from(self.data[self.current])
    }

    /// All values, newest first.
    pub fn get(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.peek(i)).collect()
    }

    /// The bounds given at creation.
    pub fn bounds(&self) -> (f64, f64) {
        (self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_bounds() {
        let mut f = Fring::new(3, f64::NAN, 0.0, 10.0);
        assert!(f.top().is_nan());
        for v in [1.0, 2.0, 3.0, 4.0] {
            f.push(v);
        }
        assert_eq!(f.get(), vec![4.0, 3.0, 2.0]);
        f.push(11.0);
        assert!(f.top().is_nan());
        f.push(-1.0);
        assert!(f.peek(0).is_nan());
        assert_eq!(f.peek(2), 4.0);
    }
}
