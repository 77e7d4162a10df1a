-- Who holds a schedule's `scheduling` lock: the callback task that took it
-- (its id and arguments), written in the same transaction and removed when
-- the poll or the holder releases the lock (one left on a final schedule
-- goes with the schedule). A redelivered copy of that callback (its worker
-- died or lost its connection mid-step) carries the same id and goes on;
-- and when every copy is gone (a retry the broker dropped), the sweeper
-- sends the callback again from this row. Before, the schedule waited in
-- CALLBACK for a lock no one would release.
CREATE TABLE IF NOT EXISTS `celerity_callback_lock` (
  `trace_id` varchar(33) NOT NULL,
  `task_id` varchar(255) NOT NULL,
  `callback_id` longtext NOT NULL,
  `callback_data` longtext NOT NULL,
  `taken_at` datetime(6) NOT NULL,
  PRIMARY KEY (`trace_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
