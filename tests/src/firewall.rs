//! iptables chains of a test's own, jumped to from OUTPUT (loopback
//! traffic passes OUTPUT once), holding rules that drop TCP packets
//! silently, as a lost link does; removed with the chain.

use std::process::Command;

/// A chain, by name (at most 28 characters).
pub struct Chain(String);

impl Chain {
    /// The chain `name`; nothing is made until a rule is added.
    pub fn named(name: String) -> Chain {
        Chain(name)
    }

    /// Adds (or, with `add` false, deletes) a rule dropping TCP packets
    /// that match `matches` (`--sport`, `-s` and the like); the chain is
    /// made and hooked into OUTPUT on its first rule.
    pub fn drop_tcp(&self, matches: &[&str], add: bool) -> Result<(), String> {
        if add && iptables(&["-N", &self.0]).is_ok() {
            iptables(&["-I", "OUTPUT", "-j", &self.0])?;
        }
        let mut args = vec![if add { "-A" } else { "-D" }, self.0.as_str(), "-p", "tcp"];
        args.extend_from_slice(matches);
        args.extend_from_slice(&["-j", "DROP"]);
        iptables(&args)
    }

    /// Removes every rule, keeping the chain.
    pub fn flush(&self) -> Result<(), String> {
        iptables(&["-F", &self.0])
    }

    /// Unhooks and deletes the chain, if it was made.
    pub fn remove(&self) {
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.0]);
        let _ = iptables(&["-F", &self.0]);
        let _ = iptables(&["-X", &self.0]);
    }
}

/// `iptables -w ARGS`; its error output when it fails.
fn iptables(args: &[&str]) -> Result<(), String> {
    let out = Command::new("iptables").arg("-w").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}
