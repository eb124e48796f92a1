//! Durations as an administrator types them and as chaos shows them, one
//! grammar for every option and command (`chaos.watchdog.interval=`, `tyd
//! enroll --for`, `certaintyd pause`, ...): one or more `<n><unit>` with the
//! units `h`, `m`, `s` and `ms` (`15m`, `1m30s`, `250ms`), or a bare number
//! of seconds (`30`). [`show`] writes what [`parse`] reads back.

use std::time::Duration;

/// How the grammar reads in messages and help texts.
pub const SYNTAX: &str = "<n>h|<n>m|<n>s|<n>ms, a sum like 1m30s, or seconds";

const UNITS: &[(&str, u64)] = &[("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} {reason}", reason = self.reason())]
    Syntax(String),
    #[error("{0:?} {reason}", reason = self.reason())]
    TooLong(String),
}

impl DurationError {
    /// What is wrong, without the value: for messages that quote it
    /// themselves.
    pub fn reason(&self) -> String {
        match self {
            DurationError::Syntax(_) => format!("is not a duration, expected {SYNTAX}"),
            DurationError::TooLong(_) => "is too long a duration".to_string(),
        }
    }
}

/// Parses `text` in the grammar of the module docs.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text
            .parse()
            .map_err(|_| DurationError::TooLong(text.to_string()))?;
        return Ok(Duration::from_secs(secs));
    }
    let mut rest = text;
    let mut millis: u64 = 0;
    let mut last_scale = u64::MAX;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(syntax)?;
        if digits == 0 {
            return Err(syntax());
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(syntax)?;
        // Largest unit first, each once: "1m30s", not "30s1m" or "1m1m".
        if scale >= last_scale {
            return Err(syntax());
        }
        last_scale = scale;
        let too_long = || DurationError::TooLong(text.to_string());
        let n: u64 = number.parse().map_err(|_| too_long())?;
        millis = n
            .checked_mul(scale)
            .and_then(|part| millis.checked_add(part))
            .ok_or_else(too_long)?;
        rest = tail;
    }
    if text.is_empty() {
        return Err(syntax());
    }
    Ok(Duration::from_millis(millis))
}

/// `d` as it would be typed, to the millisecond: `15m`, `1m30s`, `250ms`,
/// `0s`.
pub fn show(d: Duration) -> String {
    let mut left = d.as_millis();
    if left == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, scale) in UNITS {
        let scale = u128::from(*scale);
        if left >= scale {
            out.push_str(&format!("{}{unit}", left / scale));
            left %= scale;
        }
    }
    out
}

/// `d` at a glance, for tables where the exact figure is noise: rounded
/// down to one unit, seconds up to two minutes, then minutes up to two
/// hours, then hours (`45s`, `10m`, `3h`); still in the grammar.
pub fn show_rough(d: Duration) -> String {
    let secs = d.as_secs();
    let (unit, scale) = match secs {
        0..=119 => ("s", 1),
        120..=7199 => ("m", 60),
        _ => ("h", 3600),
    };
    format!("{}{unit}", secs / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form one of the three earlier grammars (tyd's options,
    /// certaintyd's pause, init's `chaos.watchdog.*`) accepted, and the
    /// forms one of them refused.
    #[test]
    fn one_grammar_for_every_form() {
        let table: &[(&str, Result<u64, &str>)] = &[
            ("15m", Ok(900_000)),
            ("2s", Ok(2000)),
            ("250ms", Ok(250)),
            ("1h", Ok(3_600_000)),
            // certaintyd and init took a bare number as seconds; tyd did not.
            ("30", Ok(30_000)),
            ("0", Ok(0)),
            // init took ms, certaintyd did not; tyd took h, init did not.
            ("1500ms", Ok(1500)),
            ("2h", Ok(7_200_000)),
            ("1m30s", Ok(90_000)),
            ("1h1m1s1ms", Ok(3_661_001)),
            ("", Err("is not a duration")),
            ("m", Err("is not a duration")),
            ("3d", Err("is not a duration")),
            ("1.5s", Err("is not a duration")),
            ("-1s", Err("is not a duration")),
            ("30s1m", Err("is not a duration")),
            ("1m1m", Err("is not a duration")),
            ("1 m", Err("is not a duration")),
            ("15M", Err("is not a duration")),
            ("99999999999999999999s", Err("too long")),
            ("99999999999999999999", Err("too long")),
            ("18446744073709551615h", Err("too long")),
        ];
        for (text, expected) in table {
            match (parse(text), expected) {
                (Ok(d), Ok(ms)) => assert_eq!(d.as_millis() as u64, *ms, "{text}"),
                (Err(e), Err(wanted)) => {
                    assert!(e.to_string().contains(wanted), "{text}: {e}")
                }
                (got, _) => panic!("{text:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_value_and_the_grammar() {
        assert_eq!(
            parse("soon").unwrap_err().to_string(),
            format!("\"soon\" is not a duration, expected {SYNTAX}")
        );
    }

    #[test]
    fn show_writes_what_parse_reads() {
        let table: &[(u64, &str)] = &[
            (0, "0s"),
            (250, "250ms"),
            (2000, "2s"),
            (1500, "1s500ms"),
            (90_000, "1m30s"),
            (900_000, "15m"),
            (3_600_000, "1h"),
            (3_661_001, "1h1m1s1ms"),
        ];
        for (ms, text) in table {
            let d = Duration::from_millis(*ms);
            assert_eq!(show(d), *text);
            assert_eq!(parse(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn rough_shows_one_unit() {
        let table: &[(u64, &str)] = &[
            (5_400, "5s"),
            (119_999, "119s"),
            (600_000, "10m"),
            (10_800_000, "3h"),
            (432_000_000, "120h"),
        ];
        for (ms, text) in table {
            assert_eq!(show_rough(Duration::from_millis(*ms)), *text);
            assert!(parse(text).is_ok(), "{text}");
        }
    }
}
