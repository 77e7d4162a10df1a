DROP TABLE IF EXISTS `celerity_sweep`;
ALTER TABLE `celerity_attempt` DROP COLUMN IF EXISTS `task_id`;
