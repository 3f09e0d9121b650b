//! Writes the committed seed corpus, fuzz/corpus/<target>/, from the protocol's own examples
//! (docs/protocol.md) and frames made by the test kit (independent of the hub's reader):
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! Files are (re)written by name; files that are not written here are left alone.

use std::fs;
use std::path::Path;

use mt_testkit::{client_frame, client_frame_masked, opcode};

/// A client_frames input: the first byte is the read size (0 = everything at once).
fn stream(read_size: u8, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut input = vec![read_size];
    for frame in frames {
        input.extend_from_slice(frame);
    }
    input
}

fn text(payload: &str) -> Vec<u8> {
    client_frame(opcode::TEXT, true, payload.as_bytes())
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    client_frame(opcode::CLOSE, true, &payload)
}

fn client_frames() -> Vec<(&'static str, Vec<u8>)> {
    let subscribe = r#"{"op":"subscribe","channels":["builds","agents"]}"#;
    // A 64-bit length that is not in its shortest form (the reader accepts it).
    let mut long_form = vec![0x81, 0x80 | 127];
    long_form.extend_from_slice(&3u64.to_be_bytes());
    long_form.extend_from_slice(&[1, 2, 3, 4]);
    long_form.extend_from_slice(&[b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
    // A declared length of 2^40: refused from the header.
    let mut huge = vec![0x81, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[0, 0, 0, 0]);
    let mut reserved = text("x");
    reserved[0] |= 0x40;
    vec![
        ("text", stream(0, &[text("hello")])),
        ("subscribe_bytewise", stream(1, &[text(subscribe)])),
        ("subscribe_then_close", stream(7, &[text(subscribe), close(1000, b"bye")])),
        ("binary", stream(0, &[client_frame(opcode::BINARY, true, &[0, 1, 2, 0xff])])),
        ("ping_pong", stream(0, &[client_frame(opcode::PING, true, b"p"), client_frame(opcode::PONG, true, b"")])),
        ("ping_125", stream(5, &[client_frame(opcode::PING, true, &[0xab; 125])])),
        ("close_empty", stream(0, &[client_frame(opcode::CLOSE, true, b"")])),
        ("close_code_reason", stream(0, &[close(4000, "done ✓".as_bytes())])),
        (
            "fragmented_with_ping",
            stream(
                3,
                &[
                    client_frame(opcode::TEXT, false, b"{\"op\":\"sub"),
                    client_frame(opcode::PING, true, b"mid"),
                    client_frame(opcode::CONTINUATION, false, b"scribe\",\"channels\""),
                    client_frame(opcode::CONTINUATION, true, b":[\"a\"]}"),
                ],
            ),
        ),
        ("text_16bit_length", stream(0, &[text(&"é".repeat(100))])),
        ("text_max", stream(0, &[text(&"a".repeat(4096))])),
        ("text_max_then_more", stream(200, &[text(&"b".repeat(4096)), text(&"c".repeat(3000)), text("end")])),
        (
            "fragments_to_max",
            stream(
                0,
                &[
                    client_frame(opcode::TEXT, false, &[b'a'; 3000]),
                    client_frame(opcode::CONTINUATION, true, &[b'a'; 1096]),
                ],
            ),
        ),
        ("other_mask", stream(0, &[client_frame_masked(opcode::TEXT, true, b"masked", [0, 0, 0, 0])])),
        ("long_form_length", stream(0, &[long_form])),
        // Each of these is refused.
        ("text_over_max", stream(0, &[text(&"a".repeat(4097))])),
        ("huge_length", stream(0, &[huge])),
        ("unmasked", vec![0, 0x81, 0x01, b'a']),
        ("reserved_bits", stream(0, &[reserved])),
        ("unknown_opcode", stream(0, &[client_frame(0x3, true, b"")])),
        ("fragmented_ping", stream(0, &[client_frame(opcode::PING, false, b"")])),
        ("ping_over_125", stream(0, &[client_frame(opcode::PING, true, &[0; 126])])),
        ("lone_continuation", stream(0, &[client_frame(opcode::CONTINUATION, true, b"x")])),
        ("text_inside_fragments", stream(0, &[client_frame(opcode::TEXT, false, b"a"), text("b")])),
        ("invalid_utf8", stream(0, &[client_frame(opcode::TEXT, true, &[0xff, 0xfe])])),
        ("close_one_byte", stream(0, &[client_frame(opcode::CLOSE, true, &[3])])),
        ("close_bad_reason", stream(0, &[close(1000, &[0xc3])])),
        ("truncated", stream(0, &[text("hello")[..4].to_vec()])),
    ]
}

fn client_message() -> Vec<(&'static str, Vec<u8>)> {
    let many: Vec<String> = (0..65).map(|i| format!("\"c{i}\"")).collect();
    let too_many = format!(r#"{{"op":"subscribe","channels":[{}]}}"#, many.join(","));
    let seeds: Vec<(&'static str, String)> = vec![
        ("subscribe", r#"{"op":"subscribe","channels":["builds","agents"]}"#.into()),
        ("subscribe_since", r#"{"op":"subscribe","channels":["builds","agents"],"since":"1732460000000-3"}"#.into()),
        (
            "subscribe_since_map",
            r#"{"op":"subscribe","channels":["builds","agents"],"since":{"builds":"1732460000000-3"}}"#.into(),
        ),
        ("subscribe_since_empty_map", r#"{"op":"subscribe","channels":["a.b:c-d_e9"],"since":{}}"#.into()),
        ("subscribe_duplicates", r#"{"op":"subscribe","channels":["a","b","a"]}"#.into()),
        ("subscribe_escaped", r#"{"op":"subscribe","channels":["\u0062uilds"]}"#.into()),
        ("unsubscribe", r#"{"op":"unsubscribe","channels":["agents"]}"#.into()),
        ("unsubscribe_since", r#"{"op":"unsubscribe","channels":["a"],"since":"1-1"}"#.into()),
        ("ping_op", r#"{"op":"ping"}"#.into()),
        ("unknown_op", r#"{"op":"publish","channels":["a"]}"#.into()),
        ("bad_channel", r#"{"op":"subscribe","channels":["bad name"]}"#.into()),
        ("empty_channels", r#"{"op":"subscribe","channels":[]}"#.into()),
        ("too_many_channels", too_many),
        ("since_not_an_id", r#"{"op":"subscribe","channels":["a"],"since":{"a":"x-1"}}"#.into()),
        ("since_stranger", r#"{"op":"subscribe","channels":["a"],"since":{"b":"1-1"}}"#.into()),
        ("since_number", r#"{"op":"subscribe","channels":["a"],"since":5}"#.into()),
        ("not_json", "{not json".into()),
        ("query", "channels=builds,agents&since=1732460000000-3".into()),
        ("query_encoded", "x=1&channels=a,b%2Cc&since=5-1".into()),
        ("query_bad_channel", "channels=a,b%20c+d".into()),
        ("query_bad_escape", "channels=a%zz&since=%4".into()),
        ("query_bad_since", "channels=a&since=yesterday".into()),
    ];
    seeds.into_iter().map(|(name, text)| (name, text.into_bytes())).collect()
}

fn event_id() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("zero", "0-0"),
        ("typical", "1700000000000-3"),
        ("max", "18446744073709551615-18446744073709551615"),
        ("ms_overflow", "18446744073709551616-0"),
        ("seq_overflow", "1-18446744073709551616"),
        ("leading_zeros", "007-00"),
        ("no_seq", "1732460000000"),
        ("empty_seq", "1-"),
        ("empty_ms", "-1"),
        ("three_parts", "1-2-3"),
        ("plus", "+1-2"),
        ("space", " 1-2"),
        ("letters", "x-1"),
        ("newline", "1732460000000-3\n"),
        ("unicode_digits", "١-٢"),
    ]
    .into_iter()
    .map(|(name, text)| (name, text.as_bytes().to_vec()))
    .collect()
}

fn main() -> std::io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in
        [("client_frames", client_frames()), ("client_message", client_message()), ("event_id", event_id())]
    {
        let dir = corpus.join(target);
        fs::create_dir_all(&dir)?;
        for (name, bytes) in &seeds {
            fs::write(dir.join(name), bytes)?;
        }
        println!("{}: {} seeds", dir.display(), seeds.len());
    }
    Ok(())
}
