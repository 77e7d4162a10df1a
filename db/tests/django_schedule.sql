CREATE TABLE `schedule_schedule` (
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
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb3 COLLATE=utf8mb3_general_ci
