//! Value parsers shared by the commands' flags (one place, so that every duration flag reads
//! `60s`, `500ms`, `2m` or `3h` the same way).

/// Parse `60`, `60s`, `1.5s`, `500ms`, `2m`, `3h` into seconds.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60.0)
    } else if let Some(v) = t.strip_suffix('h') {
        (v, 3600.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if (v * scale).is_finite() && v >= 0.0 => Ok(v * scale),
        _ => Err(format!("expected a duration like 60s, 500ms, 2m or 3h; got {text:?}")),
    }
}

/// A timeout between 0.1 s and 1 h (`10s`, `500ms`, `2m`).
pub fn parse_timeout(text: &str) -> Result<f64, String> {
    let s = parse_seconds(text)?;
    if (0.1..=3600.0).contains(&s) { Ok(s) } else { Err(format!("must be 0.1s to 1h; got {text:?}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_unit_and_timeouts_stay_in_range() {
        assert_eq!(parse_seconds("60").unwrap(), 60.0);
        assert_eq!(parse_seconds(" 1.5s ").unwrap(), 1.5);
        assert_eq!(parse_seconds("500ms").unwrap(), 0.5);
        assert_eq!(parse_seconds("2m").unwrap(), 120.0);
        assert_eq!(parse_seconds("3h").unwrap(), 10800.0);
        for bad in ["", "-1s", "abc", "1e400s", "NaN"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_timeout("250ms").unwrap(), 0.25);
        assert!(parse_timeout("50ms").unwrap_err().contains("0.1s to 1h"));
        assert!(parse_timeout("2h").is_err());
    }
}
