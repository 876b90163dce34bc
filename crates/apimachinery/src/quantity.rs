//! Kubernetes resource quantities (`500m`, `1.5`, `256Gi`, `1e3`) read as whole milli-units,
//! rounded up as upstream's `Quantity.MilliValue` does, so that CPU (`100m` = 100) and bytes
//! (`1Ki` = 1,024,000) compare with the same integer arithmetic. Hand-written: no crate parses
//! quantities (kube-cel's parser is private), and the grammar is small.

/// A quantity that does not follow Kubernetes' grammar.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a quantity: it must match '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
pub struct QuantityError(pub String);

/// The largest magnitude kept; bigger quantities saturate instead of overflowing.
const LIMIT: i128 = i128::MAX / 1024;

/// Parses `text` into milli-units, rounded up.
pub fn milli(text: &str) -> Result<i128, QuantityError> {
    let bad = || QuantityError(text.to_string());
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(bad());
    }
    let (binary_shift, mut exponent) = suffix_scale(suffix).ok_or_else(bad)?;
    let mut digits: i128 = 0;
    for byte in whole.bytes().chain(fraction.bytes()) {
        digits = digits
            .saturating_mul(10)
            .saturating_add(i128::from(byte - b'0'));
    }
    exponent = i32::try_from(fraction.len())
        .ok()
        .and_then(|digits| exponent.checked_add(3)?.checked_sub(digits))
        .ok_or_else(bad)?;
    let mut value = digits.saturating_mul(1i128 << binary_shift).min(LIMIT);
    if exponent >= 0 {
        for _ in 0..exponent.min(40) {
            value = value.saturating_mul(10).min(LIMIT);
        }
    } else {
        let divisor = 10i128.checked_pow(exponent.unsigned_abs()).unwrap_or(LIMIT);
        value = (value + divisor - 1) / divisor;
    }
    Ok(if negative { -value } else { value })
}

/// The suffix as (binary shift, decimal exponent), or `None` when it is not one.
fn suffix_scale(suffix: &str) -> Option<(u32, i32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E'])?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (0, exponent.parse().ok()?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_should_read_as_milli_units_rounded_up() {
        for (text, expected) in [
            ("100m", 100),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            ("2k", 2_000_000),
            ("1Ki", 1_024_000),
            ("256Gi", 256 * (1i128 << 30) * 1000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("1n", 1),
            ("+3", 3000),
            ("-1", -1000),
            (".5", 500),
        ] {
            assert_eq!(milli(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn malformed_quantities_should_be_refused() {
        for text in ["", "abc", "1.2.3", "1Xi", "1e", "m", "."] {
            assert!(milli(text).is_err(), "{text}");
        }
    }

    #[test]
    fn huge_quantities_should_saturate_instead_of_overflowing() {
        assert_eq!(
            milli("9Ei9999999999999999999999"),
            Err(QuantityError("9Ei9999999999999999999999".into()))
        );
        assert!(milli("99999999999999999999999999999999999999Ei").unwrap() >= LIMIT);
        assert!(milli("1e2147483647").is_err());
    }
}
