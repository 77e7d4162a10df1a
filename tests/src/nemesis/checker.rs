//! The nemesis run's checker: reads the whole history at the end of a run
//! and gives one verdict per check. Pure: the history is read elsewhere
//! (`history.rs`), so hand-written histories test every verdict.

use std::collections::BTreeMap;
use std::fmt;

use celerity_db::State;
use serde::Serialize;

/// How a schedule is planned to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum End {
    /// SUCCESS.
    Success,
    /// FAIL, raised by the plugin.
    Fail,
    /// Left in CALLBACK: its callback was lost on the way to the queue
    /// (decided by the checker, never planned).
    CallbackLost,
}

/// What one schedule of the workload should do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Planned {
    /// The state it ends in.
    pub end: End,
    /// `invoke_count` of its last step: every step from 1 (the producer's)
    /// to this one runs with its effect applied exactly once.
    pub last_step: i32,
    /// Seconds the plugin asks between polls (subtracted from its gaps).
    pub interval_s: f64,
    /// The producer's invoke answered a dispatch error: the framework then
    /// marks the row FAIL, but its message may have reached the queue
    /// anyway and the FAIL may not have landed (the database was the
    /// nemesis's too), so either FAIL after the first step or this plan holds.
    pub dispatch_unsure: bool,
}

impl Planned {
    /// The plan `row` is judged by.
    fn for_row(self, row: &Row) -> Planned {
        if self.dispatch_unsure && row.state == State::Fail.code() && row.invoke_count == 1 {
            Planned { end: End::Fail, last_step: 1, ..self }
        } else {
            self
        }
    }
}

/// A schedule's row at the end of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `state`, as stored.
    pub state: i32,
    /// `invoke_count`.
    pub invoke_count: i32,
    /// `finish_at` is set.
    pub finished: bool,
    /// `err`.
    pub err: String,
}

/// One execution of a plugin step, as the plugin's own ledger wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// The `invoke_count` the step ran with.
    pub invoke_count: i32,
    /// When it started, seconds since the epoch.
    pub at: f64,
    /// The process id of the worker that ran it (its host's parent), when
    /// the ledger says.
    pub worker: Option<u32>,
}

/// A fault as it happened: its kind and when it began and ended (epoch seconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// The fault's kind, as the timeline names it.
    pub kind: String,
    /// When it began.
    pub from: f64,
    /// When it ended (the same as `from` for an instant fault).
    pub to: f64,
    /// The worker process a worker fault hit; `None` for a fault on what
    /// every worker shares (a node, the database link, HAProxy).
    pub worker: Option<u32>,
    /// The RabbitMQ node a broker fault took out.
    pub node: Option<usize>,
}

impl Window {
    /// Whether this fault can have made `step` run again: the step ran on
    /// what the fault hit, from shortly before it to `FAULT_REACH_S` after.
    fn explains(&self, step: &Step) -> bool {
        let near = self.from - 5.0 <= step.at && step.at <= self.to + FAULT_REACH_S;
        let hit = match (self.worker, step.worker) {
            (Some(fault), Some(ran)) => fault == ran,
            _ => true,
        };
        near && hit
    }
}

/// Everything the checker reads.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// The workload as planned, by trace id.
    pub planned: BTreeMap<String, Planned>,
    /// The rows at the end, by trace id.
    pub rows: BTreeMap<String, Row>,
    /// Each schedule's attempt-log numbers, oldest first; `None` for a worker
    /// that keeps no attempt log (the framework's own).
    pub attempts: Option<BTreeMap<String, Vec<i32>>>,
    /// Each schedule's ledger, in the order written.
    pub ledger: BTreeMap<String, Vec<Step>>,
    /// Messages left in each queue (ready and unacknowledged).
    pub queues: BTreeMap<String, u64>,
    /// The faults injected.
    pub faults: Vec<Window>,
    /// Schedules the sweeper re-enqueued, and its rounds' re-enqueues in all.
    pub swept: (u64, u64),
    /// When the run's workload ended (epoch seconds): a stranded schedule's
    /// stall runs to here.
    pub ended_at: f64,
    /// When the framework's callback API answered that it sent each
    /// schedule's callback (epoch seconds).
    pub callbacks_sent: BTreeMap<String, f64>,
    /// The RabbitMQ node holding the classic `plugin_callback` queue.
    pub callback_node: Option<usize>,
}

/// How long after its node's fault ends a classic queue may still be out:
/// a paused or restarted node recovers its queues a moment after it is back.
pub const QUEUE_BACK_S: f64 = 30.0;

/// How long after a fault ends a re-executed step may still be its doing: a
/// message redelivered after the consumer timeout, a retry's countdown.
pub const FAULT_REACH_S: f64 = 120.0;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// The check's name.
    pub check: &'static str,
    /// Whether it passed; `None` for a figure that is reported, not judged.
    pub pass: Option<bool>,
    /// What it found, in a line.
    pub detail: String,
    /// The first few schedules that broke it, with why.
    pub examples: Vec<String>,
    /// Its figures, for the JSON file.
    pub figures: serde_json::Value,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "info",
        };
        write!(f, "{word:<4}  {:<12} {}", self.check, self.detail)?;
        for e in &self.examples {
            write!(f, "\n        {e}")?;
        }
        Ok(())
    }
}

/// Whether every judged check passed.
pub fn passed(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| v.pass != Some(false))
}

/// Every check over `h`, with `stall_limit_s` the longest stall that passes.
pub fn check(h: &History, stall_limit_s: f64) -> Vec<Verdict> {
    let lost = lost_callbacks(h);
    let mut judged = h.clone();
    for (id, _) in &lost {
        if let Some(p) = judged.planned.get_mut(id) {
            *p = Planned { end: End::CallbackLost, last_step: p.last_step - 1, ..*p };
        }
    }
    let h = &judged;
    vec![
        final_states(h),
        steps_applied(h),
        reexecuted(h),
        queues(h),
        stalls(h, stall_limit_s),
        callbacks(&lost),
        sweeper(h),
    ]
}

/// Schedules left waiting for a callback that the framework's callback API
/// said it sent while a RabbitMQ node was out (`plugin_callback`'s first,
/// else any: the one the API was connected to is not recorded), with that
/// fault's kind. The API publishes without confirms to that classic queue:
/// what RabbitMQ cannot route to the queue's node is dropped, and no worker
/// ever sees it. Any other schedule left in CALLBACK stays stranded.
fn lost_callbacks(h: &History) -> Vec<(String, String)> {
    let Some(node) = h.callback_node else { return Vec::new() };
    let mut lost = Vec::new();
    for (id, plan) in &h.planned {
        let (Some(row), Some(sent)) = (h.rows.get(id), h.callbacks_sent.get(id)) else { continue };
        if row.state != State::Callback.code() || row.invoke_count != plan.last_step - 1 {
            continue;
        }
        // A callback the plugin ran reached a worker: not lost, whatever
        // became of its row.
        let ran = h.ledger.get(id).is_some_and(|steps| steps.iter().any(|s| s.invoke_count >= plan.last_step));
        if ran {
            continue;
        }
        // Any node's fault: the API's connection starts on node 0 and, after
        // an outage, stays on whichever node it failed over to, whose
        // partition or loss drops what it publishes for the queue's node.
        let near = |w: &&Window| w.from - 2.0 <= *sent && *sent <= w.to + QUEUE_BACK_S;
        let out = h
            .faults
            .iter()
            .filter(near)
            .find(|w| w.node == Some(node))
            .or_else(|| h.faults.iter().filter(near).find(|w| w.node.is_some()));
        if let Some(w) = out {
            lost.push((id.clone(), w.kind.clone()));
        }
    }
    lost
}

/// The callbacks the framework's publish lost: reported, not judged (no
/// worker can run a callback that never reached a queue).
fn callbacks(lost: &[(String, String)]) -> Verdict {
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, kind) in lost {
        *by_kind.entry(kind).or_default() += 1;
    }
    Verdict {
        check: "callbacks",
        pass: None,
        detail: format!(
            "{} callbacks the framework's API said it sent while a RabbitMQ node was out (plugin_callback's, or the one the API was connected to) never reached a queue; those schedules wait in CALLBACK {by_kind:?}",
            lost.len()
        ),
        examples: lost.iter().take(EXAMPLES).map(|(id, kind)| format!("{id}: sent during {kind}")).collect(),
        figures: serde_json::json!({"lost": lost.len(), "by_fault": by_kind}),
    }
}

const EXAMPLES: usize = 5;

/// A check's verdict from what broke it.
fn judged(check: &'static str, broken: Vec<String>, of: usize, what: &str, figures: serde_json::Value) -> Verdict {
    let detail =
        if broken.is_empty() { format!("{of} of {of} {what}") } else { format!("{} of {of} not {what}", broken.len()) };
    Verdict {
        check,
        pass: Some(broken.is_empty()),
        detail,
        examples: broken.into_iter().take(EXAMPLES).collect(),
        figures,
    }
}

/// Every planned schedule is final, in its planned state.
fn final_states(h: &History) -> Verdict {
    let mut broken = Vec::new();
    let (mut lost, mut stranded, mut wrong) = (0, 0, 0);
    for (id, plan) in &h.planned {
        let Some(row) = h.rows.get(id) else {
            lost += 1;
            broken.push(format!("{id}: lost (no row)"));
            continue;
        };
        let plan = plan.for_row(row);
        let want = match plan.end {
            End::Success => State::Success.code(),
            End::Fail => State::Fail.code(),
            End::CallbackLost => continue,
        };
        if row.state == State::Poll.code() || row.state == State::Callback.code() {
            stranded += 1;
            broken.push(format!("{id}: stranded in state {} at invoke_count {}", row.state, row.invoke_count));
        } else if row.state != want || !row.finished {
            wrong += 1;
            broken.push(format!("{id}: ended in state {} (planned {want}), err {:?}", row.state, row.err));
        }
    }
    let figures = serde_json::json!({"schedules": h.planned.len(), "lost": lost, "stranded": stranded, "wrong": wrong});
    judged("final", broken, h.planned.len(), "final as planned", figures)
}

/// Each step's effect applied once: `invoke_count` is the planned last
/// step, the plugin's ledger has every step up to it and none past it, and
/// the attempt log (where the worker keeps one) has each worker step once.
fn steps_applied(h: &History) -> Verdict {
    let mut broken = Vec::new();
    let mut steps = 0i64;
    for (id, plan) in &h.planned {
        let Some(row) = h.rows.get(id) else { continue };
        let plan = plan.for_row(row);
        let ledger = h.ledger.get(id).map(Vec::as_slice).unwrap_or_default();
        let ran = |n: i32| ledger.iter().any(|s| s.invoke_count == n);
        let missing: Vec<i32> = (1..=plan.last_step).filter(|n| !ran(*n)).collect();
        let past: Vec<i32> = ledger.iter().map(|s| s.invoke_count).filter(|n| *n > plan.last_step).collect();
        let why = if row.invoke_count > plan.last_step {
            Some(format!("invoke_count {} past the last step {}", row.invoke_count, plan.last_step))
        } else if row.invoke_count < plan.last_step && row.state != State::Poll.code() {
            Some(format!("invoke_count {} short of the last step {}", row.invoke_count, plan.last_step))
        } else if !past.is_empty() {
            Some(format!("the plugin ran steps {past:?} past the last step {}", plan.last_step))
        } else if row.invoke_count == plan.last_step && !missing.is_empty() {
            Some(format!("the ledger lacks steps {missing:?}"))
        } else {
            h.attempts.as_ref().and_then(|log| attempt_log_disagrees(log.get(id), row.invoke_count))
        };
        steps += i64::from(row.invoke_count.min(plan.last_step));
        if let Some(why) = why {
            broken.push(format!("{id}: {why}"));
        }
    }
    let figures = serde_json::json!({"steps_applied": steps, "attempt_log": h.attempts.is_some()});
    let mut v = judged("polls", broken, h.planned.len(), "applied once each", figures);
    v.detail = format!("{} ({steps} steps applied)", v.detail);
    v
}

/// The attempt log's numbers must be 2..=invoke_count, each once, in order.
fn attempt_log_disagrees(numbers: Option<&Vec<i32>>, invoke_count: i32) -> Option<String> {
    let numbers = numbers.map(Vec::as_slice).unwrap_or_default();
    let want: Vec<i32> = (2..=invoke_count).collect();
    (numbers != want.as_slice()).then(|| format!("attempt log {numbers:?}, invoke_count {invoke_count}"))
}

/// Steps the plugin ran more than once, each explained by a fault in reach
/// of its earlier run (its effect was not committed when the fault hit): a
/// worker fault only explains steps its own worker ran.
fn reexecuted(h: &History) -> Verdict {
    let mut broken = Vec::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    for (id, ledger) in &h.ledger {
        let mut runs: BTreeMap<i32, Vec<&Step>> = BTreeMap::new();
        for s in ledger {
            runs.entry(s.invoke_count).or_default().push(s);
        }
        for (n, mut steps) in runs {
            steps.sort_by(|a, b| a.at.total_cmp(&b.at));
            for earlier in &steps[..steps.len().saturating_sub(1)] {
                total += 1;
                match h.faults.iter().find(|w| w.explains(earlier)) {
                    Some(w) => *by_kind.entry(w.kind.clone()).or_default() += 1,
                    None => broken.push(format!(
                        "{id}: step {n} ran again, its run at {:.3} (worker {:?}) near no fault on its worker",
                        earlier.at, earlier.worker
                    )),
                }
            }
        }
    }
    let figures = serde_json::json!({"reexecuted": total, "explained_by": by_kind});
    Verdict {
        check: "reexecuted",
        pass: Some(broken.is_empty()),
        detail: format!("{total} steps ran more than once, {} explained by a fault", total - broken.len() as u64),
        examples: broken.into_iter().take(EXAMPLES).collect(),
        figures,
    }
}

/// No message left in any queue.
fn queues(h: &History) -> Verdict {
    let left: Vec<String> = h.queues.iter().filter(|(_, n)| **n > 0).map(|(q, n)| format!("{q}: {n}")).collect();
    let figures = serde_json::json!({"left": h.queues.iter().filter(|(_, n)| **n > 0).collect::<BTreeMap<_, _>>()});
    Verdict {
        check: "queues",
        pass: Some(left.is_empty()),
        detail: if left.is_empty() {
            format!("{} queues, all empty", h.queues.len())
        } else {
            format!("{} of {} queues hold messages", left.len(), h.queues.len())
        },
        examples: left.into_iter().take(EXAMPLES).collect(),
        figures,
    }
}

/// The longest any schedule went without a step, less what its plugin asked to wait.
fn stalls(h: &History, limit_s: f64) -> Verdict {
    let mut worst: Option<(f64, String)> = None;
    for (id, plan) in &h.planned {
        let mut firsts: BTreeMap<i32, f64> = BTreeMap::new();
        for s in h.ledger.get(id).map(Vec::as_slice).unwrap_or_default() {
            let t = firsts.entry(s.invoke_count).or_insert(s.at);
            *t = t.min(s.at);
        }
        let times: Vec<f64> = firsts.values().copied().collect();
        let mut gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0] - plan.interval_s).collect();
        let open = h.rows.get(id).is_some_and(|r| r.state == State::Poll.code() || r.state == State::Callback.code())
            && plan.end != End::CallbackLost;
        if open && let Some(last) = times.last() {
            gaps.push(h.ended_at - last);
        }
        for g in gaps {
            if worst.as_ref().is_none_or(|(w, _)| g > *w) {
                worst = Some((g, id.clone()));
            }
        }
    }
    let (longest, who) = worst.unwrap_or((0.0, String::new()));
    let pass = longest <= limit_s;
    Verdict {
        check: "stall",
        pass: Some(pass),
        detail: format!("longest without progress {longest:.1} s ({who}); limit {limit_s:.0} s"),
        examples: Vec::new(),
        figures: serde_json::json!({"longest_s": longest, "schedule": who, "limit_s": limit_s}),
    }
}

/// What the sweeper had to recover: reported, not judged.
fn sweeper(h: &History) -> Verdict {
    Verdict {
        check: "sweeper",
        pass: None,
        detail: format!("{} schedules re-enqueued by the sweeper, {} times in all", h.swept.0, h.swept.1),
        examples: Vec::new(),
        figures: serde_json::json!({"schedules": h.swept.0, "sweeps": h.swept.1}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn success_row(invoke_count: i32) -> Row {
        Row { state: State::Success.code(), invoke_count, finished: true, err: String::new() }
    }

    fn steps(counts: &[i32], start: f64) -> Vec<Step> {
        counts
            .iter()
            .enumerate()
            .map(|(i, n)| Step { invoke_count: *n, at: start + i as f64, worker: Some(100) })
            .collect()
    }

    /// One schedule of three steps, done right.
    fn good() -> History {
        let mut h = History { ended_at: 100.0, attempts: Some(BTreeMap::new()), ..History::default() };
        h.planned
            .insert("a".into(), Planned { end: End::Success, last_step: 3, interval_s: 0.0, dispatch_unsure: false });
        h.rows.insert("a".into(), success_row(3));
        h.ledger.insert("a".into(), steps(&[1, 2, 3], 10.0));
        h.attempts.as_mut().unwrap().insert("a".into(), vec![2, 3]);
        h.queues.insert("plugin_schedule".into(), 0);
        h
    }

    /// The good run, but "a" left in `state` after step 2 of 3.
    fn left_at_step_2(state: State) -> History {
        let mut h = good();
        h.rows.insert("a".into(), Row { state: state.code(), invoke_count: 2, finished: false, err: String::new() });
        h.ledger.insert("a".into(), steps(&[1, 2], 10.0));
        h.attempts.as_mut().unwrap().insert("a".into(), vec![2]);
        h
    }

    fn failing(h: &History) -> Vec<&'static str> {
        check(h, 60.0).into_iter().filter(|v| v.pass == Some(false)).map(|v| v.check).collect()
    }

    #[test]
    fn a_run_done_right_passes_every_check() {
        let verdicts = check(&good(), 60.0);
        assert!(passed(&verdicts), "{verdicts:#?}");
        assert_eq!(verdicts.len(), 7);
    }

    #[test]
    fn a_lost_poll_is_reported() {
        // The row says three steps, but step 2 never ran in the plugin.
        let mut h = good();
        h.ledger.insert("a".into(), steps(&[1, 3], 10.0));
        assert_eq!(failing(&h), ["polls"]);
        // A schedule stopped short of its last step, final anyway.
        let mut h = good();
        h.rows.insert("a".into(), success_row(2));
        h.attempts.as_mut().unwrap().insert("a".into(), vec![2]);
        assert_eq!(failing(&h), ["polls"]);
    }

    #[test]
    fn a_poll_applied_twice_is_reported() {
        // invoke_count went one past the plan.
        let mut h = good();
        h.rows.insert("a".into(), success_row(4));
        h.attempts.as_mut().unwrap().insert("a".into(), vec![2, 3, 4]);
        h.ledger.insert("a".into(), steps(&[1, 2, 3, 4], 10.0));
        assert_eq!(failing(&h), ["polls"]);
        // The attempt log disagrees with the row.
        let mut h = good();
        h.attempts.as_mut().unwrap().insert("a".into(), vec![2, 2, 3]);
        assert_eq!(failing(&h), ["polls"]);
    }

    #[test]
    fn a_step_run_twice_is_explained_by_a_fault_or_reported() {
        let mut h = good();
        h.ledger.insert("a".into(), steps(&[1, 2, 2, 3], 10.0));
        assert_eq!(failing(&h), ["reexecuted"]);
        // A worker fault on another worker does not explain it; one on the
        // worker that ran it, or a fault on what all workers share, does.
        h.faults.push(Window { kind: "worker kill -9".into(), from: 11.5, to: 11.5, worker: Some(200), node: None });
        assert_eq!(failing(&h), ["reexecuted"]);
        h.faults.push(Window { kind: "worker kill -9".into(), from: 11.5, to: 11.5, worker: Some(100), node: None });
        let verdicts = check(&h, 60.0);
        assert!(passed(&verdicts), "{verdicts:#?}");
        let v = verdicts.iter().find(|v| v.check == "reexecuted").unwrap();
        assert_eq!(v.figures["reexecuted"], 1);
        assert_eq!(v.figures["explained_by"]["worker kill -9"], 1);
    }

    #[test]
    fn a_stranded_schedule_is_reported() {
        let h = left_at_step_2(State::Poll);
        // Stranded since 11 s, to the end at 100 s: a stall past the limit too.
        assert_eq!(failing(&h), ["final", "stall"]);
        let stall = check(&h, 60.0).into_iter().find(|v| v.check == "stall").unwrap();
        assert_eq!(stall.figures["longest_s"], 89.0);
    }

    #[test]
    fn a_callback_lost_while_a_rabbitmq_node_was_out_is_set_apart_and_any_other_is_stranded() {
        // "a" waits for its callback after step 2, sent at 12 s.
        let mut h = left_at_step_2(State::Callback);
        h.callbacks_sent.insert("a".into(), 12.0);
        h.callback_node = Some(0);
        // No RabbitMQ node out near then: stranded short of its last step.
        h.faults.push(Window { kind: "galera node kill -9".into(), from: 5.0, to: 20.0, worker: None, node: None });
        assert_eq!(failing(&h), ["final", "polls", "stall"]);
        // Another node partitioned then: the API's connection may have
        // failed over to it, and what it published there was dropped.
        h.faults.push(Window {
            kind: "rabbitmq node partition".into(),
            from: 11.5,
            to: 12.5,
            worker: None,
            node: Some(1),
        });
        let verdicts = check(&h, 60.0);
        assert!(passed(&verdicts), "{verdicts:#?}");
        h.faults.pop();
        // Its node out from 11 s to 13 s: the framework's publish lost it.
        h.faults.push(Window { kind: "rabbitmq node stop".into(), from: 11.0, to: 13.0, worker: None, node: Some(0) });
        let verdicts = check(&h, 60.0);
        assert!(passed(&verdicts), "{verdicts:#?}");
        let v = verdicts.iter().find(|v| v.check == "callbacks").unwrap();
        assert_eq!(v.figures["lost"], 1);
        assert_eq!(v.figures["by_fault"]["rabbitmq node stop"], 1);
        // The plugin ran its callback step, yet the row is still waiting:
        // the callback reached a worker, so the schedule is stranded.
        h.ledger.insert("a".into(), steps(&[1, 2, 3], 10.0));
        assert_eq!(failing(&h), ["final", "polls", "stall"]);
        h.ledger.insert("a".into(), steps(&[1, 2], 10.0));
        // Sent long after the node was back: stranded again.
        h.callbacks_sent.insert("a".into(), 13.0 + QUEUE_BACK_S + 1.0);
        assert_eq!(failing(&h), ["final", "polls", "stall"]);
    }

    #[test]
    fn a_schedule_in_the_wrong_state_is_reported() {
        let mut h = good();
        h.rows
            .insert("a".into(), Row { state: State::Fail.code(), invoke_count: 3, finished: true, err: "boom".into() });
        assert_eq!(failing(&h), ["final"]);
        let mut h = good();
        h.rows.remove("a");
        assert_eq!(failing(&h), ["final"]);
    }

    #[test]
    fn after_a_dispatch_error_either_fail_at_the_first_step_or_the_whole_plan_passes() {
        let unsure = Planned { end: End::Success, last_step: 3, interval_s: 0.0, dispatch_unsure: true };
        let mut h = good();
        h.planned.insert("a".into(), unsure);
        // The message got through and the producer's FAIL did not land.
        assert!(passed(&check(&h, 60.0)));
        // The FAIL landed and the message never ran.
        h.rows.insert("a".into(), Row { state: State::Fail.code(), invoke_count: 1, finished: true, err: "x".into() });
        h.ledger.insert("a".into(), steps(&[1], 10.0));
        h.attempts.as_mut().unwrap().insert("a".into(), vec![]);
        assert!(passed(&check(&h, 60.0)));
        // Neither: failed mid-way.
        h.rows.insert("a".into(), Row { state: State::Fail.code(), invoke_count: 2, finished: true, err: "x".into() });
        assert!(!passed(&check(&h, 60.0)));
    }

    #[test]
    fn a_message_left_in_a_queue_is_reported() {
        let mut h = good();
        h.queues.insert("celerity.schedule".into(), 2);
        assert_eq!(failing(&h), ["queues"]);
    }

    #[test]
    fn without_an_attempt_log_the_ledger_and_row_still_count() {
        let mut h = good();
        h.attempts = None;
        assert!(passed(&check(&h, 60.0)));
        h.rows.insert("a".into(), success_row(4));
        assert_eq!(failing(&h), ["polls"]);
    }

    #[test]
    fn a_stall_is_measured_less_the_planned_interval() {
        let mut h = good();
        h.planned
            .insert("a".into(), Planned { end: End::Success, last_step: 3, interval_s: 5.0, dispatch_unsure: false });
        h.ledger.insert(
            "a".into(),
            vec![
                Step { invoke_count: 1, at: 0.0, worker: None },
                Step { invoke_count: 2, at: 5.5, worker: None },
                Step { invoke_count: 3, at: 80.0, worker: None },
            ],
        );
        let stall = check(&h, 60.0).into_iter().find(|v| v.check == "stall").unwrap();
        assert_eq!(stall.pass, Some(false));
        assert_eq!(stall.figures["longest_s"], 69.5);
    }
}
