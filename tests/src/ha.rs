//! The database-fault scenarios on a Galera cluster behind HAProxy, for
//! Celerity and for the framework's own worker: the workload, the faults,
//! and what each run is judged by. `tests/tests/galera.rs` runs them small;
//! `scripts/bench-galera` runs them at full size (`CELERITY_GALERA_FULL=1`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use celerity_db::State;
use diesel::{Connection, MysqlConnection, RunQueryDsl};

use crate::{TestDatabase, rows};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Schedules produced.
    pub schedules: usize,
    /// Polls each makes, one second apart.
    pub polls: i32,
    /// How long a timed fault (a cut-off node, a revoked grant) lasts.
    pub outage: Duration,
    /// After the fault, how long with no poll landing ends the run: what is
    /// open then is stranded (every retry countdown is shorter).
    pub idle: Duration,
}

impl Size {
    /// The issue's workload (300 schedules × 10 polls, a 30 s revoke) with
    /// `CELERITY_GALERA_FULL=1`; a small one for the suite otherwise.
    pub fn from_env() -> Size {
        match std::env::var("CELERITY_GALERA_FULL").as_deref() {
            Ok("1") => {
                Size { schedules: 300, polls: 10, outage: Duration::from_secs(30), idle: Duration::from_secs(60) }
            }
            _ => Size { schedules: 60, polls: 6, outage: Duration::from_secs(10), idle: Duration::from_secs(20) },
        }
    }

    /// Polls the whole run makes.
    pub fn total_polls(&self) -> i64 {
        self.schedules as i64 * i64::from(self.polls)
    }
}

/// Polls landed so far (the sum of `invoke_count - 1`), sampled every 100 ms
/// on a connection of its own, to measure stalls and recovery.
pub struct Progress {
    samples: Arc<Mutex<Vec<(Instant, i64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(diesel::QueryableByName)]
struct Landed {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

impl Progress {
    /// Samples the database at `url` (a node that stays up) until finished.
    pub fn start(url: String) -> Progress {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conn: Option<MysqlConnection> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        conn = MysqlConnection::establish(&url).ok();
                    }
                    let landed = conn.as_mut().and_then(|c| {
                        diesel::sql_query(
                            "SELECT CAST(COALESCE(SUM(invoke_count - 1), 0) AS SIGNED) AS n FROM schedule_schedule",
                        )
                        .get_result::<Landed>(c)
                        .ok()
                    });
                    match landed {
                        Some(l) => samples.lock().expect("samples").push((Instant::now(), l.n)),
                        None => conn = None,
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Progress { samples, stop, thread: Some(thread) }
    }

    /// How long since a poll last landed (since sampling began, if none has).
    pub fn idle_for(&self) -> Duration {
        let samples = self.samples.lock().expect("samples");
        let last_rise = samples.windows(2).rev().find(|w| w[1].1 > w[0].1).map(|w| w[1].0);
        last_rise.or(samples.first().map(|s| s.0)).map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// The last sample.
    pub fn landed(&self) -> i64 {
        self.samples.lock().expect("samples").last().map_or(0, |s| s.1)
    }

    /// Stops sampling; what was seen.
    pub fn finish(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Timeline(std::mem::take(&mut *self.samples.lock().expect("samples")))
    }
}

/// What [`Progress`] saw.
pub struct Timeline(Vec<(Instant, i64)>);

impl Timeline {
    /// The longest time no poll landed, between the first poll and the last.
    pub fn longest_stall(&self) -> Duration {
        self.longest_stall_up_to(i64::MAX)
    }

    /// The longest time no poll landed, between the first poll and the one
    /// that brought the count to `landed`: a batch published later (after a
    /// node's return, say) does not count the wait for it as a stall.
    pub fn longest_stall_up_to(&self, landed: i64) -> Duration {
        let rises: Vec<Instant> =
            self.0.windows(2).filter(|w| w[1].1 > w[0].1 && w[0].1 < landed).map(|w| w[1].0).collect();
        rises.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }

    /// From `at` until the first poll landed after it.
    pub fn resumed_after(&self, at: Instant) -> Option<Duration> {
        let before = self.0.iter().take_while(|s| s.0 <= at).last().map_or(0, |s| s.1);
        self.0.iter().find(|s| s.0 > at && s.1 > before).map(|s| s.0 - at)
    }
}

/// How a framework-worker run ended, read from the rows alone (the
/// framework keeps no attempt log): each schedule SUCCESS after exactly its
/// polls, FAIL, left open, or wrong.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RowReport {
    /// Schedules checked.
    pub schedules: usize,
    /// SUCCESS with `invoke_count` = polls + 1 and `polls_done` = polls.
    pub once: usize,
    /// Ending in FAIL.
    pub fail: usize,
    /// Still in POLL or CALLBACK.
    pub stranded: usize,
    /// SUCCESS with another count of polls.
    pub wrong: usize,
    /// A few FAIL errors, as the framework wrote them.
    pub errors: Vec<String>,
}

impl fmt::Display for RowReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schedules={} once={} FAIL={} stranded={} wrong={}",
            self.schedules, self.once, self.fail, self.stranded, self.wrong
        )?;
        for e in &self.errors {
            write!(f, "\n  FAIL err: {e}")?;
        }
        Ok(())
    }
}

/// Judges every schedule of `db` by its row.
pub fn row_report(db: &TestDatabase, polls: i32) -> RowReport {
    let rows = rows(db);
    let mut report = RowReport { schedules: rows.len(), ..RowReport::default() };
    for row in rows.values() {
        let (success, fail) = (State::Success.code(), State::Fail.code());
        match row.state {
            s if s == success
                && row.invoke_count == polls + 1
                && row.data.contains(&format!(r#""polls_done": {polls}"#)) =>
            {
                report.once += 1
            }
            s if s == success => report.wrong += 1,
            s if s == fail => {
                report.fail += 1;
                if report.errors.len() < 3 {
                    report.errors.push(row.err.chars().take(200).collect());
                }
            }
            _ => report.stranded += 1,
        }
    }
    report
}

/// Waits until no schedule at `url` is open (POLL or CALLBACK), or no poll
/// has landed for `idle` (what is still open then is stranded), or
/// `timeout` passes. A database that does not answer for a moment (a
/// failover) is asked again.
pub async fn wait_all_final(url: &str, progress: &Progress, idle: Duration, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout && progress.idle_for() < idle {
        let open = MysqlConnection::establish(url).ok().and_then(|mut c| {
            diesel::sql_query(format!(
                "SELECT COUNT(*) AS n FROM schedule_schedule WHERE state IN ({}, {})",
                State::Poll.code(),
                State::Callback.code()
            ))
            .get_result::<Landed>(&mut c)
            .ok()
        });
        if open.is_some_and(|o| o.n == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `progress` has seen `at_least` polls land, or panics.
pub async fn wait_for_landed(progress: &Progress, at_least: i64, timeout: Duration, context: impl Fn() -> String) {
    let start = Instant::now();
    while progress.landed() < at_least {
        assert!(start.elapsed() < timeout, "only {} polls landed in {timeout:?}:\n{}", progress.landed(), context());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
