//! The named pattern sets of the `redaction` processor's `builtin_patterns`: personal data and
//! secrets a user can switch on without writing a regex. Each is a candidate regex and, where a
//! regex alone would mask innocent values, a check of the candidate (a card number's Luhn digit
//! and issuer, an SSN's reserved ranges, a phone number's digit count, an IPv6 address's syntax).

use regex::Regex;

/// One built-in pattern: a candidate regex, an optional check every match must pass, and what a
/// text must have for the regex to be worth running (most attribute values have too few digits
/// for a phone or card number, no `@` for an email: one pass over their bytes rules every
/// pattern out, where running the regexes cost microseconds per span).
pub(crate) struct Builtin {
    pub(crate) name: &'static str,
    pub(crate) regex: &'static str,
    pub(crate) check: Option<fn(&str) -> bool>,
    pub(crate) hint: fn(&Shape, &str) -> bool,
    /// The shortest text the pattern can match: shorter texts are not looked at.
    pub(crate) min_len: usize,
}

/// Counts over a text's bytes, taken in one pass, for the patterns' hints.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Shape {
    at: bool,
    dots: u32,
    colons: u32,
    /// The most digits in one run of digits and number separators (` `, `.`, `-`, `(`, `)`,
    /// `+`): a phone, card or social security number is one such run.
    number_run: u32,
    /// The longest run of `[A-Za-z0-9_-]`: a key or token is one such run.
    token_run: u32,
}

impl Shape {
    /// Whether any built-in pattern could match the text: the weakest of their hints, checked
    /// once, so that most texts are passed over without asking each pattern.
    pub(crate) fn may_hold_any(&self, text: &str) -> bool {
        self.at
            || self.number_run >= 4
            || self.colons >= 2
            || self.token_run >= 15
            || (self.token_run >= 8 && text.bytes().any(|c| c | 0x20 == b'b'))
            || (self.dots >= 2 && text.contains("eyJ"))
    }

    pub(crate) fn of(text: &str) -> Shape {
        let mut shape = Shape::default();
        let (mut number, mut token) = (0u32, 0u32);
        for &b in text.as_bytes() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                token += 1;
                shape.token_run = shape.token_run.max(token);
            } else {
                token = 0;
            }
            match b {
                b'0'..=b'9' => {
                    number += 1;
                    shape.number_run = shape.number_run.max(number);
                }
                b' ' | b'-' | b'(' | b')' | b'+' => {}
                b'.' => shape.dots += 1,
                b':' => {
                    shape.colons += 1;
                    number = 0;
                }
                b'@' => {
                    shape.at = true;
                    number = 0;
                }
                _ => number = 0,
            }
        }
        shape
    }
}

fn has_ignoring_case(text: &str, word: &[u8]) -> bool {
    text.as_bytes()
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// The literal prefixes of the `api_key` shapes.
const API_KEY_PREFIXES: [&str; 10] = [
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "AIza",
];

/// Every built-in pattern, by name.
pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "email",
        regex: r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
        check: None,
        hint: |shape, _| shape.at && shape.dots > 0,
        min_len: 6,
    },
    // E.164 (`+` and 8 to 15 digits, separators allowed) and national forms written with
    // separators: `(555) 123-4567`, `555-123-4567`, `020 7946 0958`, `06 12 34 56 78`.
    Builtin {
        name: "phone",
        regex: r"(?:\+[1-9][0-9]{0,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,5}){1,4}\b|(?:\(\b[0-9]{3}\)[ ]?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b|\b0[0-9]{1,4}(?:[ -][0-9]{2,4}){2,4}\b)",
        check: Some(phone),
        hint: |shape, _| shape.number_run >= 8,
        min_len: 10,
    },
    Builtin {
        name: "us_ssn",
        regex: r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        check: Some(ssn),
        hint: |shape, _| shape.number_run >= 9,
        min_len: 11,
    },
    // 13 to 19 digits, optionally grouped by spaces or dashes; masked only with a valid Luhn
    // check digit and a known issuer prefix, so order ids and timestamps stay.
    Builtin {
        name: "payment_card",
        regex: r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        check: Some(payment_card),
        hint: |shape, _| shape.number_run >= 13,
        min_len: 13,
    },
    Builtin {
        name: "ipv4",
        regex: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        check: None,
        hint: |shape, _| shape.number_run >= 4 && shape.dots >= 3,
        min_len: 7,
    },
    Builtin {
        name: "ipv6",
        regex: r"(?i)(?:[0-9a-f]{1,4}:){1,7}(?:(?::[0-9a-f]{1,4}){1,7}|[0-9a-f]{1,4}|:)|::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?",
        check: Some(ipv6),
        hint: |shape, _| shape.colons >= 2,
        min_len: 2,
    },
    // A JSON Web Token: base64url header and payload that both start with `{"` (`eyJ`).
    Builtin {
        name: "jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        check: None,
        hint: |shape, text| shape.dots >= 2 && text.contains("eyJ"),
        min_len: 15,
    },
    Builtin {
        name: "bearer_token",
        regex: r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{8,}=*",
        check: None,
        hint: |shape, text| shape.token_run >= 8 && has_ignoring_case(text, b"bearer"),
        min_len: 15,
    },
    // Keys with a recognisable shape: AWS access key ids, GitHub, Slack, Stripe, Google and
    // OpenAI-style keys.
    Builtin {
        name: "api_key",
        regex: r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|xox[abposr]-[A-Za-z0-9-]{10,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35}|sk-[A-Za-z0-9_-]{20,})\b",
        check: None,
        // Every shape is one token of 15 characters or more.
        hint: |shape, text| {
            shape.token_run >= 15
                && (API_KEY_PREFIXES.iter().any(|p| text.contains(p))
                    || text.contains("k_live_")
                    || text.contains("k_test_")
                    || text.contains("sk-"))
        },
        min_len: 15,
    },
];

/// Names that switch on several patterns at once.
pub(crate) const GROUPS: &[(&str, &[&str])] = &[
    ("pii", &["email", "phone", "us_ssn", "payment_card"]),
    ("secrets", &["jwt", "bearer_token", "api_key"]),
    ("network", &["ipv4", "ipv6"]),
    (
        "all",
        &[
            "email",
            "phone",
            "us_ssn",
            "payment_card",
            "ipv4",
            "ipv6",
            "jwt",
            "bearer_token",
            "api_key",
        ],
    ),
];

/// The built-in patterns `name` switches on, or `None` for an unknown name.
pub(crate) fn resolve(name: &str) -> Option<Vec<&'static Builtin>> {
    if let Some(b) = BUILTINS.iter().find(|b| b.name == name) {
        return Some(vec![b]);
    }
    let (_, members) = GROUPS.iter().find(|(g, _)| *g == name)?;
    Some(
        members
            .iter()
            .filter_map(|m| BUILTINS.iter().find(|b| b.name == *m))
            .collect(),
    )
}

/// Every name `builtin_patterns` accepts, for error messages.
pub(crate) fn names() -> Vec<&'static str> {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .chain(GROUPS.iter().map(|(g, _)| *g))
        .collect()
}

/// Compiles a built-in's regex (they are constants, tested to compile).
pub(crate) fn compile(builtin: &Builtin) -> Regex {
    Regex::new(builtin.regex).unwrap_or_else(|e| panic!("built-in pattern {}: {e}", builtin.name))
}

fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// A phone number: 8 to 15 digits in E.164, 10 to 12 in a national form written with separators
/// (so `01-02-2024` is a date, not a number to mask).
fn phone(s: &str) -> bool {
    let n = digits(s).len();
    if s.starts_with('+') {
        (8..=15).contains(&n)
    } else {
        (10..=12).contains(&n)
    }
}

/// A US social security number outside the ranges never issued: area 000, 666 or 900-999,
/// group 00, serial 0000.
fn ssn(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = d[3] * 10 + d[4];
    let serial = d[5..].iter().all(|&x| x == 0);
    area != 0 && area != 666 && area < 900 && group != 0 && !serial
}

/// Luhn's check over the digits.
pub(crate) fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let doubled = x * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A payment card number: 13 to 19 digits, a known issuer's prefix (Visa, Mastercard, American
/// Express, Discover, JCB, Diners Club, UnionPay, Maestro) and a valid Luhn digit.
fn payment_card(s: &str) -> bool {
    let d = digits(s);
    if !(13..=19).contains(&d.len()) || !luhn(&d) {
        return false;
    }
    let prefix = |n: usize| d[..n].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    d[0] == 4
        || (51..=55).contains(&prefix(2))
        || (2221..=2720).contains(&prefix(4))
        || matches!(
            prefix(2),
            34 | 37 | 35 | 36 | 38 | 30 | 62 | 65 | 50 | 56 | 57 | 58 | 67 | 63
        )
        || prefix(4) == 6011
        || (644..=649).contains(&prefix(3))
}

fn ipv6(s: &str) -> bool {
    s.parse::<std::net::Ipv6Addr>().is_ok() && s.contains(':') && s.len() > 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finds(name: &str, text: &str) -> Vec<String> {
        let builtin = BUILTINS.iter().find(|b| b.name == name).unwrap();
        let found: Vec<String> = compile(builtin)
            .find_iter(text)
            .map(|m| m.as_str())
            .filter(|m| builtin.check.is_none_or(|c| c(m)))
            .map(str::to_owned)
            .collect();
        // Whatever a pattern finds, its hint lets through: the hint only saves work.
        for m in &found {
            assert!(
                (builtin.hint)(&Shape::of(m), m),
                "{name}: the hint refuses {m:?}"
            );
        }
        found
    }

    #[test]
    fn every_builtin_compiles_and_every_group_names_builtins() {
        for b in BUILTINS {
            compile(b);
        }
        for (group, members) in GROUPS {
            assert_eq!(resolve(group).unwrap().len(), members.len(), "{group}");
        }
        assert!(resolve("nope").is_none());
    }

    #[test]
    fn emails_are_found_in_text() {
        assert_eq!(
            finds("email", "mail jane.doe+x@example.co.uk, or ops@corp.io now"),
            ["jane.doe+x@example.co.uk", "ops@corp.io"]
        );
        assert!(finds("email", "user@localhost and a@b").is_empty());
    }

    #[test]
    fn phone_numbers_in_e164_and_national_forms_but_not_dates_or_ids() {
        assert_eq!(finds("phone", "call +14155552671 today"), ["+14155552671"]);
        assert_eq!(
            finds("phone", "call +44 20 7946 0958"),
            ["+44 20 7946 0958"]
        );
        assert_eq!(finds("phone", "(415) 555-2671"), ["(415) 555-2671"]);
        assert_eq!(finds("phone", "tel 415-555-2671."), ["415-555-2671"]);
        assert_eq!(finds("phone", "tel 020 7946 0958"), ["020 7946 0958"]);
        assert_eq!(finds("phone", "06 12 34 56 78"), ["06 12 34 56 78"]);
        assert!(finds("phone", "on 01-02-2024 at 10:30").is_empty());
        assert!(finds("phone", "order 4155552671 and id 12345").is_empty());
        assert!(finds("phone", "version +1.2").is_empty());
    }

    #[test]
    fn ssns_outside_reserved_ranges() {
        assert_eq!(finds("us_ssn", "ssn 123-45-6789."), ["123-45-6789"]);
        assert!(finds("us_ssn", "000-12-3456 666-12-3456 900-12-3456").is_empty());
        assert!(finds("us_ssn", "123-00-4567 123-45-0000").is_empty());
    }

    #[test]
    fn card_numbers_need_luhn_and_an_issuer() {
        // Test numbers published by the card networks.
        assert_eq!(
            finds("payment_card", "visa 4111 1111 1111 1111 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            finds("payment_card", "mc 5555555555554444"),
            ["5555555555554444"]
        );
        assert_eq!(
            finds("payment_card", "amex 3782-822463-10005"),
            ["3782-822463-10005"]
        );
        // One digit off: Luhn fails.
        assert!(finds("payment_card", "4111 1111 1111 1112").is_empty());
        // Luhn-valid, but no issuer starts with 9: an order id.
        assert!(luhn(&digits("9111111111111110")));
        assert!(finds("payment_card", "order 9111111111111110").is_empty());
        // A nanosecond timestamp is 19 digits starting with 1.
        assert!(finds("payment_card", "1732950000123456789").is_empty());
    }

    #[test]
    fn ip_addresses() {
        assert_eq!(finds("ipv4", "from 10.1.2.3:80"), ["10.1.2.3"]);
        assert!(finds("ipv4", "256.1.1.1 and 1.2.3").is_empty());
        assert_eq!(
            finds("ipv6", "peer 2001:db8::8a2e:370:7334 up"),
            ["2001:db8::8a2e:370:7334"]
        );
        assert_eq!(finds("ipv6", "fe80::1"), ["fe80::1"]);
        assert!(finds("ipv6", "at 12:30:45 and key a:b").is_empty());
    }

    #[test]
    fn tokens_and_keys() {
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(finds("jwt", &format!("token={jwt};")), [jwt]);
        assert_eq!(
            finds("bearer_token", "Authorization: Bearer abc.DEF-123_xyz="),
            ["Bearer abc.DEF-123_xyz="]
        );
        assert_eq!(
            finds(
                "api_key",
                "key AKIAIOSFODNN7EXAMPLE and ghp_0123456789abcdefghijABCDEFGHIJ012345"
            ),
            [
                "AKIAIOSFODNN7EXAMPLE",
                "ghp_0123456789abcdefghijABCDEFGHIJ012345"
            ]
        );
        assert!(finds("api_key", "AKIA123").is_empty());
    }
}
