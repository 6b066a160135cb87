//! Kubernetes quantities (`5Gi`, `500M`, `1e9`) as numbers, for the sizes a spec names.

/// The value of a Kubernetes quantity (`5Gi`, `500M`, `1e9`, `1.5Ti`), or `None` when it is
/// not one.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().ok()?;
            10f64.powi(power)
        }
        _ => return None,
    };
    Some(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_kubernetes() {
        let cases = [
            ("5Gi", Some(5.0 * 1024f64.powi(3))),
            ("500M", Some(5e8)),
            ("1.5Ki", Some(1536.0)),
            ("1e3", Some(1000.0)),
            ("100m", Some(0.1)),
            ("12", Some(12.0)),
            ("Gi", None),
            ("5GB", None),
            ("-1Gi", None),
            ("", None),
            (".5Gi", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_quantity(text), expected, "{text}");
        }
    }
}
