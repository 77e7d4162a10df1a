DROP TABLE IF EXISTS `celerity_action`;
DROP TABLE IF EXISTS `celerity_parked`;
DROP TABLE IF EXISTS `celerity_pause`;
