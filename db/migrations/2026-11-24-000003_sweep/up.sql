-- The task id of the message whose poll landed: a retried or redelivered
-- message recognises its own earlier poll by it.
ALTER TABLE `celerity_attempt` ADD COLUMN IF NOT EXISTS `task_id` varchar(255) DEFAULT NULL;

-- The sweeper's record: the last time a stranded schedule was re-enqueued,
-- so it is not re-enqueued again while that message is on its way.
CREATE TABLE IF NOT EXISTS `celerity_sweep` (
  `trace_id` varchar(33) NOT NULL,
  `invoke_count` int(11) NOT NULL,
  `swept_at` datetime(6) NOT NULL,
  `sweeps` int(11) NOT NULL,
  PRIMARY KEY (`trace_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
