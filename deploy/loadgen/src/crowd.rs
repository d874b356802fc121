//! A crowd of simulated users: pairs sharing a conversation, user i on gateway i mod M (so a
//! pair spans two gateways when M > 1), all connected and joined before anyone sends.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::sio::Endpoint;
use crate::user::{self, Load, Outcome, Phase, Plan, Shared};
use crate::{rest, Common};

/// User ids of one run are `base + index`; bases are this far apart.
pub(crate) const USERS_PER_RUN: u64 = 1_000_000;

pub struct Crowd {
    pub metrics: Arc<Metrics>,
    pub users: usize,
    pub setup_time: Duration,
    /// Users that could not connect and join (only with `Setup::Tolerant`).
    pub setup_failures: usize,
    phase: watch::Sender<Phase>,
    tasks: Vec<JoinHandle<Outcome>>,
}

/// What a user that cannot connect and join means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// The run cannot be made (its partner's messages would be lost).
    Strict,
    /// Counted as an error (and in the error samples); the others go on (idle connections).
    Tolerant,
}

impl Crowd {
    /// Opens the conversations, connects every user and joins it to its conversation; user i
    /// sends as `loads[i]` says (one load per user). With `mark_read`, every user marks each
    /// message of its partner read as it arrives.
    pub async fn assemble(common: &Common, setup: Setup, loads: Vec<Load>, mark_read: bool) -> anyhow::Result<Self> {
        let started = Instant::now();
        let users = common.users;
        if users < 2 || !users.is_multiple_of(2) || users as u64 >= USERS_PER_RUN {
            bail!("--users must be even, at least 2 and below {USERS_PER_RUN}");
        }
        if loads.len() != users {
            bail!("{} loads for {users} users", loads.len());
        }
        let mut endpoints = Vec::new();
        for url in &common.url {
            endpoints.push(Arc::new(Endpoint::resolve(url).await?));
        }
        let base = common.user_base.unwrap_or_else(fresh_user_base);
        let user_id = |index: usize| base + index as u64;
        let pairs: Vec<(u64, u64)> = (0..users / 2).map(|p| (user_id(2 * p), user_id(2 * p + 1))).collect();
        let conversations = rest::open_conversations(&endpoints, &pairs, common.rest_parallel)
            .await
            .context("opening the conversations")?;

        let metrics = Arc::new(Metrics::new());
        let shared = Arc::new(Shared {
            metrics: Arc::clone(&metrics),
            run: base / USERS_PER_RUN,
            setup_timeout: common.setup_timeout,
            connecting: Semaphore::new(common.connect_concurrency.max(1)),
            mark_read,
        });
        let (phase, phase_rx) = watch::channel(Phase::Setup);
        let (ready_tx, mut ready) = mpsc::unbounded_channel();
        let tasks = loads
            .into_iter()
            .enumerate()
            .map(|(index, load)| {
                let partner = index ^ 1;
                let plan = Plan {
                    index,
                    user_id: user_id(index),
                    partner,
                    partner_id: user_id(partner),
                    conversation: conversations[index / 2],
                    endpoint: Arc::clone(&endpoints[index % endpoints.len()]),
                    bind: bind_address(&common.source_ip, index),
                };
                tokio::spawn(user::run(plan, load, Arc::clone(&shared), ready_tx.clone(), phase_rx.clone()))
            })
            .collect();
        drop(ready_tx);
        let mut crowd = Self { metrics, users, setup_time: Duration::ZERO, setup_failures: 0, phase, tasks };
        let mut failures = Vec::new();
        for _ in 0..users {
            match ready.recv().await {
                Some(Ok(())) => {}
                Some(Err(why)) => failures.push(why),
                None => failures.push("a user task ended before it was ready".to_owned()),
            }
        }
        crowd.setup_failures = failures.len();
        if setup == Setup::Tolerant {
            for why in failures {
                crowd.metrics.error(why);
            }
        } else if !failures.is_empty() {
            crowd.stop().await;
            let first: Vec<_> = failures.iter().take(5).cloned().collect();
            bail!("{} of {users} users could not connect and join, e.g.: {}", failures.len(), first.join("; "));
        }
        crowd.setup_time = started.elapsed();
        Ok(crowd)
    }

    /// Everyone starts sending at `start` and stops before `stop_sending`.
    pub fn start(&self, start: Instant, stop_sending: Instant) {
        self.phase.send_replace(Phase::Run { start, stop_sending });
    }

    /// Closes every socket and returns what each user saw, by index.
    pub async fn stop(&mut self) -> Vec<Outcome> {
        self.phase.send_replace(Phase::Stop);
        let mut outcomes = Vec::with_capacity(self.tasks.len());
        for task in self.tasks.drain(..) {
            match task.await {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => self.metrics.error(format!("a user task failed: {e}")),
            }
        }
        outcomes
    }
}

/// A base no recent run used, so that runs against the same database do not meet each other's
/// users or conversations.
pub(crate) fn fresh_user_base() -> u64 {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    USERS_PER_RUN * (1 + millis % 1_000_000)
}

fn bind_address(sources: &[IpAddr], index: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[index % sources.len()])
}
