-- The framework's table, exactly as its Django migrations create it on
-- MariaDB 10.11; skipped where Django already made it.
CREATE TABLE IF NOT EXISTS `schedule_schedule` (
  `trace_id` varchar(33) NOT NULL,
  `plugin_version` varchar(128) NOT NULL,
  `state` int(11) NOT NULL,
  `invoke_count` int(11) NOT NULL,
  `data` longtext NOT NULL,
  `created_at` datetime(6) NOT NULL,
  `finish_at` datetime(6) DEFAULT NULL,
  `scheduling` tinyint(1) NOT NULL,
  `err` longtext NOT NULL,
  PRIMARY KEY (`trace_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3 COLLATE=utf8mb3_general_ci;

-- Retry bookkeeping: a row exists while a schedule is backing off after
-- transient database errors (RETRYING), and is removed when a poll lands.
CREATE TABLE IF NOT EXISTS `celerity_schedule_retry` (
  `trace_id` varchar(33) NOT NULL,
  `retries` int(11) NOT NULL,
  `first_failure_at` datetime(6) NOT NULL,
  `last_failure_at` datetime(6) NOT NULL,
  `next_retry_at` datetime(6) DEFAULT NULL,
  `last_error_class` varchar(32) NOT NULL,
  `last_error` longtext NOT NULL,
  PRIMARY KEY (`trace_id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;

-- The attempt log: one row per poll that landed, keyed by the invoke_count
-- it produced, written in the same transaction as the poll's result.
CREATE TABLE IF NOT EXISTS `celerity_attempt` (
  `trace_id` varchar(33) NOT NULL,
  `attempt` int(11) NOT NULL,
  `started_at` datetime(6) NOT NULL,
  `ended_at` datetime(6) NOT NULL,
  `outcome` varchar(16) NOT NULL,
  `error` longtext NOT NULL,
  `hostname` varchar(255) NOT NULL,
  PRIMARY KEY (`trace_id`, `attempt`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
