//! Three hubs on one Redis deployment, three clients on each (client `j` of every hub takes the
//! channels `n` with `n % 3 == j`, so every channel has a client on every hub), and a publisher
//! going round the channels through the hubs; the test in between breaks things.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::common::{wait_for, HubProcess};
use crate::load::{self, Hubs, Published, Received};

pub const PREFIX: &str = "mt:";

/// A client's channels, what it saw so far, and its task.
type ClientRun = (Vec<String>, Arc<Mutex<Received>>, tokio::task::JoinHandle<()>);

pub struct Scenario {
    env: Vec<(String, String)>,
    pub hubs: Hubs,
    pub processes: Vec<HubProcess>,
    pub channels: Vec<String>,
    clients: Vec<ClientRun>,
    pub published: Arc<Mutex<Published>>,
    publisher: tokio::task::JoinHandle<()>,
    pause: watch::Sender<bool>,
    idle: watch::Receiver<bool>,
    stop_publisher: watch::Sender<bool>,
    stop_clients: watch::Sender<bool>,
}

impl Scenario {
    /// Starts three hubs on `redis_url`, nine clients, and the publisher (one publish every
    /// `every`), and waits until every client has had an event on each of its channels.
    pub async fn start(redis_url: &str, channels: Vec<String>, every: Duration) -> Self {
        let env: Vec<(String, String)> = vec![
            ("REDIS_URL".into(), redis_url.into()),
            ("MT_CHANNEL_PREFIX".into(), PREFIX.into()),
            ("MT_HISTORY_CHANNELS".into(), "*".into()),
            ("MT_HISTORY_MAX_EVENTS".into(), "100000".into()),
        ];
        let processes: Vec<HubProcess> = (0..3).map(|_| start_hub(&env)).collect();
        for hub in &processes {
            hub.wait_ready(200).await;
        }
        let hubs: Hubs = Arc::new(Mutex::new(processes.iter().map(|h| (h.public, h.admin)).collect()));
        let (stop_clients, stop_rx) = watch::channel(false);
        let mut clients = Vec::new();
        for slot in 0..3 {
            for j in 0..3 {
                let mine: Vec<String> =
                    channels.iter().enumerate().filter(|(n, _)| n % 3 == j).map(|(_, c)| c.clone()).collect();
                let seen = Arc::new(Mutex::new(Received::default()));
                let task =
                    load::spawn_client(Arc::clone(&hubs), slot, mine.clone(), Arc::clone(&seen), stop_rx.clone());
                clients.push((mine, seen, task));
            }
        }
        let (pause, pause_rx) = watch::channel(false);
        let (idle_tx, idle) = watch::channel(false);
        let published = Arc::new(Mutex::new(Published::default()));
        let (stop_publisher, stop_publisher_rx) = watch::channel(false);
        let publisher = load::spawn_publisher(
            Arc::clone(&hubs),
            channels.clone(),
            every,
            Arc::clone(&published),
            pause_rx,
            idle_tx,
            stop_publisher_rx,
        );
        let scenario = Self {
            env,
            hubs,
            processes,
            channels,
            clients,
            published,
            publisher,
            pause,
            idle,
            stop_publisher,
            stop_clients,
        };
        wait_for("every client to have an event on each of its channels", || async {
            scenario
                .clients
                .iter()
                .all(|(mine, seen, _)| {
                    let seen = seen.lock().unwrap();
                    mine.iter().all(|c| seen.events.get(c).is_some_and(|ids| !ids.is_empty()))
                })
                .then_some(())
        })
        .await;
        scenario
    }

    /// Waits until the hubs have acknowledged `more` publishes beyond now (at most 30 s; the
    /// panic shows the failures and the hubs' last log lines).
    pub async fn wait_published(&self, more: usize) {
        let target = self.published.lock().unwrap().acked.len() + more;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.published.lock().unwrap().acked.len() < target {
            if tokio::time::Instant::now() > deadline {
                let published = self.published.lock().unwrap();
                let logs: Vec<String> = self
                    .processes
                    .iter()
                    .map(|hub| {
                        let logs = hub.logs.lock().unwrap();
                        logs[logs.len().saturating_sub(15)..].join("\n")
                    })
                    .collect();
                panic!(
                    "timed out waiting for {more} more acknowledged publishes: {} acknowledged, {} failed (last: {:?}); hubs' logs:\n{}",
                    published.acked.len(),
                    published.failed,
                    published.last_failure,
                    logs.join("\n---\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Holds the publisher between two publishes while `during` runs, then lets it go on.
    pub async fn paused<T>(&mut self, during: impl FnOnce() -> T) -> T {
        load::pause(&self.pause, &mut self.idle).await;
        let result = during();
        self.pause.send(false).unwrap();
        result
    }

    /// Kills hub `slot` (SIGKILL) and starts a new one in its place; its clients reconnect to
    /// it and resume.
    pub async fn restart_hub(&mut self, slot: usize) {
        let replacement = start_hub(&self.env);
        drop(std::mem::replace(&mut self.processes[slot], replacement));
        self.processes[slot].wait_ready(200).await;
        self.hubs.lock().unwrap()[slot] = (self.processes[slot].public, self.processes[slot].admin);
    }

    /// Stops publishing, waits until every client has its channels' newest events (read from
    /// history through `history`), stops the clients and checks what each received; returns
    /// the number of events checked and the clients' reconnects.
    pub async fn finish(self, history: &fred::clients::Client) -> (usize, u32) {
        self.stop_publisher.send(true).unwrap();
        let _ = self.publisher.await;
        let watched: Vec<(Vec<String>, Arc<Mutex<Received>>)> =
            self.clients.iter().map(|(mine, seen, _)| (mine.clone(), Arc::clone(seen))).collect();
        let ids = Arc::new(Mutex::new(load::history_ids(history, PREFIX, &self.channels).await));
        wait_for("every client to catch up with history", || async {
            load::caught_up(&ids.lock().unwrap(), &watched).then_some(())
        })
        .await;
        let ids = load::history_ids(history, PREFIX, &self.channels).await;
        let clients: Vec<(Vec<String>, Received)> =
            watched.iter().map(|(mine, seen)| (mine.clone(), seen.lock().unwrap().clone())).collect();
        self.stop_clients.send(true).unwrap();
        for (_, _, task) in self.clients {
            let _ = task.await;
        }
        let published = self.published.lock().unwrap();
        let checked = load::verify(&ids, &clients, &published);
        let reconnects = clients.iter().map(|(_, r)| r.reconnects).sum();
        (checked, reconnects)
    }
}

fn start_hub(env: &[(String, String)]) -> HubProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    HubProcess::start(&env)
}
