//! Event ids as clients send them (`since`), parsed by `mt_hub::event_id::EventId`'s `FromStr`.
//!
//! Input: arbitrary text. Checked: no panic; the parser agrees with an independent reference
//! (`<digits>-<digits>`, each a u64); an id that parses displays in its canonical form (the
//! input without leading zeros), that form parses back to the same id, and `EventId::write`
//! gives the same text; a refusal quotes at most 64 characters of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mt_hub::event_id::{EventId, MAX_ID_LEN};

/// One part of an id, written from the protocol's words rather than the hub's code: a
/// non-empty run of ASCII digits whose value fits in a u64. Returns the value and its text
/// without leading zeros.
fn reference_part(part: &str) -> Option<(u64, &str)> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let canonical = match part.trim_start_matches('0') {
        "" => "0",
        digits => digits,
    };
    if canonical.len() > 20 {
        return None;
    }
    let value: u128 = canonical.parse().ok()?;
    Some((u64::try_from(value).ok()?, canonical))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let reference = text.split_once('-').and_then(|(ms, seq)| Some((reference_part(ms)?, reference_part(seq)?)));
    match (text.parse::<EventId>(), reference) {
        (Ok(id), Some(((ms, ms_text), (seq, seq_text)))) => {
            assert_eq!(id, EventId::new(ms, seq), "{text:?}");
            let shown = id.to_string();
            assert_eq!(shown, format!("{ms_text}-{seq_text}"), "{text:?} is not displayed in canonical form");
            assert!(shown.len() <= MAX_ID_LEN);
            let mut buffer = [0u8; MAX_ID_LEN];
            assert_eq!(id.write(&mut buffer), shown);
            assert_eq!(shown.parse::<EventId>(), Ok(id), "{shown:?} does not parse back");
        }
        (Err(error), None) => {
            assert!(error.0.chars().count() <= 64, "the refusal quotes {} characters", error.0.chars().count());
            let _ = error.to_string();
        }
        (parsed, reference) => panic!("{text:?}: the hub parsed {parsed:?}, the reference {reference:?}"),
    }
});
