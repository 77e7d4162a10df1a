-- When the poll's next message was due: lets a redelivered poll re-publish a
-- next poll lost by a worker killed between its commit and its publish.
ALTER TABLE `celerity_attempt` ADD COLUMN IF NOT EXISTS `next_poll_at` datetime(6) DEFAULT NULL;
