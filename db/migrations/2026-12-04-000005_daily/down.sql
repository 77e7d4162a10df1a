DROP TABLE IF EXISTS `celerity_daily`;
