-- Operator controls live in Celerity's own tables: schedule_schedule keeps
-- only states the framework knows, so its readers stay valid.

-- A row exists while an operator holds the schedule paused.
CREATE TABLE IF NOT EXISTS `celerity_pause` (
  `trace_id` varchar(33) NOT NULL,
  `paused_at` datetime(6) NOT NULL,
  `paused_by` varchar(255) NOT NULL,
  `reason` longtext NOT NULL,
  PRIMARY KEY (`trace_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

-- Messages that arrived for a paused schedule, kept until it is resumed
-- (released_at set, then published again and deleted) or stopped (deleted).
-- Keyed by task id: a redelivery of a message already parked parks nothing.
CREATE TABLE IF NOT EXISTS `celerity_parked` (
  `trace_id` varchar(33) NOT NULL,
  `task_id` varchar(255) NOT NULL,
  `task` varchar(255) NOT NULL,
  `queue` varchar(255) NOT NULL,
  `eta` datetime(6) DEFAULT NULL,
  `parked_at` datetime(6) NOT NULL,
  `released_at` datetime(6) DEFAULT NULL,
  `message` longtext NOT NULL,
  PRIMARY KEY (`trace_id`, `task_id`),
  KEY `celerity_parked_released` (`released_at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

-- Every operator action that changed something: who, when, why.
CREATE TABLE IF NOT EXISTS `celerity_action` (
  `id` bigint NOT NULL AUTO_INCREMENT,
  `trace_id` varchar(33) NOT NULL,
  `action` varchar(16) NOT NULL,
  `actor` varchar(255) NOT NULL,
  `at` datetime(6) NOT NULL,
  `reason` longtext NOT NULL,
  `from_status` varchar(16) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `celerity_action_trace` (`trace_id`, `at`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
