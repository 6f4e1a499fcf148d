//! Durations as flags and manifests write them (`parse_duration`) and the CRD field that holds
//! either spelling (`GoDuration`). A duration rendered in any unit, with any number of fraction
//! digits, reads back as the duration it denotes; terms add up; the CRD field reads back from
//! JSON, and from YAML as manifests spell it, unchanged.
#![no_main]

use arbitrary::Unstructured;
use gaa::config::duration::{DurationError, parse_duration};
use gaa::crd::GoDuration;
use libfuzzer_sys::fuzz_target;

/// The input is `text\nother\n` and then bytes for the rest, so seeds stay readable.
struct Input<'a> {
    text: &'a str,
    other: &'a str,
    nanos: u64,
    unit: u8,
    digits: u8,
    spaced: bool,
}

impl<'a> Input<'a> {
    fn read(input: &'a [u8]) -> Option<Self> {
        let mut parts = input.splitn(3, |b| *b == b'\n');
        let text = std::str::from_utf8(parts.next()?).ok()?;
        let other = std::str::from_utf8(parts.next().unwrap_or_default()).ok()?;
        // Bytes past the end read as zeros.
        let mut u = Unstructured::new(parts.next().unwrap_or_default());
        let mut number = || u.arbitrary::<u64>().unwrap_or_default();
        let (nanos, choices) = (number(), number());
        let [unit, digits, spaced, ..] = choices.to_le_bytes();
        Some(Self { text, other, nanos, unit, digits, spaced: spaced & 1 == 1 })
    }
}

/// Every unit spelling the parser documents, with its length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("seconds", 1_000_000_000),
    ("m", 60_000_000_000),
    ("mins", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("hours", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("days", 86_400_000_000_000),
];

/// `nanos` in `unit` with `digits` fraction digits, the last one rounded up (`up`) or down:
/// the text and the exact value of that decimal, in nanoseconds, rounded down (what a parser
/// with exact arithmetic returns).
fn render(nanos: u64, (unit, scale): (&str, u128), digits: usize, up: bool, spaced: bool) -> (String, u128) {
    let nanos = u128::from(nanos);
    let mut whole = nanos / scale;
    let mut rest = nanos % scale;
    let mut fraction = Vec::with_capacity(digits);
    for _ in 0..digits {
        rest *= 10;
        fraction.push((rest / scale) as u8);
        rest %= scale;
    }
    let inexact = rest > 0;
    if up && inexact {
        // Add one in the last place, carrying left.
        let mut carry = true;
        for digit in fraction.iter_mut().rev() {
            if !carry {
                break;
            }
            *digit = (*digit + 1) % 10;
            carry = *digit == 0;
        }
        if carry {
            whole += 1;
        }
    }
    // The exact nanoseconds of `whole.fraction` units, rounded down.
    let mut numerator = whole;
    let mut exact_fraction = 0u128;
    // Horner from the last digit: each step keeps the floor exact (floor((a + y) / 10) ==
    // floor((a + floor(y)) / 10) for an integer a).
    for digit in fraction.iter().rev() {
        exact_fraction = (u128::from(*digit) * scale + exact_fraction) / 10;
    }
    numerator = numerator * scale + exact_fraction;
    let digits_text: String = fraction.iter().map(|d| char::from(b'0' + d)).collect();
    let space = if spaced { " " } else { "" };
    let text =
        if digits == 0 { format!("{whole}{space}{unit}") } else { format!("{whole}.{digits_text}{space}{unit}") };
    (text, numerator)
}

/// `nanos` as a sum of terms, largest unit first: `1d2h3m4s5ms6us7ns`.
fn render_terms(nanos: u64, spaced: bool) -> String {
    const TERMS: &[(&str, u64)] = &[
        ("d", 86_400_000_000_000),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];
    let mut rest = nanos;
    let mut terms = Vec::new();
    for (unit, scale) in TERMS {
        if rest >= *scale {
            terms.push(format!("{}{unit}", rest / scale));
            rest %= scale;
        }
    }
    if terms.is_empty() {
        return "0".into();
    }
    terms.join(if spaced { " " } else { "" })
}

/// What parsing a text of `exact` nanoseconds must give.
fn check_reads_as(text: &str, exact: u128) {
    match parse_duration(text) {
        Ok(duration) => assert_eq!(duration.as_nanos(), exact, "{text:?}"),
        Err(DurationError::Overflow { .. }) => assert!(exact > u128::from(u64::MAX), "{text:?} overflowed"),
        Err(error) => panic!("{text:?} does not parse: {error}"),
    }
}

fn starts_unsigned_term(text: &str) -> bool {
    let text = text.trim();
    !text.starts_with(['+', '-']) && text != "0"
}

/// The field as the API server stores it (JSON) reads back the same, directly and as the
/// manifest loader reads a document: YAML into a `Value`, then the CRD type from that.
fn check_serde(value: &GoDuration) {
    let json = serde_json::to_string(value).expect("serializes as JSON");
    assert_eq!(&serde_json::from_str::<GoDuration>(&json).expect("reads back from JSON"), value, "{json}");
    // YAML takes only printable characters, and a byte-order mark only at the start.
    let printable = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
            && c != '\u{feff}'
            || c >= '\u{10000}'
    };
    if !json.chars().all(printable) {
        return;
    }
    let document = format!("cacheWindow: {json}\n");
    let loaded: serde_json::Value = serde_saphyr::from_str(&document).expect("a JSON scalar is YAML");
    let field = serde_json::from_value::<GoDuration>(loaded["cacheWindow"].clone());
    assert_eq!(field.as_ref().ok(), Some(value), "{document}");
}

fuzz_target!(|input: &[u8]| {
    let Some(Input { text, other, nanos, unit, digits, spaced }) = Input::read(input) else {
        return;
    };

    // Any text: the CRD field agrees with the parser, and a parsed duration renders and reads
    // back the same.
    let parsed = parse_duration(text);
    let field = GoDuration::Text(text.to_owned());
    assert_eq!(field.as_duration(), parsed);
    check_serde(&field);
    if let Ok(duration) = parsed {
        let exact = duration.as_nanos();
        let nanos = u64::try_from(exact).expect("a parsed duration fits 64 bits of nanoseconds");
        check_reads_as(&render_terms(nanos, spaced), exact);
        check_reads_as(&format!("{nanos}ns"), exact);
        if let Ok(second) = parse_duration(other)
            && starts_unsigned_term(text)
            && starts_unsigned_term(other)
        {
            // Terms add up: "1h" and "30m" make "1h 30m".
            check_reads_as(&format!("{} {}", text.trim(), other.trim()), exact + second.as_nanos());
        }
    }

    // Any duration: rendered in a unit with a fraction, read back as the decimal it wrote.
    let unit = UNITS[usize::from(unit) % UNITS.len()];
    let digits = usize::from(digits % 40);
    for up in [false, true] {
        let (text, exact) = render(nanos, unit, digits, up, spaced);
        check_reads_as(&text, exact);
        if up && 10u128.checked_pow(digits as u32).is_none_or(|place| place >= unit.1) {
            // Enough digits, rounded up, name the duration itself.
            assert_eq!(exact, u128::from(nanos), "{text:?}");
        }
    }
    check_reads_as(&render_terms(nanos, spaced), u128::from(nanos));

    let signed = GoDuration::Nanoseconds(nanos as i64);
    check_serde(&signed);
    let reread = parse_duration(&signed.to_string());
    match signed.as_duration() {
        Ok(duration) => assert_eq!(reread, Ok(duration)),
        Err(_) => assert!(matches!(reread, Err(DurationError::Negative { .. })), "{signed}: {reread:?}"),
    }
});
