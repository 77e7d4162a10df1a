pub(crate) mod golden_check;
