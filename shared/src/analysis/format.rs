//! Numbers for explanations: at most four significant digits, no trailing zeros, plain
//! notation from 0.0001 up to a million and scientific notation outside, never `-0`.

/// `x` with up to four significant digits: `0.0512`, `12.5`, `123500`, `1.235e-7`, `5e9`.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 {
        return "0".to_owned(); // also -0.0
    }
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sci = format!("{x:.3e}"); // d.ddde±x, already rounded to four digits
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..6).contains(&exponent) {
        // The rounded value, printed with just enough decimals (none from 1000 up).
        let rounded: f64 = sci.parse().unwrap_or(x);
        let decimals = usize::try_from(3 - exponent).unwrap_or(0);
        trim(format!("{rounded:.decimals$}"))
    } else {
        format!("{}e{exponent}", trim(mantissa.to_owned()))
    }
}

/// [`num`] with an explicit `+` on positive values (`+0.049`, `-0.01`, `0`).
pub(crate) fn signed(x: f64) -> String {
    if x > 0.0 { format!("+{}", num(x)) } else { num(x) }
}

/// A U statistic: a multiple of one half, shown whole (`12`, `12.5`, `49950000`).
pub(crate) fn statistic(u: f64) -> String {
    if u.is_finite() && u.abs() < 1e15 {
        if u.fract() == 0.0 { format!("{u:.0}") } else { format!("{u:.1}") }
    } else {
        num(u)
    }
}

/// Drops trailing zeros after a decimal point, and the point itself if nothing follows.
fn trim(mut s: String) -> String {
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_significant_digits() {
        let cases = [
            (0.0, "0"),
            (-0.0, "0"),
            (0.051, "0.051"),
            (0.0012, "0.0012"),
            (12.0, "12"),
            (12.5, "12.5"),
            (-0.049, "-0.049"),
            (123_456.0, "123500"),
            (999_999.0, "1e6"),
            (9.9996, "10"),
            (0.000_123_45, "0.0001234"),
            (0.000_012_345, "1.234e-5"),
            (1.0 / 3.0, "0.3333"),
            (2.0 / 3.0, "0.6667"),
            (98.000_000_000_001, "98"),
            (5e9, "5e9"),
            (-1.23456e-7, "-1.235e-7"),
            (f64::MAX, "1.798e308"),
            (f64::MIN_POSITIVE, "2.225e-308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "NaN"),
        ];
        for (x, want) in cases {
            assert_eq!(num(x), want, "{x:e}");
        }
    }

    #[test]
    fn signs_and_statistics() {
        assert_eq!(signed(0.049), "+0.049");
        assert_eq!(signed(-0.049), "-0.049");
        assert_eq!(signed(0.0), "0");
        assert_eq!(signed(-0.0), "0");
        assert_eq!(statistic(12.0), "12");
        assert_eq!(statistic(12.5), "12.5");
        assert_eq!(statistic(49_950_000.0), "49950000");
    }
}
