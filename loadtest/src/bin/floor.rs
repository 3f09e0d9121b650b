//! The floor: the least a server can spend to fan an event out to WebSocket clients, for
//! measuring what mt-stream spends above it (`loadtest/bench.sh floor`).
//!
//! One blocking `write()` per delivery, straight from the thread that received the publish: no
//! event loop, no queues, no batching, no heartbeat, no history, no metrics. It speaks just
//! enough of mt-stream's protocol for `loadtest` to drive it exactly like the hub: the upgrade
//! on `/ws?channels=<one channel>` answered with the `subscribed` reply, `POST
//! /publish/<channel>` on the admin address framed as the hub frames an event, and `GET
//! /readyz`. A client that cannot take a write holds the publisher (that is the point: nothing
//! is queued), so at high rates it falls behind where the hub batches.
//!
//!   floor --listen 127.0.0.1:18080 --admin 127.0.0.1:19090

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use base64::Engine;
use clap::Parser;
use sha1::Digest;

#[derive(Parser)]
#[command(about = "The floor for mt-stream's fan-out: one blocking write() per delivery")]
struct Args {
    /// WebSocket listener (loopback only).
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: std::net::SocketAddr,
    /// Publishing and readiness listener (loopback only).
    #[arg(long, default_value = "127.0.0.1:19090")]
    admin: std::net::SocketAddr,
}

/// Subscribers per channel.
type Channels = Arc<Mutex<HashMap<String, Vec<TcpStream>>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for addr in [args.listen, args.admin] {
        if !addr.ip().is_loopback() {
            bail!("the floor only listens on loopback addresses; {addr} is not one");
        }
    }
    let channels: Channels = Arc::default();
    let public = TcpListener::bind(args.listen).with_context(|| format!("bind {}", args.listen))?;
    let admin = TcpListener::bind(args.admin).with_context(|| format!("bind {}", args.admin))?;
    let subscribers = Arc::clone(&channels);
    std::thread::spawn(move || {
        for stream in public.incoming().flatten() {
            // Handshakes one at a time on this thread: connecting is not what is measured.
            if let Err(error) = accept_client(stream, &subscribers) {
                eprintln!("floor: a client's upgrade failed: {error:#}");
            }
        }
    });
    let mut next_id = 0u64;
    let next_id = Arc::new(Mutex::new(move || {
        next_id += 1;
        next_id
    }));
    for stream in admin.incoming().flatten() {
        let channels = Arc::clone(&channels);
        let next_id = Arc::clone(&next_id);
        std::thread::spawn(move || {
            let _ = serve_admin(stream, &channels, &*next_id);
        });
    }
    Ok(())
}

/// Reads the upgrade request, answers 101 and the `subscribed` reply, and files the socket
/// under its channel.
fn accept_client(mut stream: TcpStream, channels: &Channels) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut key = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("closed during the handshake");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("sec-websocket-key") {
                key = Some(value.trim().to_owned());
            }
        }
    }
    let key = key.context("no Sec-WebSocket-Key")?;
    let channel = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once("channels="))
        .map(|(_, rest)| rest.split('&').next().unwrap_or_default().to_owned())
        .filter(|channel| !channel.is_empty())
        .context("no ?channels=")?;
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let reply = format!("{{\"op\":\"subscribed\",\"channels\":[\"{channel}\"]}}");
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(&text_frame(reply.as_bytes()));
    stream.write_all(&response)?;
    channels.lock().expect("not poisoned").entry(channel).or_default().push(stream);
    Ok(())
}

/// An unmasked text frame.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= u16::MAX as usize => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// Answers HTTP/1.1 requests on one admin connection until it closes: `GET /readyz`, and
/// `POST /publish/<channel>`, which writes the event to each subscriber, one blocking write
/// each, before it answers.
fn serve_admin(stream: TcpStream, channels: &Channels, next_id: &Mutex<impl FnMut() -> u64>) -> anyhow::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().context("Content-Length")?;
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let answer = match (method, path.strip_prefix("/publish/")) {
            ("POST", Some(channel)) => {
                let id = format!("{}-0", (next_id.lock().expect("not poisoned"))());
                let mut event = format!("{{\"channel\":\"{channel}\",\"id\":\"{id}\",\"data\":").into_bytes();
                event.extend_from_slice(&body);
                event.push(b'}');
                let frame = text_frame(&event);
                if let Some(subscribers) = channels.lock().expect("not poisoned").get_mut(channel) {
                    // The one write per delivery; a client that went away is dropped.
                    subscribers.retain_mut(|subscriber| subscriber.write_all(&frame).is_ok());
                }
                format!("{{\"id\":\"{id}\"}}")
            }
            _ if path == "/readyz" => "ready".to_owned(),
            _ => String::new(),
        };
        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}", answer.len());
        writer.write_all(response.as_bytes())?;
    }
}
