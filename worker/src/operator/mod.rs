//! Operator controls: pause, resume and stop schedules, from the command
//! line (`celerity pause|resume|stop`) and over HTTP (`/schedules/...` on
//! `--http-addr` when `--admin-token` is set), and the status view both
//! show. The decisions are the database crate's transition table
//! (`celerity_db::operator`); this module finds the schedules, records who
//! acted, and sends parked messages again on resume.

pub mod actor;
pub mod http;
pub mod printable;
pub mod report;
pub mod resend;
pub mod view;

use std::time::Duration;

use celerity_db::operator::{self, Action, Request, Selector};
use celerity_db::{Db, DbError, Parked};

use self::report::Report;
use crate::broker::BrokerAddr;
use crate::broker::connect::connect_publisher;
use crate::config::DEFAULT_ETA_WINDOW;

/// What the controls act through: the database, and the broker a resume
/// sends parked messages to.
#[derive(Clone)]
pub struct Controls {
    db: Db,
    broker: BrokerAddr,
    broker_wait: Duration,
}

impl Controls {
    /// Controls over `db`, resuming through the broker at `broker`.
    pub fn new(db: Db, broker: BrokerAddr, broker_wait: Duration) -> Controls {
        Controls { db, broker, broker_wait }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The trace ids of the open schedules `selector` picks.
    pub async fn select(&self, selector: Selector) -> Result<Vec<String>, DbError> {
        self.db.call(move |c| operator::select(c, &selector)).await
    }

    /// Applies `action` to each schedule, one transaction each, as `actor`
    /// for `reason`; a resume then sends the parked messages it released
    /// (one broker connection for all of them). A database error ends the
    /// run: what was done before it is reported with it.
    pub async fn act(
        &self,
        action: Action,
        trace_ids: &[String],
        actor: &str,
        reason: &str,
    ) -> Result<Vec<Report>, (Vec<Report>, DbError)> {
        let mut reports = Vec::with_capacity(trace_ids.len());
        let mut to_send: Vec<(usize, Vec<Parked>)> = Vec::new();
        for trace_id in trace_ids {
            let req = Request {
                trace_id: trace_id.clone(),
                actor: actor.to_owned(),
                reason: reason.to_owned(),
                at: self.db.now(),
            };
            match self.db.call(move |c| operator::apply(c, action, &req)).await {
                Ok((done, parked)) => {
                    if !parked.is_empty() {
                        to_send.push((reports.len(), parked));
                    }
                    tracing::info!(trace_id, action = action.name(), actor, reason, outcome = ?done, "operator control");
                    reports.push(Report::new(trace_id, action, done));
                }
                Err(e) => return Err((reports, e)),
            }
        }
        if !to_send.is_empty() {
            self.send_parked(&mut reports, to_send).await;
        }
        Ok(reports)
    }

    /// Sends the released parked messages again. What cannot be sent now
    /// stays released in the table; a worker's sweeper sends it.
    async fn send_parked(&self, reports: &mut [Report], to_send: Vec<(usize, Vec<Parked>)>) {
        let connected = connect_publisher(&self.broker, self.broker_wait, DEFAULT_ETA_WINDOW).await;
        let (conn, publisher) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                for (i, parked) in to_send {
                    reports[i].unsent = Some(format!("{} parked message(s) not sent yet ({e})", parked.len()));
                }
                return;
            }
        };
        for (i, parked) in to_send {
            let sent = resend::resend(&self.db, &publisher, &parked).await;
            reports[i].resent = sent.sent;
            reports[i].unsent = sent.problem();
        }
        let _ = conn.close(200, "operator control done".into()).await;
    }
}
