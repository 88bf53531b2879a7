//! Starts scheduled runs. A sync is due at its schedule's next time after its last run started
//! (read from the run history, so that it keeps time across restarts). A sync never runs twice
//! at once: one that is due while its previous run is going starts when that run ends.
//!
//! Several workers may share one state store: each finds the sync due, and the run's lock
//! decides. The worker that takes it checks, under the lock, that no run started since the
//! time it knew of; the others learn that run's start from the history and wait for the next.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::Server;

/// How often the scheduler looks at the clock.
const TICK: Duration = Duration::from_millis(250);

pub async fn run(server: Arc<Server>) {
    loop {
        tick(&server).await;
        tokio::time::sleep(TICK).await;
    }
}

/// Learns when a scheduled sync last started from its history, the first time it is needed (at
/// start, or when a sync gets a schedule), so that a restart or a new schedule keeps time.
async fn learn_last_start(server: &Server, name: &str) {
    if server
        .last_start
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(name)
    {
        return;
    }
    match server.engine().state.runs(Some(name), 1).await {
        Ok(runs) => {
            if let Some(last) = runs
                .first()
                .and_then(|r| DateTime::<Utc>::from_timestamp_millis(r.started_at))
            {
                server
                    .last_start
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(name.to_string())
                    .or_insert(last);
            }
        }
        Err(e) => tracing::warn!(sync = name, error = %e, "cannot read the run history"),
    }
}

async fn tick(server: &Arc<Server>) {
    let paused = server.engine().state.paused().await.unwrap_or_default();
    let now = Utc::now();
    let schedules = server.schedules();
    for (name, schedule) in &schedules {
        learn_last_start(server, name).await;
        if paused.contains(name)
            || server
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(name)
        {
            continue;
        }
        if next_after(server, name, schedule) <= now {
            let last = server
                .last_start
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .map(|t| t.timestamp_millis());
            if let Err(e) = server.start_scheduled(name, last) {
                tracing::debug!(sync = %name, error = %e.message, "scheduled run not started");
            }
        }
    }
}

/// When a sync is next due, if it has a schedule.
pub fn next_run(server: &Server, name: &str) -> Option<DateTime<Utc>> {
    let schedule = server.schedules().remove(name)?;
    Some(next_after(server, name, &schedule))
}

fn next_after(server: &Server, name: &str, schedule: &sallyport_config::Schedule) -> DateTime<Utc> {
    let last = server
        .last_start
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .copied();
    schedule.next_after(last, server.started)
}
