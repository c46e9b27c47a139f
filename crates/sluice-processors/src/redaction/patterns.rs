//! The named pattern sets of the `redaction` processor's `builtin_patterns`: personal data and
//! secrets a user can switch on without writing a regex. Each is a candidate regex and, where a
//! regex alone would mask innocent values, a check of the candidate (a card number's Luhn digit
//! and issuer, an SSN's reserved ranges, a phone number's digit count, an IPv6 address's syntax).

use std::cell::OnceCell;

use regex::Regex;

/// One built-in pattern: a candidate regex, an optional check every match must pass, and what a
/// text must hold for the regex to be worth running (most attribute values have too few digits
/// for a phone or card number, no `@` for an email: one pass over their bytes rules every
/// pattern out, where running the regexes cost microseconds per span).
pub(crate) struct Builtin {
    pub(crate) name: &'static str,
    pub(crate) regex: &'static str,
    pub(crate) check: Option<fn(&str) -> bool>,
    pub(crate) hint: Hint,
    /// The shortest text the pattern can match: shorter texts are not looked at.
    pub(crate) min_len: usize,
}

/// What a text must hold for a pattern to be worth running: minimums over its [`Shape`], and a
/// literal the text must contain where the shape alone lets too much through. A hint only saves
/// work: it admits every text the pattern matches (tested).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hint {
    /// Classes of bytes the text must have (`AT`, `LETTER_B`, `LETTER_J`, `KEY_CHAR`).
    marks: u16,
    dots: u32,
    number_run: u32,
    hex_colons: u32,
    token_run: u32,
    literal: Option<fn(&[u8]) -> bool>,
}

impl Hint {
    const NONE: Hint = Hint {
        marks: 0,
        dots: 0,
        number_run: 0,
        hex_colons: 0,
        token_run: 0,
        literal: None,
    };

    /// Whether a text of this shape may hold a match: the counts first (a run of `n` digits
    /// needs `n` digits), the runs only when the counts allow a match.
    #[inline]
    pub(crate) fn admits(&self, shape: &Shape<'_>) -> bool {
        let counts = &shape.counts;
        if counts.marks & self.marks != self.marks
            || counts.dots < self.dots
            || counts.digits < self.number_run
            || counts.colons < self.hex_colons
            || shape.text.len() < self.token_run as usize
        {
            return false;
        }
        (self.number_run == 0 || shape.number_run() >= self.number_run)
            && (self.hex_colons == 0 || shape.hex_colons() >= self.hex_colons)
            && (self.token_run == 0 || shape.token_run() >= self.token_run)
            && self.literal.is_none_or(|literal| literal(shape.text))
    }
}

/// A text's shape, for the patterns' hints: counts of its bytes by class, taken in one pass that
/// most texts end at, and the longest runs, each taken in a pass of its own when a hint asks.
pub(crate) struct Shape<'a> {
    text: &'a [u8],
    counts: Counts,
    /// The most digits in one run of digits and number separators (` `, `.`, `-`, `(`, `)`,
    /// `+`): a phone, card or social security number is one such run.
    number_run: OnceCell<u32>,
    /// The most colons in one run of hexadecimal digits and colons: an IPv6 address is one.
    hex_colons: OnceCell<u32>,
    /// The longest run of `[A-Za-z0-9_-]`: a key or token is one such run.
    token_run: OnceCell<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Every class of byte the text has.
    marks: u16,
    digits: u32,
    dots: u32,
    colons: u32,
}

const DIGIT: u16 = 1;
const NUMBER_SEPARATOR: u16 = 1 << 1;
const DOT: u16 = 1 << 2;
const COLON: u16 = 1 << 3;
const AT: u16 = 1 << 4;
const TOKEN: u16 = 1 << 5;
const HEX: u16 = 1 << 6;
/// `b` or `B`: `bearer` has one.
const LETTER_B: u16 = 1 << 7;
/// `J`: a JSON Web Token's `eyJ` has one.
const LETTER_J: u16 = 1 << 8;
/// `A`, `_` or `-`: every `api_key` shape has one.
const KEY_CHAR: u16 = 1 << 9;
/// `[A-Za-z0-9_]`: what the regex crate's `\b` takes for a word (in ASCII).
const WORD: u16 = 1 << 10;
/// The first letters of the `api_key` prefixes.
const KEY_START: u16 = 1 << 11;

/// Each byte's classes, so that a text's shape is taken with one lookup per byte.
const CLASSES: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut class = 0;
        if c.is_ascii_digit() {
            class |= DIGIT | TOKEN | HEX;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'-' {
            class |= TOKEN;
        }
        if matches!(c, b'a'..=b'f' | b'A'..=b'F') {
            class |= HEX;
        }
        if matches!(c, b' ' | b'-' | b'(' | b')' | b'+') {
            class |= NUMBER_SEPARATOR;
        }
        if c == b'.' {
            class |= DOT | NUMBER_SEPARATOR;
        }
        if c == b':' {
            class |= COLON;
        }
        if c == b'@' {
            class |= AT;
        }
        if c == b'b' || c == b'B' {
            class |= LETTER_B;
        }
        if c == b'J' {
            class |= LETTER_J;
        }
        if matches!(c, b'A' | b'_' | b'-') {
            class |= KEY_CHAR;
        }
        if c.is_ascii_alphanumeric() || c == b'_' {
            class |= WORD;
        }
        if matches!(c, b'A' | b'g' | b'x' | b's' | b'r') {
            class |= KEY_START;
        }
        table[b] = class;
        b += 1;
    }
    table
};

/// The classes counted per text, with their lanes in [`COUNTS`] (digits, dots and colons first,
/// read by position in [`Shape::of`]).
const COUNTED: [(u16, u32); 7] = [
    (DIGIT, 0),
    (DOT, 8),
    (COLON, 16),
    (AT, 24),
    (LETTER_B, 32),
    (LETTER_J, 40),
    (KEY_CHAR, 48),
];

/// Each byte's counts: a one in the lane of each counted class it is in.
const COUNTS: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < COUNTED.len() {
            if CLASSES[b] & COUNTED[i].0 != 0 {
                table[b] |= 1 << COUNTED[i].1;
            }
            i += 1;
        }
        b += 1;
    }
    table
};

impl<'a> Shape<'a> {
    /// The counts of `text`: one lookup and one addition per byte (each byte adds one to the
    /// 8-bit lane of each class it is in; 255 bytes at most between carries into `u32`s).
    pub(crate) fn of(text: &'a [u8]) -> Shape<'a> {
        let mut totals = [0u32; COUNTED.len()];
        for chunk in text.chunks(255) {
            let lanes: u64 = chunk.iter().map(|&b| COUNTS[usize::from(b)]).sum();
            for (i, total) in totals.iter_mut().enumerate() {
                *total += ((lanes >> (8 * i)) & 0xff) as u32;
            }
        }
        let mut counts = Counts::default();
        for (&(class, _), &total) in COUNTED.iter().zip(&totals) {
            if total > 0 {
                counts.marks |= class;
            }
        }
        counts.digits = totals[0];
        counts.dots = totals[1];
        counts.colons = totals[2];
        Shape {
            text,
            counts,
            number_run: OnceCell::new(),
            hex_colons: OnceCell::new(),
            token_run: OnceCell::new(),
        }
    }

    /// The longest run, by `step`: a byte's class takes the run on (`Some(1)`: counted,
    /// `Some(0)`: passed over) or ends it (`None`).
    fn longest(&self, step: impl Fn(u16) -> Option<u32>) -> u32 {
        let (mut run, mut longest) = (0u32, 0u32);
        for &b in self.text {
            run = match step(CLASSES[usize::from(b)]) {
                Some(n) => run + n,
                None => 0,
            };
            longest = longest.max(run);
        }
        longest
    }

    fn number_run(&self) -> u32 {
        *self.number_run.get_or_init(|| {
            self.longest(|class| {
                if class & DIGIT != 0 {
                    Some(1)
                } else if class & NUMBER_SEPARATOR != 0 {
                    Some(0)
                } else {
                    None
                }
            })
        })
    }

    fn hex_colons(&self) -> u32 {
        *self.hex_colons.get_or_init(|| {
            self.longest(|class| {
                if class & COLON != 0 {
                    Some(1)
                } else if class & HEX != 0 {
                    Some(0)
                } else {
                    None
                }
            })
        })
    }

    fn token_run(&self) -> u32 {
        *self
            .token_run
            .get_or_init(|| self.longest(|class| (class & TOKEN != 0).then_some(1)))
    }
}

fn contains(text: &[u8], word: &[u8]) -> bool {
    text.windows(word.len()).any(|w| w == word)
}

/// The literal prefixes of the `api_key` shapes.
const API_KEY_PREFIXES: [&[u8]; 15] = [
    b"AKIA",
    b"ASIA",
    b"ghp_",
    b"gho_",
    b"ghu_",
    b"ghs_",
    b"ghr_",
    b"github_pat_",
    b"xox",
    b"AIza",
    b"sk_live_",
    b"sk_test_",
    b"rk_live_",
    b"rk_test_",
    b"sk-",
];

/// Whether a word (a run of `[A-Za-z0-9_]`, where the `api_key` regex's `\b` lets a match
/// start) begins with an API key's prefix and has room for a key (15 bytes or more).
fn api_key_prefix(text: &[u8]) -> bool {
    if text.len() < 15 {
        return false;
    }
    let mut in_word = false;
    for (i, &c) in text.iter().enumerate() {
        let class = CLASSES[usize::from(c)];
        if class & KEY_START != 0 && !in_word {
            let rest = &text[i..];
            if rest.len() < 15 {
                return false;
            }
            if API_KEY_PREFIXES.iter().any(|p| rest.starts_with(p)) {
                return true;
            }
        }
        in_word = class & WORD != 0;
    }
    false
}

fn bearer(text: &[u8]) -> bool {
    text.windows(6).any(|w| w.eq_ignore_ascii_case(b"bearer"))
}

/// Every built-in pattern, by name.
pub(crate) const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "email",
        regex: r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
        check: None,
        hint: Hint {
            marks: AT,
            dots: 1,
            ..Hint::NONE
        },
        min_len: 6,
    },
    // E.164 (`+` and 8 to 15 digits, separators allowed) and national forms written with
    // separators: `(555) 123-4567`, `555-123-4567`, `020 7946 0958`, `06 12 34 56 78`.
    Builtin {
        name: "phone",
        regex: r"(?:\+[1-9][0-9]{0,3}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{1,4}(?:[ .-]?[0-9]{2,5}){1,4}\b|(?:\(\b[0-9]{3}\)[ ]?|\b[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\b|\b0[0-9]{1,4}(?:[ -][0-9]{2,4}){2,4}\b)",
        check: Some(phone),
        hint: Hint {
            number_run: 8,
            ..Hint::NONE
        },
        min_len: 10,
    },
    Builtin {
        name: "us_ssn",
        regex: r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b",
        check: Some(ssn),
        hint: Hint {
            number_run: 9,
            ..Hint::NONE
        },
        min_len: 11,
    },
    // 13 to 19 digits, optionally grouped by spaces or dashes; masked only with a valid Luhn
    // check digit and a known issuer prefix, so order ids and timestamps stay.
    Builtin {
        name: "payment_card",
        regex: r"\b[0-9](?:[ -]?[0-9]){12,18}\b",
        check: Some(payment_card),
        hint: Hint {
            number_run: 13,
            ..Hint::NONE
        },
        min_len: 13,
    },
    Builtin {
        name: "ipv4",
        regex: r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b",
        check: None,
        hint: Hint {
            number_run: 4,
            dots: 3,
            ..Hint::NONE
        },
        min_len: 7,
    },
    Builtin {
        name: "ipv6",
        regex: r"(?i)(?:[0-9a-f]{1,4}:){1,7}(?:(?::[0-9a-f]{1,4}){1,7}|[0-9a-f]{1,4}|:)|::(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?",
        check: Some(ipv6),
        hint: Hint {
            hex_colons: 2,
            ..Hint::NONE
        },
        min_len: 2,
    },
    // A JSON Web Token: base64url header and payload that both start with `{"` (`eyJ`).
    Builtin {
        name: "jwt",
        regex: r"\beyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        check: None,
        hint: Hint {
            marks: LETTER_J,
            dots: 2,
            token_run: 5,
            literal: Some(|text| contains(text, b"eyJ")),
            ..Hint::NONE
        },
        min_len: 15,
    },
    Builtin {
        name: "bearer_token",
        regex: r"(?i)\bbearer\s+[A-Za-z0-9._~+/-]{8,}=*",
        check: None,
        hint: Hint {
            marks: LETTER_B,
            token_run: 6,
            literal: Some(bearer),
            ..Hint::NONE
        },
        min_len: 15,
    },
    // Keys with a recognisable shape: AWS access key ids, GitHub, Slack, Stripe, Google and
    // OpenAI-style keys; every one is a word of 15 characters or more.
    Builtin {
        name: "api_key",
        regex: r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|xox[abposr]-[A-Za-z0-9-]{10,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35}|sk-[A-Za-z0-9_-]{20,})\b",
        check: None,
        hint: Hint {
            marks: KEY_CHAR,
            literal: Some(api_key_prefix),
            ..Hint::NONE
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
                builtin.hint.admits(&Shape::of(m.as_bytes())),
                "{name}: the hint refuses {m:?}"
            );
        }
        found
    }

    #[test]
    fn counts_agree_with_counting_byte_by_byte() {
        let texts: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a@b.c: J".to_vec(),
            (0..=255u8).cycle().take(1000).collect(),
            b"9".repeat(700),
            b"1.2:".repeat(300),
        ];
        for text in texts {
            let shape = Shape::of(&text);
            let count = |class: u16| {
                text.iter()
                    .filter(|&&b| CLASSES[usize::from(b)] & class != 0)
                    .count() as u32
            };
            assert_eq!(shape.counts.digits, count(DIGIT));
            assert_eq!(shape.counts.dots, count(DOT));
            assert_eq!(shape.counts.colons, count(COLON));
            for (class, _) in COUNTED {
                assert_eq!(shape.counts.marks & class != 0, count(class) > 0, "{class}");
            }
        }
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
        assert_eq!(finds("ipv6", "to [::1]:8080"), ["::1"]);
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
        // A token of short runs: the word `bearer` is what the hint goes by.
        assert_eq!(
            finds("bearer_token", "bearer a.b/c.d~e+f.g"),
            ["bearer a.b/c.d~e+f.g"]
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
