//! Floats as xapi-rrd prints them.

/// xapi-rrd's `f_to_s`: `%0.15g` for normal numbers, `0.0` for zero, `NaN`, `Infinity` and
/// `-Infinity` (the forms C# and JavaScript read).
pub fn f_to_s(f: f64) -> String {
    let mut s = String::new();
    push_f(&mut s, f);
    s
}

/// Appends [`f_to_s`]`(f)` to `out` without an intermediate allocation for the common cases.
pub fn push_f(out: &mut String, f: f64) {
    use std::fmt::Write;
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == 0.0 {
        out.push_str("0.0");
    } else {
        // %.15g: 15 significant digits, exponent form when exp < -4 or exp >= 15, trailing
        // zeros removed.
        let e = format!("{:.14e}", f);
        let (mant, exp) = e.split_once('e').expect("exponent form");
        let exp: i32 = exp.parse().expect("exponent");
        if !(-4..15).contains(&exp) {
            let m = strip_zeros(mant);
            let _ = write!(
                out,
                "{m}e{}{:02}",
                if exp < 0 { '-' } else { '+' },
                exp.abs()
            );
        } else {
            let s = format!("{:.*}", (14 - exp) as usize, f);
            out.push_str(strip_zeros(&s));
        }
    }
}

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
    }
}
