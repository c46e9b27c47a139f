//! The query string and the value formats Jaeger's APIs take: repeated keys, Go durations,
//! Unix microseconds and RFC 3339 times.

use std::time::{SystemTime, UNIX_EPOCH};

/// A parameter value the APIs cannot read; the message names the parameter or the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadParam(pub(crate) String);

/// The decoded `key=value` pairs of a query string, in order (a key may repeat).
pub(crate) fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decodes `text`, `+` as a space; an invalid escape is kept as it is, and bytes that
/// are not UTF-8 become U+FFFD.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key`, if given and not empty.
pub(crate) fn first<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Every non-empty value of `key`.
pub(crate) fn all<'a>(
    params: &'a [(String, String)],
    key: &'a str,
) -> impl Iterator<Item = &'a str> {
    params
        .iter()
        .filter(move |(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// A Go duration (`1h30m`, `1.5s`, `250ms`, `10us`, `10µs`, `3ns`, `0`) in nanoseconds.
///
/// # Errors
/// A message naming the value.
pub(crate) fn go_duration(text: &str) -> Result<u64, BadParam> {
    let bad = || {
        BadParam(format!(
            "`{text}` is not a duration (such as 1.5s, 250ms or 1h30m)"
        ))
    };
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut total: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total >= u64::MAX as f64 {
        return Err(bad());
    }
    // Whole nanoseconds: the fraction of a nanosecond a decimal may leave is dropped.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(total as u64)
}

/// A lookback as the Jaeger UI sends it (`1h`, `2d`, a Go duration), in nanoseconds.
///
/// # Errors
/// A message naming the value.
pub(crate) fn lookback(text: &str) -> Result<u64, BadParam> {
    if let Some(days) = text.strip_suffix('d')
        && let Ok(days) = days.parse::<u64>()
    {
        return days
            .checked_mul(86_400_000_000_000)
            .ok_or_else(|| BadParam(format!("lookback `{text}` is too long")));
    }
    go_duration(text)
}

/// Unix microseconds (Jaeger v1's `start` and `end`) in nanoseconds.
///
/// # Errors
/// A message naming the parameter.
pub(crate) fn micros(name: &str, text: &str) -> Result<u64, BadParam> {
    text.parse::<u64>()
        .ok()
        .and_then(|us| us.checked_mul(1000))
        .ok_or_else(|| {
            BadParam(format!(
                "parameter `{name}`: `{text}` is not Unix microseconds"
            ))
        })
}

/// An RFC 3339 time (Jaeger v3's `query.start_time_min`) in Unix nanoseconds.
///
/// # Errors
/// A message naming the parameter.
pub(crate) fn rfc3339(name: &str, text: &str) -> Result<u64, BadParam> {
    let bad = || {
        BadParam(format!(
            "parameter `{name}`: `{text}` is not an RFC 3339 time"
        ))
    };
    let time = humantime::parse_rfc3339_weak(text.trim_end_matches('Z').trim_end_matches('z'))
        .ok()
        .filter(|_| text.ends_with(['Z', 'z']))
        .or_else(|| parse_offset(text))
        .ok_or_else(bad)?;
    let nanos = time
        .duration_since(UNIX_EPOCH)
        .map_err(|_| bad())?
        .as_nanos();
    u64::try_from(nanos).map_err(|_| bad())
}

/// An RFC 3339 time with a numeric offset (`2026-12-01T10:00:00.5+02:00`).
fn parse_offset(text: &str) -> Option<SystemTime> {
    let split = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..split)?, text.get(split..)?);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1,
        _ => return None,
    };
    let hours: i64 = offset.get(1..3)?.parse().ok()?;
    let minutes: i64 = offset.get(4..6)?.parse().ok()?;
    if offset.as_bytes()[3] != b':' {
        return None;
    }
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = std::time::Duration::from_secs(u64::try_from((hours * 60 + minutes) * 60).ok()?);
    if sign > 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
}

/// Now, in Unix nanoseconds.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_with_repeats_and_bad_escapes_kept() {
        let p = parse_query(Some("tag=a%3Ab&tag=c:d&service=my+svc&x=%zz&y=%4"));
        assert_eq!(all(&p, "tag").collect::<Vec<_>>(), ["a:b", "c:d"]);
        assert_eq!(first(&p, "service"), Some("my svc"));
        assert_eq!(first(&p, "x"), Some("%zz"));
        assert_eq!(first(&p, "y"), Some("%4"));
        assert_eq!(first(&parse_query(Some("e=%C3%A9")), "e"), Some("é"));
        assert!(parse_query(None).is_empty());
    }

    #[test]
    fn go_durations_parse_as_go_parses_them() {
        assert_eq!(go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(go_duration("250ms"), Ok(250_000_000));
        assert_eq!(go_duration("10us"), Ok(10_000));
        assert_eq!(go_duration("10µs"), Ok(10_000));
        assert_eq!(go_duration("0"), Ok(0));
        for bad in ["", "1", "s", "1x", "1.2.3s", "-1s"] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(lookback("2d"), Ok(2 * 86_400_000_000_000));
        assert_eq!(lookback("1h"), Ok(3_600_000_000_000));
    }

    #[test]
    fn times_parse_in_microseconds_and_rfc_3339() {
        assert_eq!(
            micros("start", "1700000000000000"),
            Ok(1_700_000_000_000_000_000)
        );
        assert!(micros("start", "-1").is_err());
        assert!(micros("start", "99999999999999999999").is_err());
        let z = rfc3339("t", "2023-11-14T22:13:20Z").unwrap();
        assert_eq!(z, 1_700_000_000_000_000_000);
        assert_eq!(
            rfc3339("t", "2023-11-14T22:13:20.5Z").unwrap(),
            z + 500_000_000
        );
        assert_eq!(rfc3339("t", "2023-11-15T00:13:20+02:00").unwrap(), z);
        assert_eq!(rfc3339("t", "2023-11-14T21:13:20-01:00").unwrap(), z);
        assert!(rfc3339("t", "2023-11-14").is_err());
        assert!(rfc3339("t", "yesterday").is_err());
    }
}
