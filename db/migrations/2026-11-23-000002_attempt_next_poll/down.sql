ALTER TABLE `celerity_attempt` DROP COLUMN IF EXISTS `next_poll_at`;
