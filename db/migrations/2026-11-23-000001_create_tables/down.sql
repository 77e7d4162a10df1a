-- schedule_schedule belongs to the framework and is never dropped here.
DROP TABLE IF EXISTS `celerity_attempt`;
DROP TABLE IF EXISTS `celerity_schedule_retry`;
