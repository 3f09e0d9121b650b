//! The WebSocket handshake check, `mt_hub::upgrade::check_upgrade`, on arbitrary request heads.
//!
//! Input: text read as an HTTP request head: a first line `METHOD VERSION` (`HTTP/1.0`,
//! `HTTP/1.1` or anything else, read as HTTP/2), then `name: value` lines (lines that are not a
//! valid header are skipped). Checked: no panic; an accepted request is, by an independent
//! reading of RFC 6455 §4.2.1, a GET over HTTP/1.1 with `Upgrade: websocket`, a `Connection`
//! with an `upgrade` token, exactly one `Sec-WebSocket-Key` of 24 base64 characters ending in
//! `==` (16 bytes), and exactly one `Sec-WebSocket-Version: 13`.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Version};
use libfuzzer_sys::fuzz_target;
use mt_hub::upgrade::check_upgrade;

fn parse(text: &str) -> Option<(Method, Version, HeaderMap)> {
    let mut lines = text.lines();
    let mut first = lines.next()?.split(' ');
    let method = Method::from_bytes(first.next()?.as_bytes()).ok()?;
    let version = match first.next() {
        Some("HTTP/1.0") => Version::HTTP_10,
        Some("HTTP/1.1") => Version::HTTP_11,
        _ => Version::HTTP_2,
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_str(value.trim()))
        else {
            continue;
        };
        headers.append(name, value);
    }
    Some((method, version, headers))
}

/// The one value of `name`, if there is exactly one.
fn only<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    values.next().is_none().then_some(value.as_bytes())
}

fn is_key(key: &[u8]) -> bool {
    let base64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/';
    key.len() == 24 && key.ends_with(b"==") && key[..22].iter().all(base64)
}

fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|text| text.split(',').any(|part| part.trim().eq_ignore_ascii_case(token)))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some((method, version, headers)) = parse(text) else { return };
    if check_upgrade(&method, version, &headers).is_ok() {
        assert_eq!(method, Method::GET);
        assert_eq!(version, Version::HTTP_11);
        assert!(has_token(&headers, "upgrade", "websocket"), "{headers:?}");
        assert!(has_token(&headers, "connection", "upgrade"), "{headers:?}");
        assert!(only(&headers, "sec-websocket-key").is_some_and(|key| is_key(key.trim_ascii())), "{headers:?}");
        assert_eq!(only(&headers, "sec-websocket-version").map(<[u8]>::trim_ascii), Some(&b"13"[..]));
    }
});
