//! `shmbus list`: every topic the daemon lets us see.

use std::io::Write;
use std::path::Path;

use clap::Args;

use crate::error::{is_broken_pipe, CliError};
use crate::util::{self, Table};

#[derive(Debug, Args)]
#[command(
    long_about = "List the topics: delivery mode, ring capacity (slots), slot size (the largest message), \
the shared memory the topic commits, payload type, attached publishers and subscribers, and \
messages published so far. A last line sums the topics and their memory."
)]
pub struct ListArgs {
    /// Print the daemon's topic list as JSON (an array of TopicInfo) instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(socket: &Path, args: &ListArgs) -> Result<(), CliError> {
    let bus = util::connect(socket)?;
    let topics = bus.list().map_err(|e| CliError::request(e, socket))?;
    let out = if args.json {
        let mut s = serde_json::to_string_pretty(&topics)
            .map_err(|e| CliError::failure(format!("encoding JSON: {e}")))?;
        s.push('\n');
        s
    } else if topics.is_empty() {
        format!("no topics on {}\n", socket.display())
    } else {
        let mut t = Table::new(&[
            ("TOPIC", false),
            ("MODE", false),
            ("CAPACITY", true),
            ("SLOT", true),
            ("MEMORY", true),
            ("TYPE", false),
            ("PUBS", true),
            ("SUBS", true),
            ("PUBLISHED", true),
        ]);
        for info in &topics {
            t.row(vec![
                info.name.clone(),
                info.spec.mode.to_string(),
                info.spec.capacity.to_string(),
                util::human_bytes(f64::from(info.spec.slot_size)),
                util::human_bytes(info.bytes as f64),
                util::type_label(&info.spec),
                format!("{}/{}", info.publishers, info.spec.max_publishers),
                format!("{}/{}", info.subscribers, info.spec.max_subscribers),
                info.published.to_string(),
            ]);
        }
        let total: u64 = topics.iter().map(|t| t.bytes).sum();
        let mut out = t.render();
        out.push_str(&format!(
            "{} topic{}, {} of shared memory committed\n",
            topics.len(),
            if topics.len() == 1 { "" } else { "s" },
            util::human_bytes(total as f64)
        ));
        out
    };
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if !is_broken_pipe(&e) => Err(CliError::io(e, "writing to standard output")),
        _ => Ok(()),
    }
}
