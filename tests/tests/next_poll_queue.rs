//! Celerity's next polls travel through its own queue, `celerity.schedule`
//! (no priority levels), and a rollback loses nothing: after the Celerity
//! workers stop, `celerity hand-back` moves what waits there to
//! `plugin_schedule` and routes countdowns still in the delay queues there
//! too, where the framework's own Celery worker (bk-plugin-framework 2.3.15,
//! with the plugin project's Python twin of the example plugin) finishes
//! every schedule.

use std::process::{Command, Stdio};
use std::time::Duration;

use broker_proto::{FieldTable, topology};
use celerity_db::State;
use celerity_tests::plugin_project::Project;
use celerity_tests::{
    celerity_bin, confirmed_channel, declare_framework_queue, example_data, example_worker, insert_schedule, python,
    rows, temp_dir, unique, wait_for_rows,
};
use lapin::options::QueueDeclareOptions;

async fn depth(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn next_polls_use_celeritys_queue_and_a_hand_back_lets_python_finish_them() {
    let project = Project::new(&python());
    let (vhost, db) = (&project.vhost, &project.db);
    let (_conn, ch) = confirmed_channel(vhost).await;
    declare_framework_queue(&ch, topology::SCHEDULE_QUEUE.name).await;
    let polls = 6;
    let ids: Vec<String> = (0..10).map(|_| unique("h").replace('-', "")).collect();
    let dir = temp_dir();
    let mut worker = example_worker(celerity_bin(), &vhost.url(), &db.url())
        .args(["--queues", "plugin_schedule"])
        .stderr(Stdio::from(std::fs::File::create(dir.join("celerity.log")).unwrap()))
        .spawn()
        .unwrap();
    for id in &ids {
        // Even schedules poll at once (next polls wait ready in celerity.schedule
        // when the worker stops), odd ones every second (they wait in the delay queues).
        let interval = if ids.iter().position(|x| x == id).unwrap() % 2 == 0 { 0 } else { 1 };
        insert_schedule(&db.url(), id, "1.0.0", State::Poll, &example_data(polls, interval));
        let m = celerity_tests::task_message(topology::SCHEDULE_TASK, &[("trace_id", id)]);
        celerity_tests::publish_task(&ch, "", topology::SCHEDULE_QUEUE.name, &m).await;
    }
    wait_for_rows(db, Duration::from_secs(30), |r| r.values().map(|r| r.invoke_count - 1).sum::<i32>() >= 15).await;
    // A graceful stop, as a rollback does it: polls in flight finish, the
    // rest go back unacked to the queue they came from.
    let _ = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    assert!(worker.wait().unwrap().success());
    let waiting = rows(db).values().filter(|r| r.state == State::Poll.code()).count();
    assert!(waiting > 0, "the stop must land mid-run");
    assert_eq!(depth(&ch, topology::SCHEDULE_QUEUE.name).await, 0, "next polls did not go to plugin_schedule");

    let out = Command::new(celerity_bin()).args(["hand-back", "--broker-url", &vhost.url()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(depth(&ch, topology::NEXT_POLL_QUEUE).await, 0, "hand-back left messages behind");

    let py = project.framework_worker(dir.join("python.log"));
    let done = wait_for_rows(db, Duration::from_secs(60), |r| {
        ids.iter().all(|id| r.get(id).is_some_and(|row| row.state == State::Success.code()))
    })
    .await;
    for id in &ids {
        assert_eq!(done[id].invoke_count, polls as i32 + 1, "{id}: {}", py.log());
        assert!(done[id].data.contains(&format!(r#""polls_done": {polls}"#)), "{id}: {}", done[id].data);
    }
    drop(py);
    let _ = std::fs::remove_dir_all(dir);
}
