-- Daily tasks the workers send themselves (the framework's beat sent them):
-- the last UTC day each was sent for, so it is sent once a day whichever
-- worker gets there first, and not missed when every worker restarted.
CREATE TABLE IF NOT EXISTS `celerity_daily` (
  `task` varchar(191) NOT NULL,
  `last_day` date NOT NULL,
  `sent_at` datetime(6) DEFAULT NULL,
  `sent_by` varchar(255) DEFAULT NULL,
  PRIMARY KEY (`task`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;
