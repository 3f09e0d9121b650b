//! The paced publisher: R events/s of S bytes for T seconds, round-robin over C channels, each
//! stamped with its channel index, per-channel sequence and send time (µs), through Redis
//! (`PUBLISH`, or the hub's history script) or the hub's `POST /publish/{channel}`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::now_micros;

/// Where events go.
#[derive(Clone)]
pub enum Target {
    /// `history`: publish with the hub's script (history kept) rather than a plain PUBLISH.
    Redis {
        url: String,
        prefix: String,
        history: bool,
    },
    Http {
        admin: SocketAddr,
        token: String,
    },
}

/// The hub's publish script, the one Monkeytown services use for channels with history.
const PUBLISH_SCRIPT: &str = include_str!("../../scripts/publish.lua");
/// History limits passed to the script (the hub's defaults).
const HISTORY_MAX_EVENTS: i64 = 1000;
const HISTORY_MAX_AGE_MS: i64 = 3_600_000;

/// Why the first failed publish failed (the status line of the hub's answer, or the error), so a
/// run in which every publish fails can say why.
pub static FIRST_ERROR: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn note_error(why: impl FnOnce() -> String) {
    if FIRST_ERROR.get().is_none() {
        let _ = FIRST_ERROR.set(why());
    }
}

/// Counts shared with the progress display.
#[derive(Default)]
pub struct Published {
    pub events: AtomicU64,
    pub errors: AtomicU64,
}

enum Sink {
    /// `sharded`: a Redis Cluster (SPUBLISH, and the script told so).
    Redis {
        client: Client,
        prefix: String,
        script: Option<Script>,
        sharded: bool,
    },
    Http {
        stream: TcpStream,
        admin: SocketAddr,
        token: String,
        response: Vec<u8>,
    },
}

impl Sink {
    async fn open(target: &Target) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Redis { url, prefix, history } => {
                // Bounded waits: a command to a primary that died fails after 1 s (counted as a
                // publish error) instead of holding the publisher until the cluster fails over.
                let client = Builder::from_config(Config::from_url(url)?)
                    .with_connection_config(|connection| {
                        connection.connection_timeout = Duration::from_secs(1);
                        connection.internal_command_timeout = Duration::from_secs(1);
                        connection.max_command_attempts = 2;
                    })
                    .with_performance_config(|performance| performance.default_command_timeout = Duration::from_secs(1))
                    .set_policy(ReconnectPolicy::new_constant(0, 200))
                    .build()?;
                client.init().await.context("connect to redis")?;
                let script = match history {
                    true => {
                        let script = Script::from_lua(PUBLISH_SCRIPT);
                        script.load(&client).await.context("load the publish script")?;
                        Some(script)
                    }
                    false => None,
                };
                let sharded = url.starts_with("redis-cluster://") || url.starts_with("rediss-cluster://");
                Sink::Redis { client, prefix: prefix.clone(), script, sharded }
            }
            Target::Http { admin, token } => Sink::Http {
                stream: TcpStream::connect(admin).await.context("connect to the hub's admin port")?,
                admin: *admin,
                token: token.clone(),
                response: Vec::with_capacity(512),
            },
        })
    }

    /// Publishes a batch; returns how many failed.
    async fn send(&mut self, batch: &[(String, String)]) -> u64 {
        match self {
            Sink::Redis { client, prefix, script, sharded } => {
                // One pipeline per batch: commands go out in order, in one write.
                let pipeline = client.pipeline();
                for (channel, body) in batch {
                    let key = format!("{prefix}{channel}");
                    let queued: Result<(), _> = match script {
                        Some(script) => {
                            // Pipelines have no EVALSHA method; the command is sent as is, to
                            // the key's slot.
                            let slot = ClusterHash::Custom(fred::util::redis_keyslot(key.as_bytes()));
                            let evalsha = CustomCommand::new_static("EVALSHA", slot, false);
                            let mut args = vec![
                                Value::from(script.sha1().to_string()),
                                Value::Integer(1),
                                Value::from(key),
                                Value::from(body.as_str()),
                                Value::Integer(HISTORY_MAX_EVENTS),
                                Value::Integer(HISTORY_MAX_AGE_MS),
                            ];
                            if *sharded {
                                args.push(Value::from("spublish"));
                            }
                            pipeline.custom(evalsha, args).await
                        }
                        None if *sharded => pipeline.spublish(key, body.as_str()).await,
                        None => pipeline.publish(key, body.as_str()).await,
                    };
                    if let Err(error) = queued {
                        note_error(|| format!("redis: {error}"));
                        return batch.len() as u64;
                    }
                }
                match pipeline.all::<Vec<Value>>().await {
                    Ok(_) => 0,
                    Err(error) => {
                        note_error(|| format!("redis: {error}"));
                        batch.len() as u64
                    }
                }
            }
            Sink::Http { stream, admin, token, response } => {
                let mut failed = 0;
                for (channel, body) in batch {
                    let request = format!(
                        "POST /publish/{channel} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let outcome = match stream.write_all(request.as_bytes()).await {
                        Ok(()) => read_response(stream, response).await,
                        Err(error) => Err(format!("writing to the hub's admin port: {error}")),
                    };
                    if let Err(why) = outcome {
                        note_error(|| why);
                        failed += 1;
                    }
                }
                failed
            }
        }
    }
}

/// Reads one small HTTP response (the hub answers publishes with short bodies): `Ok` for a 2xx,
/// else why not (the status line and body).
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    buffer.clear();
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("reading the hub's answer: {e}"))?;
        if n == 0 {
            return Err("the hub closed the admin connection".into());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]);
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                if head.starts_with("HTTP/1.1 2") {
                    return Ok(());
                }
                let status = head.lines().next().unwrap_or_default().to_owned();
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).trim().to_owned();
                return Err(format!("{status}: {body}"));
            }
        }
    }
}

/// Publishes at `rate` events/s for `duration`; returns the count per channel (sequences run
/// 1..=count). Every 1 ms it sends the events due, so bursts stay small.
pub async fn run(
    target: Target,
    channels: &[String],
    rate: f64,
    size: usize,
    duration: Duration,
    published: Arc<Published>,
) -> anyhow::Result<Vec<u64>> {
    let mut sink = Sink::open(&target).await?;
    let mut per_channel = vec![0u64; channels.len()];
    let padding = "x".repeat(size.saturating_sub(60));
    let start = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent: u64 = 0;
    let mut next_channel = 0usize;
    let mut batch: Vec<(String, String)> = Vec::new();
    loop {
        ticks.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate) as u64;
        batch.clear();
        // At most one second's worth at once, so a stalled sink never builds a huge burst.
        while sent < due && (batch.len() as f64) < rate.max(1.0) {
            let c = next_channel;
            next_channel = (next_channel + 1) % channels.len();
            per_channel[c] += 1;
            sent += 1;
            let body = format!("{{\"c\":{c},\"s\":{},\"t\":{},\"p\":\"{padding}\"}}", per_channel[c], now_micros());
            batch.push((channels[c].clone(), body));
        }
        if !batch.is_empty() {
            let failed = sink.send(&batch).await;
            published.events.fetch_add(batch.len() as u64 - failed, Ordering::Relaxed);
            published.errors.fetch_add(failed, Ordering::Relaxed);
        }
    }
    if let Sink::Redis { client, .. } = &sink {
        let _ = client.quit().await;
    }
    Ok(per_channel)
}
