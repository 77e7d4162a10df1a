DROP TABLE IF EXISTS `celerity_callback_lock`;
