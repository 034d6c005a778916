//! Floats as xapi-rrd prints them.

/// xapi-rrd's `f_to_s`: `%0.15g` for normal numbers, `0.0` for zero, `NaN`, `Infinity` and
/// `-Infinity` (the forms C# and JavaScript read).
pub fn f_to_s(f: f64) -> String {
    let mut s = String::new();
    push_f(&mut s, f);
    s
}

/// Appends [`f_to_s`]`(f)` to `out`, without allocating (the export's hot path).
pub fn push_f(out: &mut String, f: f64) {
    use std::fmt::Write;
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == 0.0 {
        out.push_str("0.0");
    } else {
        // %.15g is %.14e's digits and exponent, laid out as %e when exp < -4 or exp >= 15 and
        // as a plain decimal otherwise, trailing zeros removed.
        let mut buf = StackBuf::default();
        let _ = write!(buf, "{:.14e}", f);
        let text = buf.as_str();
        let (mant, exp) = text.split_once('e').expect("exponent form");
        let exp: i32 = exp.parse().expect("exponent");
        let (neg, mant) = match mant.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, mant),
        };
        // The 15 significant digits, without the point.
        let mut digits = [0u8; 15];
        let mut n = 0;
        for b in mant.bytes().filter(u8::is_ascii_digit) {
            digits[n] = b;
            n += 1;
        }
        let mut last = n;
        while last > 1 && digits[last - 1] == b'0' {
            last -= 1;
        }
        let d = &digits[..last];
        if neg {
            out.push('-');
        }
        if !(-4..15).contains(&exp) {
            out.push(d[0] as char);
            if d.len() > 1 {
                out.push('.');
                d[1..].iter().for_each(|&c| out.push(c as char));
            }
            let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        } else if exp < 0 {
            out.push_str("0.");
            (0..(-exp - 1)).for_each(|_| out.push('0'));
            d.iter().for_each(|&c| out.push(c as char));
        } else {
            let int = exp as usize + 1;
            for k in 0..int {
                out.push(*d.get(k).unwrap_or(&b'0') as char);
            }
            if d.len() > int {
                out.push('.');
                d[int..].iter().for_each(|&c| out.push(c as char));
            }
        }
    }
}

/// A small stack buffer for one formatted number.
#[derive(Default)]
struct StackBuf {
    b: [u8; 32],
    n: usize,
}

impl StackBuf {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.b[..self.n]).expect("ASCII")
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.n + s.len();
        if end > self.b.len() {
            return Err(std::fmt::Error);
        }
        self.b[self.n..end].copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

/// The straightforward `%.15g` (two formatting passes), the reference the fast one is
/// tested against.
#[cfg(test)]
fn reference(f: f64) -> String {
    let e = format!("{:.14e}", f);
    let (mant, exp) = e.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    if !(-4..15).contains(&exp) {
        format!(
            "{}e{}{:02}",
            strip_zeros(mant),
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    } else {
        strip_zeros(&format!("{:.*}", (14 - exp) as usize, f)).to_owned()
    }
}

#[cfg(test)]
fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// OCaml's `float_of_string` for the forms xapi-rrd writes and reads (`NaN`, `Infinity`,
/// `-inf`, decimals, exponents).
pub(crate) fn parse_f(s: &str) -> Option<f64> {
    let t = s.trim();
    t.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_printf_g() {
        assert_eq!(f_to_s(0.0), "0.0");
        assert_eq!(f_to_s(1.0), "1");
        assert_eq!(f_to_s(0.5), "0.5");
        assert_eq!(f_to_s(-3.0), "-3");
        assert_eq!(f_to_s(209715200.0), "209715200");
        assert_eq!(f_to_s(1e20), "1e+20");
        assert_eq!(f_to_s(1.5e-7), "1.5e-07");
        assert_eq!(f_to_s(0.1), "0.1");
        assert_eq!(f_to_s(f64::NAN), "NaN");
        assert_eq!(f_to_s(f64::INFINITY), "Infinity");
        assert_eq!(f_to_s(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(parse_f("Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_f("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_f("NaN").unwrap().is_nan());
        assert_eq!(parse_f("0.5000"), Some(0.5));
        assert_eq!(f_to_s(123456789012345.0), "123456789012345");
        assert_eq!(f_to_s(1234567890123456.0), "1.23456789012346e+15");
        assert_eq!(f_to_s(0.0001), "0.0001");
        assert_eq!(f_to_s(-0.00001234), "-1.234e-05");
        assert_eq!(f_to_s(16.469999313354492), "16.4699993133545");
    }

    #[test]
    fn fast_form_matches_the_reference() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..200_000u64 {
            // xorshift bits as floats of every magnitude, plus f32-rounded values.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x);
            let g = (i as f64 * 0.37).sin() * 10f64.powi((i % 40) as i32 - 20);
            for v in [f, g, g as f32 as f64] {
                if v.is_finite() && v != 0.0 {
                    assert_eq!(f_to_s(v), reference(v), "{v:e}");
                }
            }
        }
    }
}
