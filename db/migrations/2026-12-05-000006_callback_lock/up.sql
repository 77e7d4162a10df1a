-- Who holds a schedule's `scheduling` lock: the task id of the callback
-- that took it, written in the same transaction. A redelivered copy of that
-- callback (its worker died or lost its connection mid-step) carries the
-- same id and goes on; before, it waited for a lock no one would release.
CREATE TABLE IF NOT EXISTS `celerity_callback_lock` (
  `trace_id` varchar(33) NOT NULL,
  `task_id` varchar(255) NOT NULL,
  `taken_at` datetime(6) NOT NULL,
  PRIMARY KEY (`trace_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
