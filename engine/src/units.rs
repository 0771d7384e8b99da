//! Sizes and bandwidths as users type them: `750GiB`, `2TB`, `1048576`; `512Kbps`, `20Mbps`.

/// Parses a size in bytes. Units B, KB/KiB, MB/MiB, GB/GiB, TB/TiB, PB/PiB (case-insensitive;
/// KB is 1000, KiB 1024); a bare number is bytes; a fraction is allowed (`1.5TB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "kib" => 1 << 10,
        "mb" => 1000u64.pow(2),
        "mib" => 1 << 20,
        "gb" => 1000u64.pow(3),
        "gib" => 1 << 30,
        "tb" => 1000u64.pow(4),
        "tib" => 1 << 40,
        "pb" => 1000u64.pow(5),
        "pib" => 1 << 50,
        other => {
            return Err(format!("unknown size unit '{other}'; use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB, PB or PiB"));
        }
    };
    scale(number, multiplier).ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a bandwidth in bits per second: bps, Kbps, Mbps, Gbps (decimal, case-insensitive).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "bps" => 1,
        "kbps" => 1000,
        "mbps" => 1_000_000,
        "gbps" => 1_000_000_000,
        "" => return Err(format!("'{text}' needs a unit, e.g. 512Kbps or 20Mbps")),
        other => return Err(format!("unknown bandwidth unit '{other}'; use Kbps or Mbps (e.g. 512Kbps, 20Mbps)")),
    };
    scale(number, multiplier).ok_or_else(|| format!("'{text}' is too large"))
}

/// A byte count for people: `750.0 GiB`, `12 B`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// A bandwidth for people: `512 Kbps`, `20 Mbps`.
pub fn format_rate(bits_per_second: u64) -> String {
    if bits_per_second >= 1_000_000 && bits_per_second.is_multiple_of(1_000_000) {
        format!("{} Mbps", bits_per_second / 1_000_000)
    } else if bits_per_second >= 1000 && bits_per_second.is_multiple_of(1000) {
        format!("{} Kbps", bits_per_second / 1000)
    } else {
        format!("{bits_per_second} bps")
    }
}

fn split_number(text: &str) -> Result<(&str, &str), String> {
    let text = text.trim();
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
        return Err(format!("'{text}' is not a number followed by a unit"));
    }
    Ok((number, unit.trim()))
}

/// number × multiplier, exactly, for a decimal number with an optional fraction.
fn scale(number: &str, multiplier: u64) -> Option<u64> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().ok()?;
    let mut total = whole.checked_mul(multiplier)?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).ok().filter(|d| *d <= 18)?;
        let numerator: u128 = fraction.parse().ok()?;
        let part = numerator * u128::from(multiplier) / 10u128.pow(digits);
        total = total.checked_add(u64::try_from(part).ok()?)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("750GiB"), Ok(750 << 30));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
        assert_eq!(parse_size("1PB"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_size("1.5 TiB"), Ok(3 << 39));
        assert_eq!(parse_size("10kib"), Ok(10240));
        assert_eq!(parse_size("3 B"), Ok(3));
    }

    #[test]
    fn bad_sizes_say_why() {
        for bad in ["", "GiB", "12XB", "-1GB", "1..2GB", ".5GB", "99999999999PiB", "1.2.3"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("12XB").unwrap_err().contains("unknown size unit"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("512Kbps"), Ok(512_000));
        assert_eq!(parse_rate("20Mbps"), Ok(20_000_000));
        assert_eq!(parse_rate("1023 mbps"), Ok(1_023_000_000));
        assert!(parse_rate("20").unwrap_err().contains("needs a unit"));
        assert!(parse_rate("20MB").is_err());
        assert_eq!(format_rate(512_000), "512 Kbps");
        assert_eq!(format_rate(20_000_000), "20 Mbps");
        assert_eq!(format_bytes(750 << 30), "750.0 GiB");
    }
}
