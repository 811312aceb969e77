//! Resource quantities ("500m", "128Mi", "1e3"): syntax and value.

/// Kubernetes' message for a quantity that does not parse.
pub(crate) const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// The value of a quantity, or `None` when its syntax is invalid.
/// Grammar: `[+-]` then digits with an optional fraction (`1`, `0.5`,
/// `.5`), then nothing, a binary suffix (Ki Mi Gi Ti Pi Ei), a decimal
/// suffix (n u m k M G T P E) or an exponent (`e3`, `E-2`).
pub fn parse(s: &str) -> Option<f64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    let num_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_len);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let base: f64 = format!(
        "{}.{}",
        if int.is_empty() { "0" } else { int },
        if frac.is_empty() { "0" } else { frac }
    )
    .parse()
    .ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exp => {
            let digits = exp.strip_prefix(['e', 'E'])?;
            let unsigned = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned.is_empty()
                || unsigned.len() > 3
                || !unsigned.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            10f64.powi(digits.parse::<i32>().ok()?)
        }
    };
    Some(sign * base * multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn quantities() {
        let ok = [
            ("100m", 0.1),
            ("1", 1.0),
            ("0.5", 0.5),
            (".5", 0.5),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("1G", 1e9),
            ("1e3", 1000.0),
            ("2E-1", 0.2),
            ("-1", -1.0),
            ("+4k", 4000.0),
            ("1Ki", 1024.0),
        ];
        for (s, v) in ok {
            let got = parse(s).unwrap_or_else(|| panic!("{s}"));
            assert!((got - v).abs() < 1e-9 * v.abs().max(1.0), "{s}: {got}");
        }
        for s in [
            "", "abc", "1.2.3", "1Mb", "m", "1 Gi", "1e", "1e+", "Mi", ".", "1ki", "1e99999",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }
}
